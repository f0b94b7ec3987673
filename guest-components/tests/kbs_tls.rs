#![allow(clippy::unwrap_used, clippy::expect_used)]
//! HTTPS to the KBS with an extra root CA: the test double behind a TLS front made here,
//! with a CA and a server certificate made in the test (rcgen).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cocoon_attester::Attester;
use cocoon_guest_components::{Error, KbsService, KbsSettings, RetryPolicy};
use common::Kbs;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// A TLS front on 127.0.0.1 relaying each connection to `backend` in plain HTTP.
fn tls_front(backend: SocketAddr, pki: &Pki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            thread::spawn(move || relay(stream, backend, config));
        }
    });
    addr
}

fn relay(client: TcpStream, backend: SocketAddr, config: Arc<rustls::ServerConfig>) {
    let tick = Some(Duration::from_millis(5));
    client.set_read_timeout(tick).unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), client);
    let mut plain = TcpStream::connect(backend).unwrap();
    plain.set_read_timeout(tick).unwrap();
    let idle = |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if plain.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        match plain.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn https_with_the_configured_ca() {
    let kbs = Kbs::start();
    let ours = pki();
    let front = tls_front(kbs.addr, &ours);

    for host in ["localhost", "127.0.0.1"] {
        let mut settings = KbsSettings::new(format!("https://{host}:{}", front.port()));
        settings.ca_cert_pem = Some(ours.ca_pem.clone().into_bytes());
        let svc = KbsService::new(settings, Attester::sample()).unwrap();
        assert_eq!(
            svc.get_resource("kbs:///default/key/1").unwrap().as_slice(),
            b"key one",
            "{host}"
        );
        assert_eq!(
            svc.get_resource("kbs:///default/key/2").unwrap().as_slice(),
            b"key two",
            "{host}"
        );
        assert_eq!(svc.handshakes(), 1, "{host}");
    }
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (2, 4));
}

#[test]
fn https_without_the_ca_is_refused_and_not_retried() {
    let kbs = Kbs::start();
    let ours = pki();
    let front = tls_front(kbs.addr, &ours);
    let url = format!("https://localhost:{}", front.port());
    let mut settings = KbsSettings::new(&url);
    settings.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let svc = KbsService::new(settings, Attester::sample()).unwrap();
    let err = svc.attest().unwrap_err();
    let Error::Unreachable {
        step,
        url: u,
        attempts,
        reason,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*step, *attempts), ("auth", 1));
    assert_eq!(u, &format!("{url}/kbs/v0/auth"));
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(err.reason(), "unreachable");
    assert_eq!(kbs.with(|s| s.log.len()), 0);

    // Another CA (same name, other key) does not help either.
    let mut settings = KbsSettings::new(&url);
    settings.ca_cert_pem = Some(pki().ca_pem.into_bytes());
    let svc = KbsService::new(settings, Attester::sample()).unwrap();
    let err = svc.attest().unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable { attempts: 1, reason, .. }
            if reason.contains("invalid peer certificate")),
        "{err}"
    );
    assert_eq!(kbs.with(|s| s.log.len()), 0);
}

#[test]
fn bad_ca_pem_is_refused_up_front() {
    let mut settings = KbsSettings::new("https://localhost:1");
    settings.ca_cert_pem =
        Some(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec());
    let err = KbsService::new(settings, Attester::sample()).unwrap_err();
    assert!(matches!(err, Error::BadCaCert { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid KBS CA certificate: no CERTIFICATE in the PEM text"
    );
    assert_eq!(err.reason(), "config");
}
