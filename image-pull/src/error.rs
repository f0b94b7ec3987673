//! Errors: every failure names the layer digest and what failed.

use std::io;

/// A boxed error from a [`crate::KeyProvider`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A layer that could not be unpacked, and why. Nothing of it is visible.
#[derive(Debug, thiserror::Error)]
#[error("layer {digest}: {failure}")]
pub struct LayerError {
    /// The layer's descriptor digest.
    pub digest: String,
    /// What failed.
    pub failure: Failure,
}

/// What failed while pulling one layer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A media type we do not know.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// A digest string we cannot use.
    #[error("bad digest {0:?} (want sha256:<64 hex> or sha512:<128 hex>)")]
    BadDigest(String),
    /// Malformed ocicrypt annotations or key material.
    #[error("bad encryption annotation: {0}")]
    BadAnnotation(String),
    /// No key to decrypt the layer (none configured, or the KBS had none).
    #[error("no key for layer: {0}")]
    NoKey(String),
    /// Keys were there, but none decrypted the layer's key.
    #[error("wrong key: {0}")]
    WrongKey(String),
    /// The blob ended before the descriptor's size.
    #[error("truncated blob: want {want} bytes, got {got}")]
    Truncated {
        /// Descriptor size.
        want: u64,
        /// Bytes received.
        got: u64,
    },
    /// The blob is longer than the descriptor's size.
    #[error("blob longer than its descriptor size of {want} bytes")]
    TooLong {
        /// Descriptor size.
        want: u64,
    },
    /// The blob's digest is not the descriptor's.
    #[error("blob digest mismatch: want {want} got {got}")]
    BlobDigest {
        /// Descriptor digest.
        want: String,
        /// Computed digest.
        got: String,
    },
    /// The ciphertext's HMAC is not the one in the public options.
    #[error("HMAC mismatch")]
    Hmac,
    /// The uncompressed tar's digest is not the config's `diff_id`.
    #[error("diff_id mismatch: want {want} got {got}")]
    DiffId {
        /// The image config's `diff_id`.
        want: String,
        /// Computed digest.
        got: String,
    },
    /// Reading the blob failed.
    #[error("reading blob: {0}")]
    Read(#[source] io::Error),
    /// Decompression or tar parsing failed (corrupt or not the media type).
    #[error("corrupt layer: {0}")]
    Corrupt(#[source] io::Error),
    /// A tar entry that would escape the layer root or that we refuse.
    #[error("unsafe tar entry {path:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as in the tar.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// The filesystem refused extended attributes (e.g. `trusted.*` without
    /// CAP_SYS_ADMIN, or a filesystem without xattrs).
    #[error("xattr {name} on {path:?} unsupported here: {source}")]
    XattrUnsupported {
        /// Entry path.
        path: String,
        /// Attribute name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path (relative to the layer root, or the staging/final dir).
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Failure {
    pub(crate) fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        Failure::Io {
            op,
            path: path.into(),
            source,
        }
    }
    pub(crate) fn unsafe_entry(path: &str, reason: impl Into<String>) -> Self {
        Failure::UnsafeEntry {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// An `io::Error` that carries a [`Failure`] through `Read` chains (decrypt, tar).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Carried(pub Failure);

/// Turns an `io::Error` coming out of the reader chain back into a failure.
pub(crate) fn from_chain(e: io::Error, fallback: fn(io::Error) -> Failure) -> Failure {
    if e.get_ref().is_some_and(|inner| inner.is::<Carried>()) {
        let kind = e.kind();
        return match e.into_inner().map(|inner| inner.downcast::<Carried>()) {
            Some(Ok(c)) => c.0,
            _ => fallback(kind.into()),
        };
    }
    fallback(e)
}
