//! The KBS client: Trustee's RCAR handshake (protocol 0.4.0), a session cache, and
//! resource retrieval with JWE unwrapping.
//!
//! One client holds one TEE key pair and one KBS session. The first resource request (or
//! [`KbsClient::attest`]) runs the handshake (`auth` → `attest`); later requests reuse the
//! session cookie. A 401 on a resource re-runs the handshake once and retries that one
//! request; anything else is returned at once as an [`Error`] naming what failed. There are
//! no other retries: a caller that wants them decides, and sees the cause.
//!
//! All I/O is blocking (ureq); call it from a blocking thread in async code.

pub mod protocol;

use std::time::Duration;

use kbs_types::{Challenge, ErrorInformation, Tee};
use zeroize::Zeroizing;

use crate::binding;
use crate::error::{BoxError, Error};
use crate::jwe;
use crate::tee_key::TeeKey;
use protocol::{AttestResponse, FlattenedJwe, ResourcePath};

/// Where evidence comes from: the attester, or a stand-in in tests.
pub trait EvidenceProvider {
    /// The TEE named in the `auth` request.
    fn tee(&self) -> Tee;
    /// Evidence JSON (`primary_evidence`) binding `report_data` (48 bytes here).
    fn evidence(&self, report_data: &[u8]) -> Result<String, BoxError>;
}

impl EvidenceProvider for cocoon_attester::Attester {
    fn tee(&self) -> Tee {
        cocoon_attester::Attester::tee(self)
    }

    fn evidence(&self, report_data: &[u8]) -> Result<String, BoxError> {
        Ok(cocoon_attester::Attester::evidence(self, report_data)?.json)
    }
}

impl<T: EvidenceProvider + ?Sized> EvidenceProvider for &T {
    fn tee(&self) -> Tee {
        (**self).tee()
    }

    fn evidence(&self, report_data: &[u8]) -> Result<String, BoxError> {
        (**self).evidence(report_data)
    }
}

impl<T: EvidenceProvider + ?Sized> EvidenceProvider for std::sync::Arc<T> {
    fn tee(&self) -> Tee {
        (**self).tee()
    }

    fn evidence(&self, report_data: &[u8]) -> Result<String, BoxError> {
        (**self).evidence(report_data)
    }
}

/// Connect and read timeouts of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An established session: the cookie and the attestation token.
#[derive(Clone)]
struct Session {
    cookie: Zeroizing<String>,
    token: Zeroizing<String>,
}

/// A KBS client for one KBS, one TEE key and one session.
pub struct KbsClient<E> {
    base: String,
    provider: E,
    key: TeeKey,
    init_data: Option<String>,
    http: ureq::Agent,
    session: Option<Session>,
    handshakes: u64,
}

impl<E> std::fmt::Debug for KbsClient<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbsClient")
            .field("kbs", &self.base)
            .field("key", &self.key)
            .field("has_session", &self.session.is_some())
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl<E: EvidenceProvider> KbsClient<E> {
    /// A client for the KBS at `kbs_url` (`http://host:port` or `https://...`, optionally
    /// with a path prefix), with a fresh TEE key. No request is made yet.
    pub fn new(kbs_url: &str, provider: E) -> Result<Self, Error> {
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
        let http = ureq::AgentBuilder::new()
            .timeout_connect(DEFAULT_TIMEOUT)
            .timeout_read(DEFAULT_TIMEOUT)
            .timeout_write(DEFAULT_TIMEOUT)
            .redirects(0)
            .build();
        Ok(Self {
            base: base.to_owned(),
            provider,
            key: TeeKey::generate(),
            init_data: None,
            http,
            session: None,
            handshakes: 0,
        })
    }

    /// Sends this initdata document (TOML) as `init-data` in `attest`.
    pub fn with_init_data(mut self, toml: impl Into<String>) -> Self {
        self.init_data = Some(toml.into());
        self
    }

    /// The KBS base URL.
    pub fn kbs_url(&self) -> &str {
        &self.base
    }

    /// The public TEE key sent to the KBS.
    pub fn tee_key(&self) -> &TeeKey {
        &self.key
    }

    /// How many handshakes this client has run (for callers' metrics and for tests).
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    /// Runs the handshake now, replacing any session.
    pub fn attest(&mut self) -> Result<(), Error> {
        self.session = None;
        self.session()?;
        Ok(())
    }

    /// The attestation token of the current session (runs the handshake if there is none).
    pub fn token(&mut self) -> Result<&str, Error> {
        Ok(self.session()?.token.as_str())
    }

    /// Fetches and decrypts `kbs:///<repo>/<type>/<tag>`.
    pub fn get_resource(&mut self, uri: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
        let path = ResourcePath::from_uri(uri)?;
        self.get_resource_path(&path)
    }

    /// Fetches and decrypts the resource at `path`.
    pub fn get_resource_path(&mut self, path: &ResourcePath) -> Result<Zeroizing<Vec<u8>>, Error> {
        let fresh = self.session.is_none();
        match self.fetch(path) {
            Err(Fetch::Unauthorized(info)) => {
                if fresh {
                    // The session was made for this very request: a second handshake
                    // would not change the answer.
                    return Err(self.unauthorized(path, info));
                }
                self.session = None;
                match self.fetch(path) {
                    Err(Fetch::Unauthorized(info)) => Err(self.unauthorized(path, info)),
                    Err(Fetch::Other(e)) => Err(e),
                    Ok(jwe) => self.open(path, &jwe),
                }
            }
            Err(Fetch::Other(e)) => Err(e),
            Ok(jwe) => self.open(path, &jwe),
        }
    }

    fn unauthorized(&self, path: &ResourcePath, info: ErrorInformation) -> Error {
        Error::UnauthorizedAfterReauth {
            url: self.url(&path.request_path()),
            kind: info.error_type,
            detail: info.detail,
        }
    }

    fn open(&self, path: &ResourcePath, jwe: &FlattenedJwe) -> Result<Zeroizing<Vec<u8>>, Error> {
        jwe::decrypt(&self.key, jwe).map_err(|source| Error::Resource {
            path: path.to_string(),
            source,
        })
    }

    /// One resource GET on the current (or a new) session.
    fn fetch(&mut self, path: &ResourcePath) -> Result<FlattenedJwe, Fetch> {
        let cookie = self.session().map_err(Fetch::Other)?.cookie.clone();
        let url = self.url(&path.request_path());
        let req = self.http.get(&url).set(
            "Cookie",
            &format!("{}={}", protocol::SESSION_COOKIE, cookie.as_str()),
        );
        match req.call() {
            Ok(resp) => {
                let body = read_body(resp, "resource", &url).map_err(Fetch::Other)?;
                serde_json::from_str::<FlattenedJwe>(&body).map_err(|e| {
                    Fetch::Other(Error::Resource {
                        path: path.to_string(),
                        source: crate::error::JweError::Malformed(format!(
                            "not a flattened JWE JSON: {e}"
                        )),
                    })
                })
            }
            Err(ureq::Error::Status(401, resp)) => Err(Fetch::Unauthorized(error_info(resp))),
            Err(ureq::Error::Status(404, resp)) => Err(Fetch::Other(Error::ResourceNotFound {
                path: path.to_string(),
                detail: error_info(resp).detail,
            })),
            Err(e) => Err(Fetch::Other(http_error("resource", &url, e))),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn session(&mut self) -> Result<&Session, Error> {
        if self.session.is_none() {
            let session = self.handshake()?;
            self.handshakes += 1;
            self.session = Some(session);
        }
        self.session.as_ref().ok_or_else(|| Error::Malformed {
            step: "attest",
            url: self.base.clone(),
            reason: "no session".to_owned(),
        })
    }

    /// `auth` then `attest`.
    fn handshake(&self) -> Result<Session, Error> {
        // auth
        let url = self.url(protocol::AUTH_PATH);
        let body = serde_json::to_string(&protocol::auth_request(self.provider.tee())).map_err(
            |source| Error::Encode {
                step: "auth",
                source,
            },
        )?;
        let resp = self
            .http
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body)
            .map_err(|e| http_error("auth", &url, e))?;
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
        let jwk = self.key.jwk().clone();
        let report_data = binding::report_data(&challenge.nonce, &jwk);
        let evidence = self
            .provider
            .evidence(&report_data)
            .map_err(Error::Evidence)?;
        let url = self.url(protocol::ATTEST_PATH);
        let attestation =
            protocol::attest_request(&challenge.nonce, jwk, &evidence, self.init_data.as_deref())
                .map_err(|source| Error::Encode {
                step: "attest",
                source,
            })?;
        let body = serde_json::to_string(&attestation).map_err(|source| Error::Encode {
            step: "attest",
            source,
        })?;
        let resp = self
            .http
            .post(&url)
            .set("Content-Type", "application/json")
            .set(
                "Cookie",
                &format!("{}={}", protocol::SESSION_COOKIE, cookie.as_str()),
            )
            .send_string(&body)
            .map_err(|e| http_error("attest", &url, e))?;
        let text = read_body(resp, "attest", &url)?;
        let token: AttestResponse = serde_json::from_str(&text).map_err(|e| Error::Malformed {
            step: "attest",
            url: url.clone(),
            reason: format!("no token: {e}"),
        })?;
        Ok(Session {
            cookie,
            token: Zeroizing::new(token.token),
        })
    }
}

enum Fetch {
    Unauthorized(ErrorInformation),
    Other(Error),
}

/// Largest KBS answer we read.
const MAX_BODY: u64 = 16 * 1024 * 1024;

fn read_body(resp: ureq::Response, step: &'static str, url: &str) -> Result<String, Error> {
    use std::io::Read;
    let mut text = String::new();
    resp.into_reader()
        .take(MAX_BODY)
        .read_to_string(&mut text)
        .map_err(|e| Error::Malformed {
            step,
            url: url.to_owned(),
            reason: format!("reading the body: {e}"),
        })?;
    Ok(text)
}

/// The `kbs-session-id` value among the `Set-Cookie` headers.
fn session_cookie(resp: &ureq::Response) -> Option<Zeroizing<String>> {
    resp.all("set-cookie").into_iter().find_map(|header| {
        let pair = header.split(';').next()?.trim();
        let (name, value) = pair.split_once('=')?;
        (name.trim() == protocol::SESSION_COOKIE && !value.trim().is_empty())
            .then(|| Zeroizing::new(value.trim().to_owned()))
    })
}

/// The KBS error JSON of a failed answer, or the raw body when it is not one.
fn error_info(resp: ureq::Response) -> ErrorInformation {
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    serde_json::from_str::<ErrorInformation>(&text).unwrap_or_else(|_| ErrorInformation {
        error_type: format!("HTTP {status}"),
        detail: text.chars().take(512).collect(),
    })
}

fn http_error(step: &'static str, url: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::Status(status, resp) => {
            let info = error_info(resp);
            Error::Status {
                step,
                url: url.to_owned(),
                status,
                kind: info.error_type,
                detail: info.detail,
            }
        }
        ureq::Error::Transport(t) => Error::Unreachable {
            url: url.to_owned(),
            reason: t.to_string(),
        },
    }
}
