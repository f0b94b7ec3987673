#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The KBS client against a test double of Trustee's KBS on 127.0.0.1.
//!
//! Trustee cannot run here, so this double stands in for it. It is written to Trustee's
//! published RCAR protocol (version 0.4.0; `shared/reference/confidential.md`, "KBS
//! protocol, RCAR"), independently of the client's own helpers where it checks things:
//! it answers 401 to any other version string, hands out a `kbs-session-id` cookie and a
//! nonce, requires the cookie back, recomputes the report-data binding of the `sample`
//! evidence (`{"svn":"1","report_data":<b64>}`) from the nonce and the presented JWK with
//! its own sorted-key canonical JSON, and encrypts resources to that JWK as a flattened
//! JWE (`ECDH-ES+A256KW` + `A256GCM`) with the crate's `jwe::encrypt`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cocoon_guest_components::kbs::protocol::FlattenedJwe;
use cocoon_guest_components::{jwe, BoxError, Error, EvidenceProvider, JweError, KbsClient};
use kbs_types::{Tee, TeePubKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

const ERR_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mangle {
    None,
    /// Flip one ciphertext byte.
    Tamper,
    /// Encrypt to a key other than the one presented.
    WrongKey,
}

struct Session {
    nonce: String,
    attested_key: Option<TeePubKey>,
}

struct State {
    version: String,
    sessions: HashMap<String, Session>,
    resources: HashMap<String, Vec<u8>>,
    next_id: u64,
    auths: u32,
    attests: u32,
    resource_gets: u32,
    /// Forget every session before the next resource request (token expiry).
    expire_sessions: bool,
    /// Answer 401 to every resource request, even on a fresh session.
    deny_resources: bool,
    mangle: Mangle,
    /// Resource paths that answer 500.
    broken: Vec<String>,
    /// The `init-data` of the last `attest`.
    last_init_data: Value,
}

struct Kbs {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Kbs {
    fn start() -> Self {
        Self::start_with_version("0.4.0")
    }

    fn start_with_version(version: &str) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let state = Arc::new(Mutex::new(State {
            version: version.to_owned(),
            sessions: HashMap::new(),
            resources: HashMap::from([
                ("default/key/1".to_owned(), b"key one".to_vec()),
                ("default/key/2".to_owned(), b"key two".to_vec()),
            ]),
            next_id: 0,
            auths: 0,
            attests: 0,
            resource_gets: 0,
            expire_sessions: false,
            deny_resources: false,
            mangle: Mangle::None,
            broken: vec![],
            last_init_data: Value::Null,
        }));
        let shared = state.clone();
        thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let cookie = req
                    .headers()
                    .iter()
                    .filter(|h| h.field.equiv("Cookie"))
                    .flat_map(|h| {
                        h.value
                            .as_str()
                            .split(';')
                            .map(|s| s.trim().to_owned())
                            .collect::<Vec<_>>()
                    })
                    .find_map(|c| c.strip_prefix("kbs-session-id=").map(str::to_owned));
                let (status, headers, text) = handle(
                    &mut shared.lock().unwrap(),
                    req.method().as_str(),
                    req.url(),
                    cookie,
                    &body,
                );
                let mut resp = tiny_http::Response::from_string(text).with_status_code(status);
                for (k, v) in headers {
                    resp.add_header(
                        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap(),
                    );
                }
                let _ = req.respond(resp);
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn error(status: u16, kind: &str, detail: &str) -> (u16, Vec<(String, String)>, String) {
    (
        status,
        vec![],
        json!({"type": format!("{ERR_PREFIX}{kind}"), "detail": detail}).to_string(),
    )
}

/// The binding as the KBS computes it: canonical JSON with keys sorted (BTreeMap), SHA-384.
fn expected_report_data(nonce: &str, jwk: &Value) -> Vec<u8> {
    let jwk: BTreeMap<String, Value> = serde_json::from_value(jwk.clone()).unwrap();
    let mut doc: BTreeMap<String, Value> = BTreeMap::new();
    doc.insert("additional-evidence".into(), json!(""));
    doc.insert("nonce".into(), json!(nonce));
    doc.insert("tee-pubkey".into(), serde_json::to_value(jwk).unwrap());
    // serde_json::Value maps may keep insertion order; re-sort explicitly.
    let text = canonical(&serde_json::to_value(doc).unwrap());
    Sha384::digest(text.as_bytes()).to_vec()
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            let inner: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => other.to_string(),
    }
}

fn handle(
    st: &mut State,
    method: &str,
    url: &str,
    cookie: Option<String>,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    match (method, url) {
        ("POST", "/kbs/v0/auth") => {
            let Ok(req) = serde_json::from_str::<Value>(body) else {
                return error(400, "InvalidRequest", "auth body is not JSON");
            };
            if req["version"] != json!(st.version) {
                return error(
                    401,
                    "ProtocolVersion",
                    &format!("expected version {}, got {}", st.version, req["version"]),
                );
            }
            if req["tee"] != json!("sample")
                || req["extra-params"]["supported-hash-algorithms"]
                    != json!(["sha256", "sha384", "sha512"])
            {
                return error(400, "InvalidRequest", &format!("bad auth request {req}"));
            }
            st.auths += 1;
            st.next_id += 1;
            let id = format!("00000000-0000-4000-8000-{:012}", st.next_id);
            let nonce = STANDARD.encode(format!("nonce-{:026}", st.next_id));
            st.sessions.insert(
                id.clone(),
                Session {
                    nonce: nonce.clone(),
                    attested_key: None,
                },
            );
            (
                200,
                vec![(
                    "Set-Cookie".into(),
                    format!("kbs-session-id={id}; Max-Age=300; Path=/; HttpOnly"),
                )],
                json!({"nonce": nonce, "extra-params": ""}).to_string(),
            )
        }
        ("POST", "/kbs/v0/attest") => {
            let Some(session) = cookie.and_then(|c| st.sessions.get_mut(&c)) else {
                return error(
                    401,
                    "UnAuthorized",
                    "attest without a known kbs-session-id cookie",
                );
            };
            let Ok(req) = serde_json::from_str::<Value>(body) else {
                return error(400, "InvalidRequest", "attest body is not JSON");
            };
            let runtime = &req["runtime-data"];
            let evidence = &req["tee-evidence"];
            if runtime["nonce"] != json!(session.nonce)
                || !req.as_object().unwrap().contains_key("init-data")
                || evidence["additional_evidence"] != json!("")
            {
                return error(400, "InvalidRequest", &format!("bad attest request {req}"));
            }
            let primary = &evidence["primary_evidence"];
            let Some(rd) = primary["report_data"]
                .as_str()
                .and_then(|s| STANDARD.decode(s).ok())
            else {
                return error(
                    401,
                    "AttestationFailed",
                    "sample evidence has no report_data",
                );
            };
            if primary["svn"] != json!("1") {
                return error(401, "AttestationFailed", "sample evidence svn");
            }
            if rd != expected_report_data(&session.nonce, &runtime["tee-pubkey"]) {
                return error(
                    401,
                    "AttestationFailed",
                    "report data does not bind nonce and tee-pubkey",
                );
            }
            let Ok(key) = serde_json::from_value::<TeePubKey>(runtime["tee-pubkey"].clone()) else {
                return error(400, "InvalidRequest", "tee-pubkey is not a JWK");
            };
            session.attested_key = Some(key);
            st.last_init_data = req["init-data"].clone();
            st.attests += 1;
            (
                200,
                vec![],
                json!({"token": "header.claims.signature"}).to_string(),
            )
        }
        ("GET", path) if path.starts_with("/kbs/v0/resource/") => {
            st.resource_gets += 1;
            if st.expire_sessions {
                st.expire_sessions = false;
                st.sessions.clear();
            }
            let key = cookie
                .and_then(|c| st.sessions.get(&c))
                .and_then(|s| s.attested_key.clone());
            let Some(key) = key.filter(|_| !st.deny_resources) else {
                return error(401, "UnAuthorized", "no attested session");
            };
            let name = &path["/kbs/v0/resource/".len()..];
            if st.broken.iter().any(|b| b == name) {
                return error(500, "RepositoryError", "backend storage unavailable");
            }
            let Some(plain) = st.resources.get(name) else {
                return error(
                    404,
                    "ResourceNotFound",
                    &format!("{name} not in the repository"),
                );
            };
            let to = match st.mangle {
                Mangle::WrongKey => cocoon_guest_components::TeeKey::generate().jwk().clone(),
                _ => key,
            };
            let mut jwe: FlattenedJwe = jwe::encrypt(&to, plain).unwrap();
            if st.mangle == Mangle::Tamper {
                let mut ct = URL_SAFE_NO_PAD.decode(&jwe.ciphertext).unwrap();
                ct[0] ^= 0x80;
                jwe.ciphertext = URL_SAFE_NO_PAD.encode(ct);
            }
            (200, vec![], serde_json::to_string(&jwe).unwrap())
        }
        _ => error(404, "NotFound", url),
    }
}

fn client(kbs: &Kbs) -> KbsClient<cocoon_attester::Attester> {
    KbsClient::new(&kbs.url, cocoon_attester::Attester::sample()).unwrap()
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
fn unauthorized_after_reauth_is_an_error() {
    let kbs = Kbs::start();
    let mut c = client(&kbs);
    c.get_resource("kbs:///default/key/1").unwrap();
    kbs.with(|s| s.deny_resources = true);
    let err = c.get_resource("kbs:///default/key/1").unwrap_err();
    assert!(
        matches!(err, Error::UnauthorizedAfterReauth { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("401") && msg.contains("/kbs/v0/resource/default/key/1"),
        "{msg}"
    );
    // Exactly one re-handshake, no loop.
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (2, 3));

    // On a session made for this very request, a 401 is not retried at all.
    let mut fresh = client(&kbs);
    let err = fresh.get_resource("kbs:///default/key/1").unwrap_err();
    assert!(
        matches!(err, Error::UnauthorizedAfterReauth { .. }),
        "{err:?}"
    );
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (3, 4));
}

#[test]
fn not_found_names_the_path() {
    let kbs = Kbs::start();
    let mut c = client(&kbs);
    let err = c.get_resource("kbs:///default/key/missing").unwrap_err();
    assert!(
        matches!(&err, Error::ResourceNotFound { path, .. } if path == "default/key/missing"),
        "{err:?}"
    );
    assert!(err.to_string().contains("default/key/missing"), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
}

#[test]
fn server_error_carries_type_and_detail() {
    let kbs = Kbs::start();
    kbs.with(|s| s.broken.push("default/key/1".into()));
    let err = client(&kbs)
        .get_resource("kbs:///default/key/1")
        .unwrap_err();
    let Error::Status {
        step,
        status,
        kind,
        detail,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*step, *status), ("resource", 500));
    assert_eq!(kind, &format!("{ERR_PREFIX}RepositoryError"));
    assert_eq!(detail, "backend storage unavailable");
    assert!(
        err.to_string().contains("backend storage unavailable"),
        "{err}"
    );
}

#[test]
fn kbs_down_names_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut c = KbsClient::new(&url, cocoon_attester::Attester::sample()).unwrap();
    let err = c.get_resource("kbs:///default/key/1").unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable { url: u, .. } if u == &format!("{url}/kbs/v0/auth")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
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
        matches!(&err, Error::Resource { path, source: JweError::Decrypt } if path == "default/key/1"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("key one"));
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
        kind,
        detail,
        url,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*step, *status), ("auth", 401));
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
