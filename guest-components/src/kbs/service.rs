//! The agent-wide KBS service: one attestation shared by every caller, thread-safe.
//!
//! [`KbsService`] runs Trustee's RCAR handshake (`auth` → `attest`) once and reuses its
//! session (cookie, token and the TEE key the token is bound to) for every resource until
//! the token's `exp` claim minus [`KbsSettings::token_margin`]; then exactly one new
//! handshake runs, with a fresh TEE key. Concurrent callers share one in-flight handshake
//! (single flight: a mutex serialises handshakes and a caller that waited for it re-checks
//! the session first).
//!
//! Failures are never hidden: connection errors, timeouts and 5xx answers are retried
//! with exponential backoff within [`RetryPolicy`]'s attempts and total deadline; 4xx
//! answers are not retried. Trustee answers 401 to almost everything, so the error `type`
//! decides: only a bad session or token (`TokenNotFound`, `TokenVerifierError`, and older
//! Trustee's `ExpiredCookie` / `InvalidCookie`) re-runs the handshake, once; `PolicyDeny`
//! is [`Error::Denied`] and a missing resource [`Error::NotFound`].
//!
//! Every handshake and every resource release or denial is counted ([`KbsMetrics`],
//! Prometheus text) and written as one `tracing` event with target `audit`. No secret, token,
//! cookie or key is ever logged.
//!
//! All I/O is blocking (ureq); call it from a blocking thread in async code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kbs_types::{Challenge, ErrorInformation};
use zeroize::Zeroizing;

use super::protocol::{self, AttestResponse, FlattenedJwe, ResourcePath};
use super::{error_info, read_body, session_cookie, EvidenceProvider, DEFAULT_TIMEOUT};
use crate::binding;
use crate::error::{Error, JweError};
use crate::jwe;
use crate::tee_key::TeeKey;

/// The `tracing` target of audit records.
pub const AUDIT_TARGET: &str = "audit";

/// Default [`KbsSettings::token_margin`].
pub const DEFAULT_TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// KBS error `type`s (their last path segment) that mean "the session or token is bad":
/// the only answers that make the service re-run the handshake. Trustee (kbs/src/error.rs)
/// answers `TokenNotFound` when the cookie's session is unknown or expired and there is no
/// bearer token, `TokenVerifierError` when the token does not verify (e.g. expired); older
/// Trustee releases said `ExpiredCookie` / `InvalidCookie`.
pub const SESSION_ERROR_TYPES: [&str; 4] = [
    "TokenNotFound",
    "TokenVerifierError",
    "ExpiredCookie",
    "InvalidCookie",
];

/// How requests to the KBS are retried.
///
/// Connection errors, timeouts and 5xx answers are retried after `initial_backoff`,
/// doubling up to `max_backoff`, at most `max_attempts` times per request; one call of the
/// service (a resource, including any handshake it needs) ends by `deadline` whatever
/// happens. 4xx answers are never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Attempts per request, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// Total time for one call of the service.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// 100 ms, doubling up to 2 s, 5 attempts, 30 s in all.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_attempts: 5,
            deadline: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt per request, the default deadline.
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after attempt `attempt` (1-based) failed.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// How to reach the KBS and how to behave towards it.
#[derive(Debug, Clone)]
pub struct KbsSettings {
    /// `http(s)://host:port[/prefix]`.
    pub url: String,
    /// An extra root CA certificate (PEM, one or more certificates) for `https`, trusted
    /// besides the bundled web PKI roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// The initdata document (TOML) sent as `init-data` in `attest`.
    pub init_data: Option<String>,
    /// Retries, backoff and the deadline of one call.
    pub retry: RetryPolicy,
    /// Renew the session this long before the token's `exp` (at most half the token's
    /// remaining lifetime).
    pub token_margin: Duration,
}

impl KbsSettings {
    /// Settings for the KBS at `url`: no extra CA, no initdata, [`RetryPolicy::default`],
    /// [`DEFAULT_TOKEN_MARGIN`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_cert_pem: None,
            init_data: None,
            retry: RetryPolicy::default(),
            token_margin: DEFAULT_TOKEN_MARGIN,
        }
    }
}

/// An established session: the cookie, the token and the TEE key the token is bound to.
struct Session {
    /// Which handshake made it (1-based).
    id: u64,
    cookie: Zeroizing<String>,
    token: Zeroizing<String>,
    key: TeeKey,
    /// When to renew it; `None`: keep it until the KBS refuses it.
    renew_at: Option<Instant>,
}

impl Session {
    fn is_fresh(&self, now: Instant) -> bool {
        self.renew_at.is_none_or(|at| now < at)
    }
}

/// The time left for one call of the service.
struct Budget {
    start: Instant,
    deadline: Duration,
}

impl Budget {
    fn start(deadline: Duration) -> Self {
        Self {
            start: Instant::now(),
            deadline,
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.start.elapsed())
    }
}

/// A KBS answer that is not a success and not retried.
struct Refusal {
    status: u16,
    info: ErrorInformation,
}

/// What a resource request gave.
enum Fetched {
    Jwe(FlattenedJwe),
    /// The KBS says the session or token is bad.
    SessionBad(Refusal),
}

/// The agent-wide KBS client: one attestation for everything, shared across threads.
pub struct KbsService<E> {
    base: String,
    settings: KbsSettings,
    provider: E,
    http: ureq::Agent,
    session: RwLock<Option<Arc<Session>>>,
    /// Held while a handshake runs: one in flight at a time.
    handshake: Mutex<()>,
    handshakes: AtomicU64,
    metrics: KbsMetrics,
}

impl<E> std::fmt::Debug for KbsService<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let has_session = self
            .session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        f.debug_struct("KbsService")
            .field("kbs", &self.base)
            .field("has_session", &has_session)
            .field("handshakes", &self.handshakes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<E: EvidenceProvider> KbsService<E> {
    /// A service for the KBS in `settings`. Checks the URL and the CA certificate; makes
    /// no request yet (the first resource, or [`Self::attest`], runs the handshake).
    pub fn new(settings: KbsSettings, provider: E) -> Result<Self, Error> {
        let base = check_url(&settings.url)?;
        let http = http_agent(settings.ca_cert_pem.as_deref())?;
        Ok(Self {
            base,
            settings,
            provider,
            http,
            session: RwLock::new(None),
            handshake: Mutex::new(()),
            handshakes: AtomicU64::new(0),
            metrics: KbsMetrics::default(),
        })
    }

    /// Replaces the initdata sent in the next `attest` (for [`super::KbsClient`]).
    pub(crate) fn set_init_data(&mut self, init_data: Option<String>) {
        self.settings.init_data = init_data;
    }

    /// The KBS base URL (without a trailing `/`).
    pub fn kbs_url(&self) -> &str {
        &self.base
    }

    /// The settings the service was made with.
    pub fn settings(&self) -> &KbsSettings {
        &self.settings
    }

    /// Completed handshakes so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// The counters of this service.
    pub fn metrics(&self) -> &KbsMetrics {
        &self.metrics
    }

    /// Ensures a valid session now: runs the handshake if there is none or it is due for
    /// renewal; otherwise makes no request.
    pub fn attest(&self) -> Result<(), Error> {
        let budget = Budget::start(self.settings.retry.deadline);
        self.session(&budget, None).map(|_| ())
    }

    /// Runs a new handshake now, replacing the current session (unless another caller has
    /// just replaced it).
    pub fn reattest(&self) -> Result<(), Error> {
        let budget = Budget::start(self.settings.retry.deadline);
        let current = self.current_session(None).map(|s| s.id);
        self.session(&budget, Some(current.unwrap_or(0)))
            .map(|_| ())
    }

    /// The attestation token of the current session (runs the handshake if needed).
    pub fn token(&self) -> Result<Zeroizing<String>, Error> {
        let budget = Budget::start(self.settings.retry.deadline);
        Ok(self.session(&budget, None)?.0.token.clone())
    }

    /// The public TEE key the current session's token is bound to, if there is a session.
    pub fn tee_pubkey(&self) -> Option<kbs_types::TeePubKey> {
        self.current_session(None).map(|s| s.key.jwk().clone())
    }

    /// Fetches and decrypts `kbs:///<repo>/<type>/<tag>` (blocking).
    pub fn get_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
        match ResourcePath::from_uri(uri) {
            Ok(path) => self.get_resource_path(&path),
            Err(e) => {
                self.record_denial("invalid", uri, &e);
                Err(e)
            }
        }
    }

    /// Fetches and decrypts the resource at `path` (blocking).
    pub fn get_resource_path(&self, path: &ResourcePath) -> Result<Zeroizing<Vec<u8>>, Error> {
        let budget = Budget::start(self.settings.retry.deadline);
        let label = path.to_string();
        match self.fetch_resource(path, &budget) {
            Ok(plain) => {
                self.metrics.released(&label);
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "resource",
                    outcome = "released",
                    resource = %label,
                    kbs = %self.base,
                    "KBS resource released"
                );
                Ok(plain)
            }
            Err(e) => {
                self.record_denial(&label, &label, &e);
                Err(e)
            }
        }
    }

    fn record_denial(&self, metric_label: &str, resource: &str, e: &Error) {
        self.metrics.denied(metric_label, e.reason());
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "resource",
            outcome = "denied",
            resource = %resource,
            reason = e.reason(),
            step = e.step(),
            kbs = %self.base,
            error = %e,
            "KBS resource not released"
        );
    }

    fn fetch_resource(
        &self,
        path: &ResourcePath,
        budget: &Budget,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (session, made_here) = self.session(budget, None)?;
        let refusal = match self.fetch(path, &session, budget)? {
            Fetched::Jwe(jwe) => return self.open(path, &session, &jwe),
            Fetched::SessionBad(refusal) => refusal,
        };
        if made_here {
            // The session was made for this very request: another handshake would not
            // change the answer.
            return Err(self.session_rejected(path, refusal));
        }
        tracing::info!(
            kbs = %self.base,
            resource = %path,
            kind = %refusal.info.error_type,
            "the KBS refused the session; attesting again"
        );
        let (session, _) = self.session(budget, Some(session.id))?;
        match self.fetch(path, &session, budget)? {
            Fetched::Jwe(jwe) => self.open(path, &session, &jwe),
            Fetched::SessionBad(refusal) => Err(self.session_rejected(path, refusal)),
        }
    }

    fn session_rejected(&self, path: &ResourcePath, refusal: Refusal) -> Error {
        Error::SessionRejected {
            url: self.url(&path.request_path()),
            status: refusal.status,
            kind: refusal.info.error_type,
            detail: refusal.info.detail,
        }
    }

    fn open(
        &self,
        path: &ResourcePath,
        session: &Session,
        jwe: &FlattenedJwe,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        jwe::decrypt(&session.key, jwe).map_err(|source| Error::Resource {
            path: path.to_string(),
            url: self.url(&path.request_path()),
            source,
        })
    }

    /// One resource GET on `session` (with retries).
    fn fetch(
        &self,
        path: &ResourcePath,
        session: &Session,
        budget: &Budget,
    ) -> Result<Fetched, Error> {
        let url = self.url(&path.request_path());
        let cookie = Zeroizing::new(format!(
            "{}={}",
            protocol::SESSION_COOKIE,
            session.cookie.as_str()
        ));
        let answer = self.send("resource", &url, budget, |timeout| {
            self.http
                .get(&url)
                .timeout(timeout)
                .set("Cookie", &cookie)
                .call()
                .map_err(Box::new)
        })?;
        let resp = match answer {
            Ok(resp) => resp,
            Err(refusal) => return self.classify_refusal(path, &url, refusal),
        };
        let body = read_body(resp, "resource", &url)?;
        serde_json::from_str::<FlattenedJwe>(&body)
            .map(Fetched::Jwe)
            .map_err(|e| Error::Resource {
                path: path.to_string(),
                url: url.clone(),
                source: JweError::Malformed(format!("not a flattened JWE JSON: {e}")),
            })
    }

    /// What a 4xx answer to a resource request means, from its status and error `type`.
    fn classify_refusal(
        &self,
        path: &ResourcePath,
        url: &str,
        refusal: Refusal,
    ) -> Result<Fetched, Error> {
        let Refusal { status, info } = refusal;
        let kind = error_kind(&info.error_type);
        let (kind_s, detail) = (info.error_type.clone(), info.detail.clone());
        let not_found = || Error::NotFound {
            path: path.to_string(),
            url: url.to_owned(),
            status,
            kind: kind_s.clone(),
            detail: detail.clone(),
        };
        if status == 404 {
            return Err(not_found());
        }
        if matches!(status, 401 | 403) {
            if SESSION_ERROR_TYPES.contains(&kind) {
                return Ok(Fetched::SessionBad(Refusal { status, info }));
            }
            if kind == "PolicyDeny" || (status == 403 && kind.starts_with("HTTP ")) {
                return Err(Error::Denied {
                    path: path.to_string(),
                    url: url.to_owned(),
                    status,
                    kind: kind_s,
                    detail,
                });
            }
            if kind == "PluginInternalError" {
                if detail.to_ascii_lowercase().contains("not found") {
                    return Err(not_found());
                }
                return Err(Error::ResourceBackend {
                    path: path.to_string(),
                    url: url.to_owned(),
                    status,
                    kind: kind_s,
                    detail,
                });
            }
        }
        Err(Error::Status {
            step: "resource",
            url: url.to_owned(),
            status,
            attempts: 1,
            kind: kind_s,
            detail,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The current session if it is fresh and not the rejected one `stale`.
    fn current_session(&self, stale: Option<u64>) -> Option<Arc<Session>> {
        let now = Instant::now();
        self.session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|s| Some(s.id) != stale && s.is_fresh(now))
            .cloned()
    }

    /// A fresh session, from the cache or from a handshake (one in flight at a time).
    /// `stale` is the id of a session the KBS refused. The flag is true when this call
    /// ran the handshake.
    fn session(&self, budget: &Budget, stale: Option<u64>) -> Result<(Arc<Session>, bool), Error> {
        if let Some(s) = self.current_session(stale) {
            return Ok((s, false));
        }
        let _flight = self
            .handshake
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another caller may have completed a handshake while this one waited.
        if let Some(s) = self.current_session(stale) {
            return Ok((s, false));
        }
        let session = Arc::new(self.run_handshake(budget)?);
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = Some(session.clone());
        Ok((session, true))
    }

    /// One handshake, counted, timed and audited.
    fn run_handshake(&self, budget: &Budget) -> Result<Session, Error> {
        self.metrics.attempts.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        let result = self.handshake(budget);
        let elapsed = start.elapsed();
        self.metrics.observe_duration(elapsed);
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(session) => {
                self.metrics.successes.fetch_add(1, Ordering::SeqCst);
                let n = self.handshakes.fetch_add(1, Ordering::SeqCst) + 1;
                let renews_in_s = session
                    .renew_at
                    .map(|at| at.saturating_duration_since(Instant::now()).as_secs());
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "attestation",
                    outcome = "success",
                    kbs = %self.base,
                    tee = ?self.provider.tee(),
                    duration_ms,
                    handshakes = n,
                    renews_in_s,
                    "KBS attestation succeeded"
                );
                Ok(Session { id: n, ..session })
            }
            Err(e) => {
                self.metrics.failed(e.reason());
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "attestation",
                    outcome = "failure",
                    kbs = %self.base,
                    tee = ?self.provider.tee(),
                    reason = e.reason(),
                    step = e.step(),
                    duration_ms,
                    handshakes = self.handshakes(),
                    error = %e,
                    "KBS attestation failed"
                );
                Err(e)
            }
        }
    }

    /// `auth` then `attest`, with a fresh TEE key.
    fn handshake(&self, budget: &Budget) -> Result<Session, Error> {
        let key = TeeKey::generate();

        // auth
        let url = self.url(protocol::AUTH_PATH);
        let body = serde_json::to_string(&protocol::auth_request(self.provider.tee())).map_err(
            |source| Error::Encode {
                step: "auth",
                source,
            },
        )?;
        let resp = self
            .send("auth", &url, budget, |timeout| {
                self.http
                    .post(&url)
                    .timeout(timeout)
                    .set("Content-Type", "application/json")
                    .send_string(&body)
                    .map_err(Box::new)
            })?
            .map_err(|r| refused("auth", &url, r))?;
        let cookie = session_cookie(&resp).ok_or_else(|| Error::Malformed {
            step: "auth",
            url: url.clone(),
            reason: format!("no {} cookie", protocol::SESSION_COOKIE),
        })?;
        let text = read_body(resp, "auth", &url)?;
        let challenge: Challenge = serde_json::from_str(&text).map_err(|e| Error::Malformed {
            step: "auth",
            url: url.clone(),
            reason: format!("not a challenge: {e}"),
        })?;

        // attest
        let jwk = key.jwk().clone();
        let report_data = binding::report_data(&challenge.nonce, &jwk);
        let evidence = self
            .provider
            .evidence(&report_data)
            .map_err(Error::Evidence)?;
        let url = self.url(protocol::ATTEST_PATH);
        let attestation = protocol::attest_request(
            &challenge.nonce,
            jwk,
            &evidence,
            self.settings.init_data.as_deref(),
        )
        .map_err(|source| Error::Encode {
            step: "attest",
            source,
        })?;
        let body = serde_json::to_string(&attestation).map_err(|source| Error::Encode {
            step: "attest",
            source,
        })?;
        let cookie_header =
            Zeroizing::new(format!("{}={}", protocol::SESSION_COOKIE, cookie.as_str()));
        let resp = self
            .send("attest", &url, budget, |timeout| {
                self.http
                    .post(&url)
                    .timeout(timeout)
                    .set("Content-Type", "application/json")
                    .set("Cookie", &cookie_header)
                    .send_string(&body)
                    .map_err(Box::new)
            })?
            .map_err(|r| refused("attest", &url, r))?;
        let text = Zeroizing::new(read_body(resp, "attest", &url)?);
        let answer: AttestResponse = serde_json::from_str(&text).map_err(|e| Error::Malformed {
            step: "attest",
            url: url.clone(),
            reason: format!("no token: {e}"),
        })?;
        let token = Zeroizing::new(answer.token);
        let renew_at = self.renew_at(&token, Instant::now());
        Ok(Session {
            id: 0,
            cookie,
            token,
            key,
            renew_at,
        })
    }

    /// When a session whose token is `token` should be renewed: `exp` minus the margin
    /// (at most half the remaining lifetime). `None` when the token has no readable `exp`,
    /// or one already past by our clock (a skewed guest clock must not cause a handshake
    /// per request): the KBS will say when the token is bad.
    fn renew_at(&self, token: &str, received: Instant) -> Option<Instant> {
        let exp = token_expiry(token)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        let left = exp - now;
        if !left.is_finite() || left <= 0.0 {
            tracing::warn!(
                kbs = %self.base,
                exp,
                now,
                "the attestation token's exp is already past by the guest clock; \
                 keeping the session until the KBS refuses it"
            );
            return None;
        }
        let lifetime = Duration::try_from_secs_f64(left).ok()?;
        let margin = self.settings.token_margin.min(lifetime / 2);
        received.checked_add(lifetime - margin)
    }

    /// One request with retries for connection errors, timeouts and 5xx answers, within
    /// the budget. `Ok(Err(_))`: the KBS answered a non-5xx error status (not retried).
    fn send(
        &self,
        step: &'static str,
        url: &str,
        budget: &Budget,
        call: impl Fn(Duration) -> Result<ureq::Response, Box<ureq::Error>>,
    ) -> Result<Result<ureq::Response, Refusal>, Error> {
        let policy = &self.settings.retry;
        let max_attempts = policy.max_attempts.max(1);
        let deadline = |attempts: u32, last: String| Error::Deadline {
            step,
            url: url.to_owned(),
            deadline: policy.deadline,
            attempts,
            last,
        };
        let mut attempt = 0;
        let mut last_error = String::from("none");
        loop {
            let remaining = budget.remaining();
            if remaining.is_zero() {
                return Err(deadline(attempt, last_error));
            }
            attempt += 1;
            let capped = remaining < DEFAULT_TIMEOUT;
            let last = match call(remaining.min(DEFAULT_TIMEOUT)).map_err(|e| *e) {
                Ok(resp) => return Ok(Ok(resp)),
                Err(ureq::Error::Status(status, resp)) if status >= 500 => {
                    let info = error_info(resp);
                    Error::Status {
                        step,
                        url: url.to_owned(),
                        status,
                        attempts: attempt,
                        kind: info.error_type,
                        detail: info.detail,
                    }
                }
                Err(ureq::Error::Status(status, resp)) => {
                    return Ok(Err(Refusal {
                        status,
                        info: error_info(resp),
                    }))
                }
                Err(ureq::Error::Transport(t)) => {
                    let reason = transport_reason(&t);
                    if capped && is_timeout(&t) {
                        return Err(deadline(attempt, reason));
                    }
                    let e = Error::Unreachable {
                        step,
                        url: url.to_owned(),
                        attempts: attempt,
                        reason,
                    };
                    if !is_retryable(&t) {
                        return Err(e);
                    }
                    e
                }
            };
            if attempt >= max_attempts {
                return Err(last);
            }
            last_error = last.to_string();
            let backoff = policy.backoff(attempt);
            if backoff >= budget.remaining() {
                return Err(deadline(attempt, last_error));
            }
            tracing::debug!(
                step,
                url,
                attempt,
                backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                error = %last_error,
                "KBS request failed; retrying"
            );
            std::thread::sleep(backoff);
        }
    }
}

impl<E: EvidenceProvider + Send + Sync> crate::resource::ResourceSource for KbsService<E> {
    fn get_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
        KbsService::get_resource(self, uri)
    }
}

/// The error of a non-success, non-5xx answer at `auth` or `attest`.
fn refused(step: &'static str, url: &str, r: Refusal) -> Error {
    Error::Status {
        step,
        url: url.to_owned(),
        status: r.status,
        attempts: 1,
        kind: r.info.error_type,
        detail: r.info.detail,
    }
}

/// The last path segment of a KBS error `type` URI (`.../errors/PolicyDeny` → `PolicyDeny`).
fn error_kind(error_type: &str) -> &str {
    error_type.rsplit('/').next().unwrap_or(error_type)
}

/// The transport error with its causes, for messages.
fn transport_reason(t: &ureq::Transport) -> String {
    let mut text = t.to_string();
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn is_timeout(t: &ureq::Transport) -> bool {
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        source = s.source();
    }
    t.to_string().contains("timed out")
}

/// Worth another try: DNS, connection and I/O errors (refused, reset, timeouts). Not:
/// bad URLs, bad headers, redirects, TLS certificate errors.
fn is_retryable(t: &ureq::Transport) -> bool {
    use ureq::ErrorKind;
    if !matches!(
        t.kind(),
        ErrorKind::Dns | ErrorKind::ConnectionFailed | ErrorKind::Io
    ) {
        return false;
    }
    // A certificate the configured roots do not accept will not be accepted next time.
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|e| e as &(dyn std::error::Error + 'static));
        if s.is::<rustls::Error>() || inner.is_some_and(|e| e.is::<rustls::Error>()) {
            return false;
        }
        source = s.source();
    }
    true
}

/// The `exp` claim (seconds since the epoch) of a JWT, read without checking the
/// signature (only to know when to renew; the KBS checks the token).
fn token_expiry(token: &str) -> Option<f64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?);
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_f64()
}

/// `http(s)://host[:port][/prefix]` without a trailing `/`.
fn check_url(kbs_url: &str) -> Result<String, Error> {
    let base = kbs_url.trim_end_matches('/');
    let bad = |reason| Error::BadKbsUrl {
        url: kbs_url.to_owned(),
        reason,
    };
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| bad("want http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("no query or fragment allowed"));
    }
    Ok(base.to_owned())
}

/// The HTTP agent: no redirects, timeouts; with `ca_pem`, a rustls configuration trusting
/// it besides the web PKI roots.
fn http_agent(ca_pem: Option<&[u8]>) -> Result<ureq::Agent, Error> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(DEFAULT_TIMEOUT)
        .timeout_read(DEFAULT_TIMEOUT)
        .timeout_write(DEFAULT_TIMEOUT)
        .redirects(0);
    if let Some(pem) = ca_pem {
        builder = builder.tls_config(Arc::new(tls_config(pem)?));
    }
    Ok(builder.build())
}

fn tls_config(pem: &[u8]) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |reason: String| Error::BadCaCert { reason };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in the PEM text".to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Upper bounds (seconds) of the handshake latency histogram.
const DURATION_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative), plus the `+Inf` overflow at the end.
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Counters of a [`KbsService`], rendered as Prometheus text by [`Self::render_prometheus`].
#[derive(Default)]
pub struct KbsMetrics {
    attempts: AtomicU64,
    successes: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    releases: Mutex<BTreeMap<String, u64>>,
    denials: Mutex<BTreeMap<(String, String), u64>>,
    duration: Mutex<Histogram>,
}

impl std::fmt::Debug for KbsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbsMetrics")
            .field("attempts", &self.attempts())
            .field("successes", &self.successes())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KbsMetrics {
    /// Handshakes started.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Handshakes completed.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::SeqCst)
    }

    /// Failed handshakes with this [`Error::reason`].
    pub fn failures(&self, reason: &str) -> u64 {
        lock(&self.failures).get(reason).copied().unwrap_or(0)
    }

    /// Releases of `resource` (`<repo>/<type>/<tag>`).
    pub fn releases(&self, resource: &str) -> u64 {
        lock(&self.releases).get(resource).copied().unwrap_or(0)
    }

    /// Refusals of `resource` with this [`Error::reason`] (`invalid` for unparsable URIs).
    pub fn denials(&self, resource: &str, reason: &str) -> u64 {
        lock(&self.denials)
            .get(&(resource.to_owned(), reason.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn failed(&self, reason: &str) {
        *lock(&self.failures).entry(reason.to_owned()).or_default() += 1;
    }

    fn released(&self, resource: &str) {
        *lock(&self.releases).entry(resource.to_owned()).or_default() += 1;
    }

    fn denied(&self, resource: &str, reason: &str) {
        *lock(&self.denials)
            .entry((resource.to_owned(), reason.to_owned()))
            .or_default() += 1;
    }

    fn observe_duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = lock(&self.duration);
        let i = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(c) = h.counts.get_mut(i) {
            *c += 1;
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter.
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        header(
            &mut out,
            "coco_attestation_attempts_total",
            "counter",
            "KBS attestation handshakes started.",
        );
        let _ = writeln!(out, "coco_attestation_attempts_total {}", self.attempts());
        header(
            &mut out,
            "coco_attestation_success_total",
            "counter",
            "KBS attestation handshakes completed.",
        );
        let _ = writeln!(out, "coco_attestation_success_total {}", self.successes());
        header(
            &mut out,
            "coco_attestation_failure_total",
            "counter",
            "KBS attestation handshakes failed, by reason.",
        );
        for (reason, n) in lock(&self.failures).iter() {
            let _ = writeln!(
                out,
                "coco_attestation_failure_total{{reason=\"{}\"}} {n}",
                escape_label(reason)
            );
        }
        header(
            &mut out,
            "coco_attestation_duration_seconds",
            "histogram",
            "Duration of KBS attestation handshakes (auth and attest).",
        );
        {
            let h = lock(&self.duration);
            let mut cumulative = 0;
            for (le, n) in DURATION_BUCKETS.iter().zip(h.counts.iter()) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "coco_attestation_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "coco_attestation_duration_seconds_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "coco_attestation_duration_seconds_sum {}", h.sum);
            let _ = writeln!(out, "coco_attestation_duration_seconds_count {}", h.count);
        }
        header(
            &mut out,
            "coco_kbs_resource_releases_total",
            "counter",
            "KBS resources released, by resource path.",
        );
        for (resource, n) in lock(&self.releases).iter() {
            let _ = writeln!(
                out,
                "coco_kbs_resource_releases_total{{resource=\"{}\"}} {n}",
                escape_label(resource)
            );
        }
        header(
            &mut out,
            "coco_kbs_resource_denials_total",
            "counter",
            "KBS resource requests not released, by resource path and reason.",
        );
        for ((resource, reason), n) in lock(&self.denials).iter() {
            let _ = writeln!(
                out,
                "coco_kbs_resource_denials_total{{resource=\"{}\",reason=\"{}\"}} {n}",
                escape_label(resource),
                escape_label(reason)
            );
        }
        out
    }
}

/// A label value escaped per the Prometheus text format: `\` → `\\`, `"` → `\"`,
/// newline → `\n`.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<u128> = (1..=7).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(p.backoff(200), Duration::from_secs(2));
        assert_eq!(
            RetryPolicy::default(),
            RetryPolicy {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                max_attempts: 5,
                deadline: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn jwt_exp() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000,"sub":"x"}"#);
        assert_eq!(token_expiry(&format!("h.{payload}.s")), Some(1.7e9));
        let no_exp = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(token_expiry(&format!("h.{no_exp}.s")), None);
        assert_eq!(token_expiry("header.claims.signature"), None);
        assert_eq!(token_expiry("opaque"), None);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(br#"{"exp":5}"#);
        assert_eq!(token_expiry(&format!("h.{padded}.s")), Some(5.0));
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            error_kind("https://github.com/confidential-containers/kbs/errors/PolicyDeny"),
            "PolicyDeny"
        );
        assert_eq!(error_kind("HTTP 500"), "HTTP 500");
    }

    #[test]
    fn label_escaping() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let m = KbsMetrics::default();
        m.released("r/\"t\"/x\\y");
        m.denied("a/b/c", "not_found");
        m.denied("a/b/c", "not_found");
        m.failed("unreachable");
        m.attempts.fetch_add(3, Ordering::SeqCst);
        m.observe_duration(Duration::from_millis(70));
        m.observe_duration(Duration::from_secs(100));
        let text = m.render_prometheus();
        for line in [
            "# HELP coco_attestation_attempts_total KBS attestation handshakes started.",
            "# TYPE coco_attestation_attempts_total counter",
            "coco_attestation_attempts_total 3",
            "coco_attestation_success_total 0",
            "coco_attestation_failure_total{reason=\"unreachable\"} 1",
            "# TYPE coco_attestation_duration_seconds histogram",
            "coco_attestation_duration_seconds_bucket{le=\"0.05\"} 0",
            "coco_attestation_duration_seconds_bucket{le=\"0.1\"} 1",
            "coco_attestation_duration_seconds_bucket{le=\"30\"} 1",
            "coco_attestation_duration_seconds_bucket{le=\"+Inf\"} 2",
            "coco_attestation_duration_seconds_count 2",
            "coco_kbs_resource_releases_total{resource=\"r/\\\"t\\\"/x\\\\y\"} 1",
            "coco_kbs_resource_denials_total{resource=\"a/b/c\",reason=\"not_found\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("coco_attestation_duration_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 100.07).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn urls() {
        assert_eq!(check_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(check_url("https://h/prefix").unwrap(), "https://h/prefix");
        for bad in [
            "h:1",
            "ftp://h",
            "http://",
            "http:///x",
            "http://h?x",
            "http://h#f",
        ] {
            assert!(
                matches!(check_url(bad), Err(Error::BadKbsUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_ca_pem() {
        let err = tls_config(b"not a certificate").unwrap_err();
        assert!(matches!(err, Error::BadCaCert { .. }), "{err:?}");
        assert_eq!(err.reason(), "config");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = tls_config(garbage).unwrap_err();
        assert!(matches!(err, Error::BadCaCert { .. }), "{err:?}");
    }
}
