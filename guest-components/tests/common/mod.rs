#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
//! A loopback test double of Trustee's KBS, shared by the KBS tests.
//!
//! Trustee cannot run here, so this double stands in for it. It is written to Trustee's
//! published RCAR protocol (version 0.4.0; `shared/reference/confidential.md`, "KBS
//! protocol, RCAR") and to Trustee's error answers (kbs/src/error.rs at 78962cd4: 404 only
//! for an unknown plugin, 401 with an error `type` for everything else), independently of
//! the client's own helpers where it checks things: it answers 401 to any other version
//! string, hands out a `kbs-session-id` cookie and a nonce, requires the cookie back,
//! recomputes the report-data binding of the `sample` evidence
//! (`{"svn":"1","report_data":<b64>}`) from the nonce and the presented JWK with its own
//! sorted-key canonical JSON, and encrypts resources to that JWK as a flattened JWE
//! (`ECDH-ES+A256KW` + `A256GCM`) with the crate's `jwe::encrypt`.
//!
//! Faults, set through [`Kbs::with`]: answer 503 to the next N requests, delay every
//! answer or only `auth`, forget every session, reject every token, deny by policy,
//! plugin failures, 404s, 500s, tokens with an `exp` (checked by the double), tampered or
//! misaddressed JWEs. It serves requests on several threads, like a real server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cocoon_guest_components::jwe;
use cocoon_guest_components::kbs::protocol::FlattenedJwe;
use kbs_types::TeePubKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

pub const ERR_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

/// Worker threads of the double.
const WORKERS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mangle {
    None,
    /// Flip one ciphertext byte.
    Tamper,
    /// Encrypt to a key other than the one presented.
    WrongKey,
}

pub struct Session {
    pub nonce: String,
    pub attested_key: Option<TeePubKey>,
    /// `exp` of the token issued to this session.
    pub exp: Option<u64>,
}

pub struct State {
    pub version: String,
    pub sessions: HashMap<String, Session>,
    pub resources: HashMap<String, Vec<u8>>,
    pub next_id: u64,
    pub auths: u32,
    pub attests: u32,
    pub resource_gets: u32,
    /// Every request received, in order: `METHOD path`.
    pub log: Vec<String>,
    /// The cookies presented on resource requests.
    pub resource_cookies: BTreeSet<String>,
    /// Forget every session before the next resource request (session expiry on the
    /// KBS side): Trustee then answers `401 TokenNotFound`.
    pub expire_sessions: bool,
    /// The error type answered for an unknown or expired session.
    pub session_error: &'static str,
    /// Answer `401 TokenVerifierError` to every resource request, even on a fresh session.
    pub reject_tokens: bool,
    /// Resource paths denied by policy (`401 PolicyDeny`).
    pub deny: Vec<String>,
    /// Resource paths whose plugin fails without saying why (`401 PluginInternalError`).
    pub plugin_fail: Vec<String>,
    /// Resource paths answering `404 PluginNotFound`.
    pub http404: Vec<String>,
    /// Resource paths answering 500.
    pub broken: Vec<String>,
    /// Answer 503 to this many next requests.
    pub fail_next: u32,
    /// Delay of every answer.
    pub delay: Duration,
    /// Extra delay of `auth` answers.
    pub auth_delay: Duration,
    /// Lifetime of issued tokens (they carry `exp`; the double refuses expired ones with
    /// `401 TokenVerifierError`). `None`: the token has no readable `exp`.
    pub token_ttl: Option<u64>,
    pub mangle: Mangle,
    /// The `init-data` of the last `attest`.
    pub last_init_data: Value,
    /// Every token issued.
    pub tokens: Vec<String>,
}

pub struct Kbs {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub state: Arc<Mutex<State>>,
}

type Answer = (u16, Vec<(String, String)>, String);

impl Kbs {
    pub fn start() -> Self {
        Self::start_with_version("0.4.0")
    }

    pub fn start_with_version(version: &str) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
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
            log: vec![],
            resource_cookies: BTreeSet::new(),
            expire_sessions: false,
            session_error: "TokenNotFound",
            reject_tokens: false,
            deny: vec![],
            plugin_fail: vec![],
            http404: vec![],
            broken: vec![],
            fail_next: 0,
            delay: Duration::ZERO,
            auth_delay: Duration::ZERO,
            token_ttl: None,
            mangle: Mangle::None,
            last_init_data: Value::Null,
            tokens: vec![],
        }));
        for _ in 0..WORKERS {
            let server = server.clone();
            let shared = state.clone();
            thread::spawn(move || serve(&server, &shared));
        }
        Self {
            url: format!("http://{addr}"),
            addr,
            state,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds a resource.
    pub fn put(&self, path: &str, value: &[u8]) {
        self.with(|s| s.resources.insert(path.to_owned(), value.to_vec()));
    }
}

fn serve(server: &tiny_http::Server, shared: &Mutex<State>) {
    while let Ok(mut req) = server.recv() {
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
        let method = req.method().as_str().to_owned();
        let url = req.url().to_owned();
        let (delay, (status, headers, text)) = {
            let mut st = shared.lock().unwrap();
            st.log.push(format!("{method} {url}"));
            let delay = st.delay
                + if url == "/kbs/v0/auth" {
                    st.auth_delay
                } else {
                    Duration::ZERO
                };
            let answer = if st.fail_next > 0 {
                st.fail_next -= 1;
                if url.starts_with("/kbs/v0/resource/") {
                    st.resource_gets += 1;
                }
                (503, vec![], "upstream busy".to_owned())
            } else {
                handle(&mut st, &method, &url, cookie, &body)
            };
            (delay, answer)
        };
        // Outside the lock: a slow answer does not hold up the other workers.
        thread::sleep(delay);
        let mut resp = tiny_http::Response::from_string(text).with_status_code(status);
        for (k, v) in headers {
            resp.add_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap());
        }
        let _ = req.respond(resp);
    }
}

pub fn error(status: u16, kind: &str, detail: &str) -> Answer {
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

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT-shaped token (unsigned) with these claims.
pub fn jwt(claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(b"signature-bytes")
    )
}

fn handle(st: &mut State, method: &str, url: &str, cookie: Option<String>, body: &str) -> Answer {
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
                    exp: None,
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
            let ttl = st.token_ttl;
            let n = st.next_id;
            let Some(session) = cookie.and_then(|c| st.sessions.get_mut(&c)) else {
                return error(
                    401,
                    "AttestationError",
                    "RCAR handshake Attest failed: session not found",
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
            let token = match ttl {
                Some(ttl) => {
                    let exp = now_secs() + ttl;
                    session.exp = Some(exp);
                    jwt(&json!({"exp": exp, "jti": format!("token-secret-{n}")}))
                }
                None => "header.claims.signature".to_owned(),
            };
            st.last_init_data = req["init-data"].clone();
            st.attests += 1;
            st.tokens.push(token.clone());
            (200, vec![], json!({"token": token}).to_string())
        }
        ("GET", path) if path.starts_with("/kbs/v0/resource/") => {
            st.resource_gets += 1;
            if st.expire_sessions {
                st.expire_sessions = false;
                st.sessions.clear();
            }
            if let Some(c) = &cookie {
                st.resource_cookies.insert(c.clone());
            }
            let session = cookie.and_then(|c| st.sessions.get(&c));
            let Some((key, exp)) = session.and_then(|s| s.attested_key.clone().map(|k| (k, s.exp)))
            else {
                let kind = st.session_error;
                return error(401, kind, "Attestation Token not found");
            };
            if st.reject_tokens || exp.is_some_and(|exp| exp <= now_secs()) {
                return error(401, "TokenVerifierError", "Token Verifier error");
            }
            let name = &path["/kbs/v0/resource/".len()..];
            if st.deny.iter().any(|b| b == name) {
                return error(401, "PolicyDeny", "Access denied by policy");
            }
            if st.plugin_fail.iter().any(|b| b == name) {
                return error(401, "PluginInternalError", "Plugin internal error");
            }
            if st.http404.iter().any(|b| b == name) {
                return error(404, "PluginNotFound", "Plugin resource2 not found");
            }
            if st.broken.iter().any(|b| b == name) {
                return error(500, "RepositoryError", "backend storage unavailable");
            }
            let Some(plain) = st.resources.get(name) else {
                return error(
                    401,
                    "PluginInternalError",
                    &format!("resource not found: {name}"),
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
        _ => error(
            404,
            "InvalidRequestPath",
            &format!("Request path {url} is invalid"),
        ),
    }
}

/// A port on which nothing listens.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A listener that accepts connections and drops them at once; counts them.
pub fn slammer() -> (String, Arc<Mutex<u32>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    thread::spawn(move || {
        for stream in l.incoming() {
            *c.lock().unwrap() += 1;
            drop(stream);
        }
    });
    (url, count)
}
