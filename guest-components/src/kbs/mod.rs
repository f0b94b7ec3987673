//! The KBS client: Trustee's RCAR handshake (protocol 0.4.0), a session cache, and
//! resource retrieval with JWE unwrapping.
//!
//! [`service::KbsService`] is the implementation: thread-safe, one attestation shared by
//! every caller until the token expires, bounded retries, metrics and audit records (see
//! its module). [`KbsClient`] is a single-owner wrapper of it with the older `&mut self`
//! interface.
//!
//! All I/O is blocking (ureq); call it from a blocking thread in async code.

pub mod protocol;
pub mod service;

use std::time::Duration;

use kbs_types::{ErrorInformation, Tee};
use zeroize::Zeroizing;

use crate::error::{BoxError, Error};
use protocol::ResourcePath;
use service::{KbsService, KbsSettings};

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

/// Longest time one request may take (connect, send, answer), within the retry
/// policy's deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A KBS client for one owner: a [`KbsService`] behind the older `&mut self` interface.
pub struct KbsClient<E> {
    service: KbsService<E>,
    token: Option<Zeroizing<String>>,
}

impl<E> std::fmt::Debug for KbsClient<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbsClient")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<E: EvidenceProvider> KbsClient<E> {
    /// A client for the KBS at `kbs_url` (`http://host:port` or `https://...`, optionally
    /// with a path prefix), with the default settings. No request is made yet.
    pub fn new(kbs_url: &str, provider: E) -> Result<Self, Error> {
        Self::with_settings(KbsSettings::new(kbs_url), provider)
    }

    /// A client with these settings.
    pub fn with_settings(settings: KbsSettings, provider: E) -> Result<Self, Error> {
        Ok(Self {
            service: KbsService::new(settings, provider)?,
            token: None,
        })
    }

    /// Sends this initdata document (TOML) as `init-data` in `attest`.
    pub fn with_init_data(mut self, toml: impl Into<String>) -> Self {
        self.service.set_init_data(Some(toml.into()));
        self
    }

    /// The service behind this client.
    pub fn service(&self) -> &KbsService<E> {
        &self.service
    }

    /// The KBS base URL.
    pub fn kbs_url(&self) -> &str {
        self.service.kbs_url()
    }

    /// How many handshakes this client has run (for callers' metrics and for tests).
    pub fn handshakes(&self) -> u64 {
        self.service.handshakes()
    }

    /// Runs the handshake now, replacing any session.
    pub fn attest(&mut self) -> Result<(), Error> {
        self.service.reattest()
    }

    /// The attestation token of the current session (runs the handshake if there is none).
    pub fn token(&mut self) -> Result<&str, Error> {
        let token = self.token.insert(self.service.token()?);
        Ok(token.as_str())
    }

    /// Fetches and decrypts `kbs:///<repo>/<type>/<tag>`.
    pub fn get_resource(&mut self, uri: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.service.get_resource(uri)
    }

    /// Fetches and decrypts the resource at `path`.
    pub fn get_resource_path(&mut self, path: &ResourcePath) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.service.get_resource_path(path)
    }
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
