//! The KBS itself: RCAR sessions, the sample verifier, tokens, resources, faults, and the
//! test control API under `/test/`.
//!
//! Request handling follows Trustee's `api_server.rs` order. `auth`: parse the request
//! (`version`, `tee`, `extra-params`), check the version, make a 32-byte nonce and a
//! session with a `kbs-session-id` cookie. `attest`: cookie → parse → session (expired:
//! dropped) → an already attested session gets its old token back, nothing is verified
//! and its key stays → nonce must be the session's → evidence verified → token. A
//! resource: token from the session cookie, else an `Authorization: Bearer` token → token
//! verified (signature, `exp`) → policy → the file → JWE to the token's `tee-pubkey`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::canon::{additional_report_data, primary_report_data};
use crate::error::KbsError;
use crate::http::{Handler, Reply, Request, Response};
use crate::jwe;
use crate::policy::Policy;
use crate::protocol::{
    KBS_PREFIX, MAX_SESSIONS, NONCE_BYTES, SESSION_COOKIE, TEES, VERSION_REQ_TEXT,
};
use crate::token::TokenIssuer;

/// Which evidence `attest` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Trustee's sample verifier: `tee` `sample`, evidence `{"svn":"<string>",
    /// "report_data":"<base64 std>"}` whose report data equals the binding.
    Sample,
    /// TEST MODE, `--accept-evidence snp-test`: `tee` `snp`, Trustee's SNP evidence whose
    /// REPORT_DATA equals the binding (and HOST_DATA the init-data digest, given
    /// init-data). THE REPORT SIGNATURE IS NOT VERIFIED (see
    /// [`crate::snp`]): for the fake SEV-SNP devices of `tests/qemu/fake-tee/` only.
    SnpTestNoSignature,
}

pub struct Config {
    /// Resource `repo/type/tag` is the file `resources/repo/type/tag`.
    pub resources: PathBuf,
    pub policy: Policy,
    pub token_ttl: u64,
    pub token_leeway: u64,
    pub session_ttl: u64,
    pub evidence: Evidence,
    /// Log every KBS error answer, with its cause, to stderr.
    pub verbose: bool,
}

/// Counters served at `GET /test/stats`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// `POST /kbs/v0/auth` requests received (any outcome, faults included).
    pub auths: u64,
    /// `POST /kbs/v0/attest` requests received (any outcome, faults included).
    pub attests: u64,
    /// Completed handshakes: attestations that verified and issued a new token.
    pub handshakes: u64,
    /// `GET /kbs/v0/resource/...` requests received (any outcome, faults included).
    pub resource_gets: u64,
    /// Resources released (answered 200 with a JWE).
    pub releases: u64,
    /// Resource requests refused with `PolicyDeny` (policy file or `deny` fault).
    pub denials: u64,
}

/// An injected fault (`POST /test/fault`). Faults apply to `/kbs/v0/` only, never to
/// `/test/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Read the request, then close the connection without a byte of answer.
    Refuse,
    /// Answer every KBS request 500, Trustee-shaped (`PluginInternalError`,
    /// "injected fault: 500").
    Error500,
    /// Sleep this many milliseconds before handling each KBS request.
    Slow(u64),
    /// Every resource request is refused 401 `PolicyDeny` (after the token check).
    Deny,
    /// Flip a bit of each released resource JWE's ciphertext.
    Tamper,
    /// Encrypt released resources to a fresh key instead of the attested one.
    WrongKey,
}

impl Fault {
    fn to_json(self) -> Value {
        let (mode, ms) = match self {
            Fault::None => ("none", 0),
            Fault::Refuse => ("refuse", 0),
            Fault::Error500 => ("500", 0),
            Fault::Slow(ms) => ("slow", ms),
            Fault::Deny => ("deny", 0),
            Fault::Tamper => ("tamper", 0),
            Fault::WrongKey => ("wrong-key", 0),
        };
        json!({"mode": mode, "slow_ms": ms})
    }
}

const DEFAULT_SLOW_MS: u64 = 1000;
const MAX_SLOW_MS: u64 = 60_000;

enum Status {
    Authed { nonce: String },
    Attested { token: String },
}

struct Session {
    tee: String,
    /// Unix seconds.
    expires: u64,
    status: Status,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    stats: Stats,
    fault: Fault,
    last_attest: Value,
}

pub struct Kbs {
    cfg: Config,
    tokens: TokenIssuer,
    state: Mutex<State>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// A UUID v4 in its simple (32 hex digits) form, as Trustee makes session ids.
fn session_id() -> String {
    let mut b: [u8; 16] = random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// IMF-fixdate (`Expires=` of a cookie), from Unix seconds.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `Version::parse` + `VersionReq` `=0.4.0` of the `semver` crate, as far as the protocol
/// needs: `Err` if `v` is not semver, `Ok(false)` if it is another version.
fn version_matches(v: &str) -> Result<bool, ()> {
    let (v, build) = match v.split_once('+') {
        Some((v, b)) => (v, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let numeric = |s: &str| -> Result<u64, ()> {
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(());
        }
        s.parse().map_err(|_| ())
    };
    let ident_ok = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    let [ma, mi, pa] = parts.as_slice() else {
        return Err(());
    };
    let triple = (numeric(ma)?, numeric(mi)?, numeric(pa)?);
    if pre.is_some_and(|p| !ident_ok(p)) || build.is_some_and(|b| !ident_ok(b)) {
        return Err(());
    }
    // PROTOCOL_VERSION, as `=0.4.0` matches it (build metadata ignored, no pre-release).
    Ok(triple == (0, 4, 0) && pre.is_none())
}

/// A resource path Trustee's `ResourceDesc` accepts: three segments of
/// `[A-Za-z0-9_-][A-Za-z0-9_.-]*`.
fn valid_resource_path(path: &str) -> bool {
    let seg_ok = |s: &str| {
        let mut b = s.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
    };
    let segs: Vec<&str> = path.split('/').collect();
    segs.len() == 3 && segs.iter().all(|s| seg_ok(s))
}

// The request shapes of `kbs-types` 0.18 (no unknown-field denial, like the original).
#[derive(Deserialize)]
struct AuthRequest {
    version: String,
    tee: String,
    #[serde(rename = "extra-params")]
    #[allow(dead_code)]
    extra_params: Value,
}

#[derive(Deserialize, Serialize, Clone)]
struct InitData {
    format: String,
    body: String,
}

/// `TeePubKey`: internally tagged by `kty`; re-serialized, it keeps only these members,
/// which is what Trustee binds (a client's extra JWK members are not part of the hash).
#[derive(Deserialize, Serialize, Clone)]
#[serde(tag = "kty")]
enum TeePubKey {
    #[allow(clippy::upper_case_acronyms)]
    RSA { alg: String, n: String, e: String },
    EC {
        crv: String,
        alg: String,
        x: String,
        y: String,
    },
    #[allow(clippy::upper_case_acronyms)]
    AKP {
        alg: String,
        #[serde(rename = "pub")]
        public_key: String,
    },
}

#[derive(Deserialize)]
struct RuntimeData {
    nonce: String,
    #[serde(rename = "tee-pubkey")]
    tee_pubkey: TeePubKey,
}

#[derive(Deserialize)]
struct CompositeEvidence {
    primary_evidence: Value,
    additional_evidence: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Attestation {
    init_data: Option<InitData>,
    runtime_data: RuntimeData,
    tee_evidence: CompositeEvidence,
}

#[derive(Deserialize)]
struct SampleEvidence {
    svn: String,
    #[serde(default)]
    report_data: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    mode: String,
    #[serde(default)]
    slow_ms: Option<u64>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn error(e: KbsError) -> Response {
    Response::json(e.status(), e.body())
}

fn admin_error(status: u16, why: &str) -> Reply {
    Reply::Respond(Response::json(status, json!({ "error": why }).to_string()))
}

impl Kbs {
    pub fn new(cfg: Config) -> Self {
        let tokens = TokenIssuer::new(cfg.token_ttl, cfg.token_leeway);
        Self {
            cfg,
            tokens,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take the double down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cookie(&self, id: &str, expires: u64) -> String {
        format!("{SESSION_COOKIE}={id}; Expires={}", http_date(expires))
    }

    fn auth(&self, body: &[u8]) -> Result<Response, KbsError> {
        let req: AuthRequest = serde_json::from_slice(body)
            .ok()
            .filter(|r: &AuthRequest| TEES.contains(&r.tee.as_str()))
            .ok_or_else(|| KbsError::AuthFailed("deserialize Request".into()))?;
        match version_matches(&req.version) {
            Err(()) => return Err(KbsError::AuthFailed("failed to parse KBS version".into())),
            Ok(false) => {
                return Err(KbsError::AuthFailed(format!(
                    "KBS Client Protocol Version Mismatch: expect {VERSION_REQ_TEXT} while the request is {}",
                    req.version
                )))
            }
            Ok(true) => {}
        }
        let nonce = STANDARD.encode(random::<NONCE_BYTES>());
        let id = session_id();
        let now = now();
        let expires = now.saturating_add(self.cfg.session_ttl);
        let mut st = self.lock();
        st.sessions.retain(|_, s| s.expires >= now);
        while st.sessions.len() >= MAX_SESSIONS {
            let oldest = st
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => st.sessions.remove(&k),
                None => break,
            };
        }
        st.sessions.insert(
            id.clone(),
            Session {
                tee: req.tee,
                expires,
                status: Status::Authed {
                    nonce: nonce.clone(),
                },
            },
        );
        Ok(
            Response::json(200, json!({"nonce": nonce, "extra-params": ""}).to_string())
                .with_header("Set-Cookie", self.cookie(&id, expires)),
        )
    }

    fn attest(&self, req: &Request) -> Result<Response, KbsError> {
        let fail = |why: &str| KbsError::AttestFailed(why.to_owned());
        let id = req
            .cookie(SESSION_COOKIE)
            .ok_or_else(|| fail("cookie not found"))?;
        let att: Attestation = serde_json::from_slice(&req.body)
            .map_err(|e| fail(&format!("deserialize Attestation: {e}")))?;
        let now = now();
        let mut st = self.lock();
        let Some(session) = st.sessions.get(&id) else {
            return Err(fail("session not found"));
        };
        if session.expires < now {
            st.sessions.remove(&id);
            return Err(fail("session expired"));
        }
        let expires = session.expires;
        let nonce = match &session.status {
            // Trustee: "already attested": the old token again, nothing verified.
            Status::Attested { token } => {
                return Ok(Response::json(200, json!({ "token": token }).to_string())
                    .with_header("Set-Cookie", self.cookie(&id, expires)));
            }
            Status::Authed { nonce } => nonce.clone(),
        };
        if att.runtime_data.nonce != nonce {
            return Err(fail("the nonce is not this session's"));
        }
        let tee = session.tee.clone();
        let pubkey = serde_json::to_value(&att.runtime_data.tee_pubkey)
            .map_err(|e| fail(&format!("tee-pubkey: {e}")))?;
        let evidence = self
            .verify(&tee, &att, &nonce, &pubkey)
            .map_err(|e| fail(&format!("verify TEE evidence failed: {e}")))?;
        let mut claims = json!({
            "tee": tee,
            "tee-pubkey": pubkey,
            "evidence": evidence,
        });
        if let (Some(init), Some(m)) = (&att.init_data, claims.as_object_mut()) {
            m.insert("init-data".into(), json!(init));
        }
        let token = self.tokens.issue(claims, now);
        if let Some(s) = st.sessions.get_mut(&id) {
            s.status = Status::Attested {
                token: token.clone(),
            };
        }
        st.stats.handshakes += 1;
        st.last_attest = json!({
            "session": id,
            "tee": tee,
            "init-data": att.init_data,
            "tee-pubkey": pubkey,
            "additional_evidence": att.tee_evidence.additional_evidence,
        });
        Ok(Response::json(200, json!({ "token": token }).to_string())
            .with_header("Set-Cookie", self.cookie(&id, expires)))
    }

    /// The evidence check; `Ok(claims)` (the token's `evidence` member) if it verifies.
    fn verify(
        &self,
        tee: &str,
        att: &Attestation,
        nonce: &str,
        pubkey: &Value,
    ) -> Result<Value, String> {
        let additional = &att.tee_evidence.additional_evidence;
        if self.cfg.evidence == Evidence::SnpTestNoSignature {
            if tee != "snp" {
                return Err(format!(
                    "no verifier for tee {tee:?} (--accept-evidence snp-test)"
                ));
            }
            if !additional.is_empty() {
                return Err(
                    "no verifier for additional evidence (--accept-evidence snp-test)".into(),
                );
            }
            let init_digest = match &att.init_data {
                Some(init) => Some(crate::snp::init_data_digest(&init.format, &init.body)?),
                None => None,
            };
            // TEST MODE: the bindings are checked, the signature is not.
            return crate::snp::verify_test_mode(
                &att.tee_evidence.primary_evidence,
                &primary_report_data(nonce, pubkey, additional),
                init_digest.as_deref(),
            );
        }
        let check = |evidence: &Value, want: &[u8]| -> Result<String, String> {
            let ev: SampleEvidence = serde_json::from_value(evidence.clone())
                .map_err(|e| format!("sample evidence {evidence}: {e}"))?;
            let got = STANDARD
                .decode(&ev.report_data)
                .map_err(|e| format!("report_data is not base64: {e}"))?;
            if got != want {
                return Err(format!(
                    "REPORT_DATA is different from that in Sample Quote (got {}, want {})",
                    hex(&got),
                    hex(want)
                ));
            }
            Ok(ev.svn)
        };
        if tee != "sample" {
            return Err(format!(
                "no verifier for tee {tee:?} (--accept-evidence sample)"
            ));
        }
        let svn = check(
            &att.tee_evidence.primary_evidence,
            &primary_report_data(nonce, pubkey, additional),
        )?;
        if !additional.is_empty() {
            let more: HashMap<String, Value> = serde_json::from_str(additional)
                .map_err(|e| format!("additional_evidence: {e}"))?;
            for (tee, ev) in &more {
                if tee != "sample" {
                    return Err(format!("no verifier for additional evidence of {tee:?}"));
                }
                check(ev, &additional_report_data(nonce, pubkey))?;
            }
        }
        Ok(json!({ "svn": svn }))
    }

    /// The token of the request: its attested, unexpired session, else a Bearer token.
    fn request_token(&self, req: &Request, st: &mut State, now: u64) -> Option<String> {
        if let Some(id) = req.cookie(SESSION_COOKIE) {
            match st.sessions.get(&id) {
                Some(s) if s.expires < now => {
                    st.sessions.remove(&id);
                }
                Some(Session {
                    status: Status::Attested { token },
                    ..
                }) => return Some(token.clone()),
                _ => {}
            }
        }
        req.header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
    }

    fn resource(&self, req: &Request, rest: &str) -> Result<Response, KbsError> {
        if req.method == "POST" || req.method == "DELETE" {
            return Err(KbsError::AdminAuthInitialization);
        }
        let now = now();
        let mut st = self.lock();
        let token = self.request_token(req, &mut st, now).ok_or_else(|| {
            KbsError::TokenNotFound("no attested session cookie, no bearer token".into())
        })?;
        let claims = self
            .tokens
            .verify(&token, now)
            .map_err(|e| KbsError::TokenVerifierError(e.to_string()))?;
        if st.fault == Fault::Deny || !self.cfg.policy.allows(rest) {
            st.stats.denials += 1;
            return Err(KbsError::PolicyDeny);
        }
        if req.method != "GET" {
            return Err(KbsError::PluginInternalError(
                "Illegal HTTP method. Only supports `GET`, `POST` and `DELETE`".into(),
            ));
        }
        if !valid_resource_path(rest) {
            return Err(KbsError::PluginInternalError(format!(
                "illegal ResourceDesc format: {rest:?}"
            )));
        }
        let plain = std::fs::read(self.cfg.resources.join(rest)).map_err(|e| {
            KbsError::PluginInternalError(format!("resource not found: {rest}: {e}"))
        })?;
        let mut key = claims.get("tee-pubkey").cloned().ok_or_else(|| {
            KbsError::TokenVerifierError("Tee public key not found in Attestation Token".into())
        })?;
        if st.fault == Fault::WrongKey {
            key = fresh_p256_jwk();
        }
        let mut out =
            jwe::encrypt_to_jwk(&key, &plain).map_err(|e| KbsError::JweError(e.to_string()))?;
        if st.fault == Fault::Tamper {
            jwe::tamper(&mut out);
        }
        st.stats.releases += 1;
        let body = serde_json::to_string(&out).map_err(|e| KbsError::JweError(e.to_string()))?;
        Ok(Response::json(200, body))
    }

    fn kbs(&self, req: &Request, tail: &str) -> Reply {
        let (plugin, rest) = tail.split_once('/').unwrap_or((tail, ""));
        let method = req.method.as_str();
        {
            let mut st = self.lock();
            match (method, plugin) {
                ("POST", "auth") => st.stats.auths += 1,
                ("POST", "attest") => st.stats.attests += 1,
                ("GET", "resource") => st.stats.resource_gets += 1,
                _ => {}
            }
            match st.fault {
                Fault::Refuse => return Reply::Close,
                Fault::Error500 => return Reply::Respond(error(KbsError::InjectedFault)),
                _ => {}
            }
        }
        let slow = match self.lock().fault {
            Fault::Slow(ms) => ms,
            _ => 0,
        };
        if slow > 0 {
            std::thread::sleep(Duration::from_millis(slow));
        }
        if !matches!(method, "GET" | "POST" | "PUT" | "DELETE") {
            return Reply::Respond(Response::new(405));
        }
        let result = match (method, plugin) {
            ("POST", "auth") => self.auth(&req.body),
            ("POST", "attest") => self.attest(req),
            ("POST", "attestation-policy")
            | ("GET" | "POST", "reference-value")
            | ("GET" | "POST", "resource-policy") => {
                Err(KbsError::AdminAuthAccess(plugin.to_owned()))
            }
            (_, "resource") => self.resource(req, rest),
            (_, other) => Err(KbsError::PluginNotFound(other.to_owned())),
        };
        Reply::Respond(result.unwrap_or_else(|e| {
            if self.cfg.verbose {
                eprintln!(
                    "cocoon-test-kbs: {method} {}: {} {}: {}{}",
                    req.path,
                    e.status(),
                    e.kind(),
                    e,
                    e.cause().map(|c| format!(" ({c})")).unwrap_or_default()
                );
            }
            error(e)
        }))
    }

    fn admin(&self, req: &Request) -> Reply {
        let ok = |v: Value| Reply::Respond(Response::json(200, v.to_string()));
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/test/stats") => ok(json!(self.lock().stats)),
            ("GET", "/test/fault") => ok(self.lock().fault.to_json()),
            ("POST", "/test/fault") => {
                let Ok(f) = serde_json::from_slice::<FaultRequest>(&req.body) else {
                    return admin_error(400, "body must be {\"mode\":...,\"slow_ms\":N}");
                };
                let mut st = self.lock();
                st.fault = match f.mode.as_str() {
                    "none" => Fault::None,
                    "refuse" => Fault::Refuse,
                    "500" => Fault::Error500,
                    "slow" => Fault::Slow(f.slow_ms.unwrap_or(DEFAULT_SLOW_MS).min(MAX_SLOW_MS)),
                    "deny" => Fault::Deny,
                    "tamper" => Fault::Tamper,
                    "wrong-key" => Fault::WrongKey,
                    // An action, not a mode: the current mode stays.
                    "expire-sessions" => {
                        st.sessions.clear();
                        st.fault
                    }
                    _ => {
                        return admin_error(
                            400,
                            "mode: none|refuse|500|slow|deny|expire-sessions|tamper|wrong-key",
                        )
                    }
                };
                ok(st.fault.to_json())
            }
            ("POST", "/test/reset") => {
                let mut st = self.lock();
                *st = State::default();
                ok(json!({}))
            }
            ("GET", "/test/last-attest") => ok(self.lock().last_attest.clone()),
            ("GET", "/test/token-key") => ok(self.tokens.public_jwk()),
            _ => admin_error(404, "unknown test endpoint"),
        }
    }
}

fn fresh_p256_jwk() -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let pt = p256::SecretKey::random(&mut OsRng)
        .public_key()
        .to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
        "x": pt.x().map(|x| URL_SAFE_NO_PAD.encode(x)),
        "y": pt.y().map(|y| URL_SAFE_NO_PAD.encode(y)),
    })
}

impl Handler for Kbs {
    fn handle(&self, req: Request) -> Reply {
        if req.path.starts_with("/test/") {
            return self.admin(&req);
        }
        if let Some(tail) = req.path.strip_prefix(KBS_PREFIX) {
            let tail = tail.to_owned();
            return self.kbs(&req, &tail);
        }
        if req.method == "GET" && req.path == "/healthz" {
            return Reply::Respond(Response::new(200));
        }
        Reply::Respond(Response::new(404))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PROTOCOL_VERSION;

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_784_635_200), "Tue, 21 Jul 2026 12:00:00 GMT");
    }

    #[test]
    fn versions() {
        assert_eq!(version_matches(PROTOCOL_VERSION), Ok(true));
        assert_eq!(version_matches("0.4.0+build.1"), Ok(true));
        assert_eq!(version_matches("0.4.0-rc1"), Ok(false));
        assert_eq!(version_matches("0.5.0"), Ok(false));
        assert_eq!(version_matches("0.3.0"), Ok(false));
        for bad in ["0.4", "v0.4.0", "00.4.0", "0.4.0-", "0.4.x", "", " 0.4.0"] {
            assert_eq!(version_matches(bad), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn resource_paths() {
        assert!(valid_resource_path("default/key/1"));
        assert!(valid_resource_path("my-repo/type_2/tag.v1"));
        for bad in [
            "default/key",
            "a/b/c/d",
            "../key/1",
            "default/.x/1",
            "a//b",
            "a/b/",
        ] {
            assert!(!valid_resource_path(bad), "{bad}");
        }
    }

    #[test]
    fn session_ids_are_uuid_v4_simple() {
        let id = session_id();
        assert_eq!(id.len(), 32);
        assert_eq!(&id[12..13], "4");
        assert_ne!(id, session_id());
    }
}
