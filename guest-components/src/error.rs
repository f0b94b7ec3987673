//! Errors of the KBS client: each names what failed and where, so a refusal is never
//! mistaken for a network fault (and nothing is retried silently to hide it).

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

    /// A resource URI is not `kbs:///<repo>/<type>/<tag>`.
    #[error("invalid KBS resource URI {uri:?}: {reason}")]
    BadResourceUri {
        /// The URI as given.
        uri: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Nothing answered at the KBS URL (connection refused, DNS, TLS, timeout).
    #[error("KBS unreachable at {url}: {reason}")]
    Unreachable {
        /// The full request URL.
        url: String,
        /// The transport error.
        reason: String,
    },

    /// The KBS still answered 401 after a fresh handshake.
    #[error("KBS refused {url} with 401 even after a fresh attestation: {kind}: {detail}")]
    UnauthorizedAfterReauth {
        /// The full request URL.
        url: String,
        /// The KBS error `type`.
        kind: String,
        /// The KBS error `detail`.
        detail: String,
    },

    /// The resource does not exist on the KBS.
    #[error("KBS resource {path} not found (404): {detail}")]
    ResourceNotFound {
        /// The resource path, `<repo>/<type>/<tag>`.
        path: String,
        /// The KBS error `detail`.
        detail: String,
    },

    /// Any other non-success answer of the KBS (400, 401 on `auth`/`attest`, 403, 500...).
    #[error("KBS {step} at {url} answered {status}: {kind}: {detail}")]
    Status {
        /// `auth`, `attest` or `resource`.
        step: &'static str,
        /// The full request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The KBS error `type` (the whole body when it was not KBS error JSON).
        kind: String,
        /// The KBS error `detail`.
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

    /// The attester could not produce evidence.
    #[error("attester: {0}")]
    Evidence(#[source] BoxError),

    /// A resource could not be decrypted (malformed JWE, unsupported algorithm, wrong key,
    /// tampering). No plaintext is returned.
    #[error("KBS resource {path}: {source}")]
    Resource {
        /// The resource path, `<repo>/<type>/<tag>`.
        path: String,
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
