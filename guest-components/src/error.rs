//! Errors of the KBS client: each names the step that failed (`config`, `connect`, `auth`,
//! `attest`, `resource`, `decrypt`), the URL and what the KBS said (its error `type` and
//! `detail`), so a refusal is never mistaken for a network fault. [`Error::reason`] gives
//! a short stable label for metrics.

use std::time::Duration;

/// Boxed error of an [`crate::EvidenceProvider`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the KBS client can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The KBS URL given to the client is not `http(s)://host[:port][/prefix]`.
    #[error("invalid KBS URL {url:?}: {reason}")]
    BadKbsUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The configured KBS CA certificate cannot be used.
    #[error("invalid KBS CA certificate: {reason}")]
    BadCaCert {
        /// Why it was refused.
        reason: String,
    },

    /// A resource URI is not `kbs:///<repo>/<type>/<tag>`.
    #[error("invalid KBS resource URI {uri:?}: {reason}")]
    BadResourceUri {
        /// The URI as given.
        uri: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Nothing answered at the KBS URL (connection refused, DNS, TLS, reset, timeout),
    /// after the retries the policy allows.
    #[error("cannot connect to the KBS at {url} ({step}) after {attempts} attempt(s): {reason}")]
    Unreachable {
        /// `auth`, `attest` or `resource`: the request that could not be made.
        step: &'static str,
        /// The full request URL.
        url: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last transport error.
        reason: String,
    },

    /// The retry policy's total deadline passed before the KBS answered usefully.
    #[error(
        "KBS {step} at {url}: no answer within the {deadline:?} deadline \
         ({attempts} attempt(s)); last error: {last}"
    )]
    Deadline {
        /// `auth`, `attest` or `resource`.
        step: &'static str,
        /// The full request URL.
        url: String,
        /// The deadline of the whole operation.
        deadline: Duration,
        /// How many requests were made.
        attempts: u32,
        /// The last error seen (a timeout, a refused connection, a 5xx answer).
        last: String,
    },

    /// The resource does not exist on the KBS (HTTP 404, or Trustee's
    /// `401 PluginInternalError` saying "not found").
    #[error("KBS resource {path} not found at {url} ({status}): {kind}: {detail}")]
    NotFound {
        /// The resource path, `<repo>/<type>/<tag>`.
        path: String,
        /// The full request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The KBS error `type`.
        kind: String,
        /// The KBS error `detail`.
        detail: String,
    },

    /// The KBS's resource policy refused this resource to this (attested) guest.
    #[error("KBS resource {path} denied by policy at {url} ({status}): {kind}: {detail}")]
    Denied {
        /// The resource path, `<repo>/<type>/<tag>`.
        path: String,
        /// The full request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The KBS error `type`.
        kind: String,
        /// The KBS error `detail`.
        detail: String,
    },

    /// The KBS refused the session or token (`TokenNotFound`, `TokenVerifierError`, an
    /// expired or unknown cookie) although it came from a handshake made for this request.
    #[error(
        "KBS resource at {url} refused a freshly attested session ({status}): {kind}: {detail}"
    )]
    SessionRejected {
        /// The full request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The KBS error `type`.
        kind: String,
        /// The KBS error `detail`.
        detail: String,
    },

    /// The KBS's resource backend failed (Trustee: `401 PluginInternalError`). Trustee
    /// reports a missing resource this way too when its detail does not say so.
    #[error(
        "KBS resource {path} at {url}: the KBS's resource plugin failed ({status}): \
         {kind}: {detail} (a missing resource is reported like this too)"
    )]
    ResourceBackend {
        /// The resource path, `<repo>/<type>/<tag>`.
        path: String,
        /// The full request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The KBS error `type`.
        kind: String,
        /// The KBS error `detail`.
        detail: String,
    },

    /// Any other non-success answer of the KBS (400, 401 on `auth`/`attest`, 5xx after the
    /// retries...).
    #[error("KBS {step} at {url} answered {status} after {attempts} attempt(s): {kind}: {detail}")]
    Status {
        /// `auth`, `attest` or `resource`.
        step: &'static str,
        /// The full request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// How many times the request was made (5xx answers are retried).
        attempts: u32,
        /// The KBS error `type` (`HTTP <status>` when the body was not KBS error JSON).
        kind: String,
        /// The KBS error `detail` (the start of the body when it was not KBS error JSON).
        detail: String,
    },

    /// The KBS answered 200 with a body we cannot use.
    #[error("KBS {step} at {url}: malformed answer: {reason}")]
    Malformed {
        /// `auth`, `attest` or `resource`.
        step: &'static str,
        /// The full request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },

    /// The attester could not produce evidence (step `attest`, before any request).
    #[error("attest: the attester could not produce evidence: {0}")]
    Evidence(#[source] BoxError),

    /// A resource could not be decrypted (malformed JWE, unsupported algorithm, wrong key,
    /// tampering). No plaintext is returned.
    #[error("decrypt: KBS resource {path} from {url}: {source}")]
    Resource {
        /// The resource path, `<repo>/<type>/<tag>`.
        path: String,
        /// The full request URL.
        url: String,
        /// The decryption error.
        #[source]
        source: JweError,
    },

    /// A request could not be encoded (should not happen).
    #[error("encoding the {step} request: {source}")]
    Encode {
        /// `auth` or `attest`.
        step: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A short, stable label of the cause, for metrics and audit records: `config`,
    /// `bad_uri`, `unreachable`, `deadline`, `not_found`, `denied`, `unauthorized`,
    /// `rejected` (evidence refused at `attest`), `kbs_backend`, `http_5xx`, `http_4xx`,
    /// `malformed`, `evidence`, `decrypt`, `internal`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BadKbsUrl { .. } | Error::BadCaCert { .. } => "config",
            Error::BadResourceUri { .. } => "bad_uri",
            Error::Unreachable { .. } => "unreachable",
            Error::Deadline { .. } => "deadline",
            Error::NotFound { .. } => "not_found",
            Error::Denied { .. } => "denied",
            Error::SessionRejected { .. } => "unauthorized",
            Error::ResourceBackend { .. } => "kbs_backend",
            Error::Status { step, status, .. } => match (*step, *status) {
                (_, 500..=599) => "http_5xx",
                ("attest", 401 | 403) => "rejected",
                (_, 401 | 403) => "unauthorized",
                _ => "http_4xx",
            },
            Error::Malformed { .. } => "malformed",
            Error::Evidence(_) => "evidence",
            Error::Resource { .. } => "decrypt",
            Error::Encode { .. } => "internal",
        }
    }

    /// The step that failed: `config`, `connect` (nothing answered), `auth`, `attest`,
    /// `resource` or `decrypt`.
    pub fn step(&self) -> &'static str {
        match self {
            Error::BadKbsUrl { .. } | Error::BadCaCert { .. } => "config",
            Error::Unreachable { .. } => "connect",
            Error::Deadline { step, .. }
            | Error::Status { step, .. }
            | Error::Malformed { step, .. }
            | Error::Encode { step, .. } => step,
            Error::BadResourceUri { .. }
            | Error::NotFound { .. }
            | Error::Denied { .. }
            | Error::SessionRejected { .. }
            | Error::ResourceBackend { .. } => "resource",
            Error::Evidence(_) => "attest",
            Error::Resource { .. } => "decrypt",
        }
    }
}

/// Why a JWE could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    /// Not the flattened JSON serialisation, or a field is not base64url / JSON.
    #[error("malformed JWE: {0}")]
    Malformed(String),
    /// A header algorithm we do not accept.
    #[error("unsupported JWE {field} {value:?} (want {want:?})")]
    Unsupported {
        /// `alg`, `enc`, `epk.crv`...
        field: &'static str,
        /// What the header said.
        value: String,
        /// What we accept.
        want: &'static str,
    },
    /// AES key unwrap failed: the JWE was encrypted to another key, or tampered with.
    #[error("key unwrap failed: encrypted to another TEE key, or tampered with")]
    KeyUnwrap,
    /// AES-GCM authentication failed: the ciphertext, tag, IV or header was altered.
    #[error("content decryption failed: ciphertext, tag, IV or protected header altered")]
    Decrypt,
    /// Encryption failed (only [`crate::jwe::encrypt`]).
    #[error("JWE encryption: {0}")]
    Encrypt(String),
}
