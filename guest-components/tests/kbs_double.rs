#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The single-owner KBS client ([`KbsClient`]) against the test double of Trustee's KBS
//! (`common/mod.rs`) on 127.0.0.1.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cocoon_guest_components::{
    BoxError, Error, EvidenceProvider, JweError, KbsClient, KbsSettings, RetryPolicy,
};
use common::{Kbs, Mangle, ERR_PREFIX};
use kbs_types::Tee;
use serde_json::{json, Value};
use std::time::Duration;

/// Quick retries, so that the failure tests stay fast.
fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_attempts: 3,
        deadline: Duration::from_secs(10),
    }
}

fn settings(url: &str) -> KbsSettings {
    let mut s = KbsSettings::new(url);
    s.retry = fast_retries();
    s
}

fn client(kbs: &Kbs) -> KbsClient<cocoon_attester::Attester> {
    KbsClient::with_settings(settings(&kbs.url), cocoon_attester::Attester::sample()).unwrap()
}

#[test]
fn happy_path() {
    let kbs = Kbs::start();
    let mut c = client(&kbs);
    let secret = c.get_resource("kbs:///default/key/1").unwrap();
    assert_eq!(secret.as_slice(), b"key one");
    assert_eq!(c.token().unwrap(), "header.claims.signature");
    assert_eq!(kbs.with(|s| (s.auths, s.attests)), (1, 1));
    assert_eq!(kbs.with(|s| s.last_init_data.clone()), Value::Null);
}

#[test]
fn init_data_is_sent() {
    let kbs = Kbs::start();
    let mut c = client(&kbs).with_init_data("version = \"0.1.0\"\n");
    c.attest().unwrap();
    assert_eq!(
        kbs.with(|s| s.last_init_data.clone()),
        json!({"format": "toml", "body": "version = \"0.1.0\"\n"})
    );
    assert_eq!(
        c.get_resource("kbs://any.host/default/key/2")
            .unwrap()
            .as_slice(),
        b"key two"
    );
}

#[test]
fn session_reused_across_resources() {
    let kbs = Kbs::start();
    let mut c = client(&kbs);
    assert_eq!(
        c.get_resource("kbs:///default/key/1").unwrap().as_slice(),
        b"key one"
    );
    assert_eq!(
        c.get_resource("kbs:///default/key/2").unwrap().as_slice(),
        b"key two"
    );
    assert_eq!(
        c.get_resource("kbs:///default/key/1").unwrap().as_slice(),
        b"key one"
    );
    assert_eq!(
        kbs.with(|s| (s.auths, s.attests, s.resource_gets)),
        (1, 1, 3)
    );
    assert_eq!(c.handshakes(), 1);
}

#[test]
fn expired_session_rehandshakes_once() {
    let kbs = Kbs::start();
    let mut c = client(&kbs);
    c.get_resource("kbs:///default/key/1").unwrap();
    kbs.with(|s| s.expire_sessions = true);
    assert_eq!(
        c.get_resource("kbs:///default/key/2").unwrap().as_slice(),
        b"key two"
    );
    assert_eq!(
        kbs.with(|s| (s.auths, s.attests, s.resource_gets)),
        (2, 2, 3)
    );
    assert_eq!(c.handshakes(), 2);
}

#[test]
fn rejected_session_after_reauth_is_an_error() {
    let kbs = Kbs::start();
    let mut c = client(&kbs);
    c.get_resource("kbs:///default/key/1").unwrap();
    kbs.with(|s| s.reject_tokens = true);
    let err = c.get_resource("kbs:///default/key/1").unwrap_err();
    let Error::SessionRejected {
        url,
        status,
        kind,
        detail,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(url, &format!("{}/kbs/v0/resource/default/key/1", kbs.url));
    assert_eq!(*status, 401);
    assert_eq!(kind, &format!("{ERR_PREFIX}TokenVerifierError"));
    assert_eq!(detail, "Token Verifier error");
    assert_eq!(err.reason(), "unauthorized");
    assert_eq!(
        err.to_string(),
        format!(
            "KBS resource at {url} refused a freshly attested session (401): \
             {ERR_PREFIX}TokenVerifierError: Token Verifier error"
        )
    );
    // Exactly one re-handshake, no loop.
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (2, 3));
    assert_eq!(c.handshakes(), 2);

    // On a session made for this very request, a refused token is not retried at all.
    let mut fresh = client(&kbs);
    let err = fresh.get_resource("kbs:///default/key/1").unwrap_err();
    assert!(matches!(err, Error::SessionRejected { .. }), "{err:?}");
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (3, 4));
}

#[test]
fn not_found_names_the_path_and_does_not_reattest() {
    let kbs = Kbs::start();
    let mut c = client(&kbs);
    let err = c.get_resource("kbs:///default/key/missing").unwrap_err();
    let Error::NotFound {
        path,
        url,
        status,
        kind,
        detail,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(path, "default/key/missing");
    assert_eq!(
        url,
        &format!("{}/kbs/v0/resource/default/key/missing", kbs.url)
    );
    assert_eq!(*status, 401);
    assert_eq!(kind, &format!("{ERR_PREFIX}PluginInternalError"));
    assert_eq!(detail, "resource not found: default/key/missing");
    assert_eq!(err.reason(), "not_found");
    assert_eq!(err.step(), "resource");
    assert!(!err.to_string().contains("fresh attestation"), "{err}");
    assert!(
        err.to_string().contains("default/key/missing not found"),
        "{err}"
    );
    // Neither retried nor re-attested.
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (1, 1));
}

#[test]
fn server_error_is_retried_and_carries_type_and_detail() {
    let kbs = Kbs::start();
    kbs.with(|s| s.broken.push("default/key/1".into()));
    let err = client(&kbs)
        .get_resource("kbs:///default/key/1")
        .unwrap_err();
    let Error::Status {
        step,
        status,
        attempts,
        kind,
        detail,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*step, *status, *attempts), ("resource", 500, 3));
    assert_eq!(kind, &format!("{ERR_PREFIX}RepositoryError"));
    assert_eq!(detail, "backend storage unavailable");
    assert_eq!(err.reason(), "http_5xx");
    assert!(
        err.to_string().contains("answered 500 after 3 attempt(s)")
            && err.to_string().contains("backend storage unavailable"),
        "{err}"
    );
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (1, 3));
}

#[test]
fn kbs_down_names_the_url() {
    let port = common::closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut c =
        KbsClient::with_settings(settings(&url), cocoon_attester::Attester::sample()).unwrap();
    let err = c.get_resource("kbs:///default/key/1").unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable { step: "auth", attempts: 3, url: u, .. }
            if u == &format!("{url}/kbs/v0/auth")),
        "{err:?}"
    );
    assert_eq!((err.reason(), err.step()), ("unreachable", "connect"));
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to the KBS at {url}/kbs/v0/auth (auth) after 3 attempt(s): "
        )),
        "{err}"
    );
}

#[test]
fn tampered_jwe_gives_no_plaintext() {
    let kbs = Kbs::start();
    kbs.with(|s| s.mangle = Mangle::Tamper);
    let err = client(&kbs)
        .get_resource("kbs:///default/key/1")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Resource { path, source: JweError::Decrypt, .. } if path == "default/key/1"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("key one"));
    assert_eq!((err.reason(), err.step()), ("decrypt", "decrypt"));
}

#[test]
fn jwe_for_another_key_fails() {
    let kbs = Kbs::start();
    kbs.with(|s| s.mangle = Mangle::WrongKey);
    let err = client(&kbs)
        .get_resource("kbs:///default/key/1")
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Resource {
                source: JweError::KeyUnwrap,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_version_surfaces_the_401() {
    // A KBS speaking another protocol version refuses ours with 401 at `auth`.
    let kbs = Kbs::start_with_version("0.5.0");
    let err = client(&kbs)
        .get_resource("kbs:///default/key/1")
        .unwrap_err();
    let Error::Status {
        step,
        status,
        attempts,
        kind,
        detail,
        url,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*step, *status, *attempts), ("auth", 401, 1));
    assert_eq!(err.reason(), "unauthorized");
    assert!(url.ends_with("/kbs/v0/auth"));
    assert_eq!(kind, &format!("{ERR_PREFIX}ProtocolVersion"));
    assert!(detail.contains("\"0.4.0\""), "{detail}");
    assert_eq!(kbs.with(|s| s.auths), 0);
}

/// Evidence that does not bind the nonce and key is refused by the KBS at `attest`.
#[test]
fn unbound_evidence_is_refused() {
    struct Liar;
    impl EvidenceProvider for Liar {
        fn tee(&self) -> Tee {
            Tee::Sample
        }
        fn evidence(&self, _report_data: &[u8]) -> Result<String, BoxError> {
            Ok(json!({"svn": "1", "report_data": STANDARD.encode([0u8; 48])}).to_string())
        }
    }
    let kbs = Kbs::start();
    let err = KbsClient::new(&kbs.url, Liar)
        .unwrap()
        .attest()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Status {
                step: "attest",
                status: 401,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not bind"), "{err}");
    assert_eq!(err.reason(), "rejected");
}

#[test]
fn attester_errors_are_reported() {
    struct Broken;
    impl EvidenceProvider for Broken {
        fn tee(&self) -> Tee {
            Tee::Sample
        }
        fn evidence(&self, _report_data: &[u8]) -> Result<String, BoxError> {
            Err("no /dev/sev-guest".into())
        }
    }
    let kbs = Kbs::start();
    let err = KbsClient::new(&kbs.url, Broken)
        .unwrap()
        .attest()
        .unwrap_err();
    assert!(matches!(err, Error::Evidence(_)), "{err:?}");
    assert!(err.to_string().contains("no /dev/sev-guest"));
    assert_eq!((err.reason(), err.step()), ("evidence", "attest"));
}

#[test]
fn bad_urls() {
    for url in [
        "kbs.example:8080",
        "ftp://x",
        "http://",
        "http:///x",
        "http://h?x",
    ] {
        assert!(matches!(
            KbsClient::new(url, cocoon_attester::Attester::sample()),
            Err(Error::BadKbsUrl { .. })
        ));
    }
    let kbs = Kbs::start();
    let err = client(&kbs).get_resource("kbs:///only/two").unwrap_err();
    assert!(matches!(err, Error::BadResourceUri { .. }));
    assert_eq!(kbs.with(|s| s.auths), 0, "no request for a bad URI");
}
