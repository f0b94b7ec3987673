//! CoCo sealed secrets: `sealed.<header>.<payload>.<signature>`, a JWS (compact form, ES256)
//! whose payload names where the secret lives.
//!
//! A sealed secret travels through the untrusted control plane (a Kubernetes secret, an env
//! value) and is opened only in the guest. [`SealedSecret::parse`] splits and decodes it;
//! [`SealedSecret::unseal`] first checks the ES256 signature with the P-256 public JWK named by
//! the header's `kid` (a KBS resource URI, fetched through the [`ResourceSource`], or a file
//! name under [`UnsealOptions::key_dir`]), then checks the payload version and fetches the
//! secret: a `vault` secret with provider `kbs` *is* the KBS resource it names. `envelope`
//! secrets need a cloud KMS (aliyun, aws, ehsm) that this guest cannot reach, and are refused
//! with a clear error. Verification is on by default; turning it off ([`UnsealOptions::verify`]
//! `false`) also accepts the unparsable placeholder headers upstream's tests use. Plaintext is
//! only ever held in [`Zeroizing`] buffers and no error carries it.
//!
//! Wire format: confidential-containers/guest-components, `confidential-data-hub/docs/SEALED_SECRET.md`
//! and `confidential-data-hub/hub/src/secret/mod.rs`
//! (<https://github.com/confidential-containers/guest-components/tree/main/confidential-data-hub>);
//! summary in `shared/reference/confidential.md` ("Sealed secrets").

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::PublicKey;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::kbs::protocol::{jose, ResourcePath, RESOURCE_URI_SCHEME};
use crate::resource::ResourceSource;

/// The wire constants of sealed secrets, from upstream's confidential-data-hub
/// (`hub/src/secret/mod.rs`, `docs/SEALED_SECRET.md`,
/// <https://github.com/confidential-containers/guest-components/blob/main/confidential-data-hub/docs/SEALED_SECRET.md>).
pub mod wire {
    /// Every sealed secret starts with this.
    pub const PREFIX: &str = "sealed.";
    /// The only payload `version`.
    pub const VERSION: &str = "0.1.0";
    /// The only signature algorithm (JWS `alg`): ECDSA P-256 SHA-256, signature `r‖s`.
    pub const ALG_ES256: &str = "ES256";
    /// JWS `alg` of unsigned tokens: always refused.
    pub const ALG_NONE: &str = "none";
    /// ES256 signature length: `r‖s`, 32 bytes each.
    pub const ES256_SIGNATURE_LEN: usize = 64;
    /// Payload `type` of a pointer to a secret stored elsewhere.
    pub const TYPE_VAULT: &str = "vault";
    /// Payload `type` of a KMS-wrapped secret.
    pub const TYPE_ENVELOPE: &str = "envelope";
    /// The vault provider served here: the KBS.
    pub const PROVIDER_KBS: &str = "kbs";
    /// Where verification keys named by a plain-file `kid` live (upstream's
    /// `SIGNING_CREDENTIALS_PATH`, `CDH_BASE_DIR` + `/sealed-secret`).
    pub const DEFAULT_KEY_DIR: &str = "/run/confidential-containers/cdh/sealed-secret";
    /// The largest verification-key file read (a JWK is a few hundred bytes).
    pub const MAX_KEY_FILE_LEN: usize = 64 * 1024;
}

/// Whether `s` is a sealed secret (starts with `sealed.`); says nothing about its validity.
pub fn is_sealed(s: &str) -> bool {
    s.starts_with(wire::PREFIX)
}

/// Why a sealed secret could not be opened. No variant carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    /// The text does not start with `sealed.`.
    #[error("not a sealed secret: it does not start with {:?}", wire::PREFIX)]
    NotSealed,

    /// Not `sealed.<h>.<p>.<s>` in base64url, or a payload that is not the expected JSON.
    #[error("malformed sealed secret: {0}")]
    Malformed(String),

    /// The JWS header cannot be used for verification (not base64url JSON, no `kid`...).
    #[error("malformed sealed-secret header: {0}")]
    BadHeader(String),

    /// The header says `alg: none`.
    #[error("sealed-secret header alg \"none\" refused: the secret must be signed with ES256")]
    AlgNone,

    /// The header names an algorithm other than ES256.
    #[error("unsupported sealed-secret signature algorithm {0:?} (want \"ES256\")")]
    UnsupportedAlg(String),

    /// A `kid` that is neither a KBS URI nor a plain file name.
    #[error("invalid sealed-secret kid {kid:?}: {reason}")]
    BadKid {
        /// The `kid` as given.
        kid: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The verification key file could not be read.
    #[error("reading the sealed-secret verification key {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The verification key could not be fetched from the KBS.
    #[error("fetching the sealed-secret verification key {kid}: {source}")]
    KeyFetch {
        /// The `kid` (a KBS resource URI).
        kid: String,
        /// The KBS error (boxed: it is large).
        #[source]
        source: Box<crate::Error>,
    },

    /// The verification key is not a P-256 EC JWK.
    #[error("sealed-secret verification key {kid:?}: {reason}")]
    BadKey {
        /// The `kid`.
        kid: String,
        /// What was wrong.
        reason: String,
    },

    /// The ES256 signature does not verify under the key named by `kid`.
    #[error("sealed-secret signature does not verify with key {kid:?}")]
    BadSignature {
        /// The `kid`.
        kid: String,
    },

    /// A payload `version` other than `0.1.0`.
    #[error("unsupported sealed-secret version {0:?} (want \"0.1.0\")")]
    Version(String),

    /// A payload `type` other than `vault` or `envelope`.
    #[error("unknown sealed-secret type {0:?} (want \"vault\" or \"envelope\")")]
    UnknownType(String),

    /// A vault secret whose provider is not `kbs`.
    #[error("vault secrets: provider {0:?} not supported (only \"kbs\")")]
    VaultProvider(String),

    /// Envelope secrets need a cloud KMS this guest cannot reach.
    #[error("envelope secrets: provider {0} not supported (no KMS provider in this guest)")]
    EnvelopeProvider(String),

    /// The secret itself could not be fetched from the KBS.
    #[error("fetching the sealed secret's resource {name}: {source}")]
    Fetch {
        /// The resource URI.
        name: String,
        /// The KBS error (boxed: it is large).
        #[source]
        source: Box<crate::Error>,
    },
}

/// How to unseal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsealOptions {
    /// Check the ES256 signature (default `true`). `false` matches upstream's
    /// `SKIP_SEALED_SECRET_VERIFICATION=true`: the header and signature are then ignored.
    pub verify: bool,
    /// Where a plain-file `kid` is looked up (default [`wire::DEFAULT_KEY_DIR`]).
    pub key_dir: PathBuf,
}

impl Default for UnsealOptions {
    fn default() -> Self {
        Self {
            verify: true,
            key_dir: PathBuf::from(wire::DEFAULT_KEY_DIR),
        }
    }
}

/// The JWS protected header, as far as we read it.
#[derive(Debug, Clone, Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    /// RFC 7797: `false` would mean an unencoded payload, which sealed secrets never use.
    #[serde(default = "default_b64")]
    b64: bool,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

fn default_b64() -> bool {
    true
}

/// A parsed (not yet verified) sealed secret.
#[derive(Clone)]
pub struct SealedSecret {
    /// The decoded header, or why it could not be decoded (only fatal when verifying).
    header: Result<Header, String>,
    /// `<h>.<p>` exactly as received: what the signature covers.
    signing_input: String,
    /// The signature section, base64url as received (decoded only when verifying).
    signature: String,
    version: String,
    kind: String,
    /// The payload object (names and metadata, never the secret itself).
    payload: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("kid", &self.kid())
            .field("version", &self.version)
            .field("type", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The fields of a `vault` payload we use.
#[derive(Deserialize)]
struct Vault {
    name: String,
    provider: String,
}

/// The verification key JWK: `d` (a private JWK) is accepted and ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

impl SealedSecret {
    /// Splits `sealed.<h>.<p>.<s>` and decodes the payload. Surrounding whitespace (a trailing
    /// newline from a file) is ignored. The header is decoded too, but a bad header only fails
    /// [`Self::unseal`] when verifying.
    pub fn parse(text: &str) -> Result<Self, SealedError> {
        let text = text.trim();
        let rest = text
            .strip_prefix(wire::PREFIX)
            .ok_or(SealedError::NotSealed)?;
        let sections: Vec<&str> = rest.split('.').collect();
        let [h, p, s] = sections.as_slice() else {
            return Err(SealedError::Malformed(format!(
                "{} dot-separated sections after \"sealed.\", want 3 (header.payload.signature)",
                sections.len()
            )));
        };
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|e| {
            SealedError::Malformed(format!("payload is not base64url without padding: {e}"))
        })?;
        let value: serde_json::Value = serde_json::from_slice(&payload)
            .map_err(|e| SealedError::Malformed(format!("payload is not JSON: {e}")))?;
        let serde_json::Value::Object(payload) = value else {
            return Err(SealedError::Malformed(
                "payload is not a JSON object".to_owned(),
            ));
        };
        let field = |name: &str| -> Result<String, SealedError> {
            match payload.get(name) {
                Some(serde_json::Value::String(v)) => Ok(v.clone()),
                Some(_) => Err(SealedError::Malformed(format!(
                    "payload field {name:?} is not a string"
                ))),
                None => Err(SealedError::Malformed(format!(
                    "payload has no {name:?} field"
                ))),
            }
        };
        let version = field("version")?;
        let kind = field("type")?;
        Ok(Self {
            header: decode_header(h),
            signing_input: format!("{h}.{p}"),
            signature: (*s).to_owned(),
            version,
            kind,
            payload,
        })
    }

    /// The header's `kid` (empty if the header has none or could not be decoded).
    pub fn kid(&self) -> &str {
        self.header
            .as_ref()
            .ok()
            .and_then(|h| h.kid.as_deref())
            .unwrap_or("")
    }

    /// The payload `version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The payload `type` (`vault`, `envelope`...).
    pub fn secret_type(&self) -> &str {
        &self.kind
    }

    /// Verifies the signature (unless `opts.verify` is off), checks the version, and
    /// returns the secret.
    pub fn unseal(
        &self,
        source: &dyn ResourceSource,
        opts: &UnsealOptions,
    ) -> Result<Zeroizing<Vec<u8>>, SealedError> {
        if opts.verify {
            self.verify(source, &opts.key_dir)?;
        }
        if self.version != wire::VERSION {
            return Err(SealedError::Version(self.version.clone()));
        }
        match self.kind.as_str() {
            wire::TYPE_VAULT => self.unseal_vault(source),
            wire::TYPE_ENVELOPE => {
                let provider = match self.payload.get("provider") {
                    Some(serde_json::Value::String(p)) => p.clone(),
                    _ => "(none)".to_owned(),
                };
                Err(SealedError::EnvelopeProvider(provider))
            }
            other => Err(SealedError::UnknownType(other.to_owned())),
        }
    }

    fn unseal_vault(&self, source: &dyn ResourceSource) -> Result<Zeroizing<Vec<u8>>, SealedError> {
        let vault: Vault = serde_json::from_value(serde_json::Value::Object(self.payload.clone()))
            .map_err(|e| SealedError::Malformed(format!("vault payload: {e}")))?;
        if vault.provider != wire::PROVIDER_KBS {
            return Err(SealedError::VaultProvider(vault.provider));
        }
        let fetch = |source: crate::Error| SealedError::Fetch {
            name: vault.name.clone(),
            source: Box::new(source),
        };
        ResourcePath::from_uri(&vault.name).map_err(fetch)?;
        source.get_resource(&vault.name).map_err(fetch)
    }

    /// Checks the ES256 signature over `<h>.<p>` with the key named by `kid`.
    fn verify(&self, source: &dyn ResourceSource, key_dir: &Path) -> Result<(), SealedError> {
        let header = self
            .header
            .as_ref()
            .map_err(|e| SealedError::BadHeader(e.clone()))?;
        if !header.b64 {
            return Err(SealedError::BadHeader(
                "\"b64\": false (unencoded payload) is not supported".to_owned(),
            ));
        }
        if let Some(crit) = &header.crit {
            if let Some(unknown) = crit.iter().find(|c| c.as_str() != "b64") {
                return Err(SealedError::BadHeader(format!(
                    "unsupported critical header parameter {unknown:?}"
                )));
            }
        }
        match header.alg.as_deref() {
            Some(wire::ALG_ES256) => {}
            Some(alg) if alg.eq_ignore_ascii_case(wire::ALG_NONE) => {
                return Err(SealedError::AlgNone)
            }
            Some(alg) => return Err(SealedError::UnsupportedAlg(alg.to_owned())),
            None => return Err(SealedError::BadHeader("no \"alg\"".to_owned())),
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| SealedError::BadHeader("no \"kid\"".to_owned()))?;
        let public = verification_key(kid, source, key_dir)?;
        let signature = URL_SAFE_NO_PAD.decode(&self.signature).map_err(|e| {
            SealedError::Malformed(format!("signature is not base64url without padding: {e}"))
        })?;
        if signature.len() != wire::ES256_SIGNATURE_LEN {
            return Err(SealedError::Malformed(format!(
                "signature is {} bytes, want {} (ES256 r||s)",
                signature.len(),
                wire::ES256_SIGNATURE_LEN
            )));
        }
        let bad = || SealedError::BadSignature {
            kid: kid.to_owned(),
        };
        let signature = Signature::from_slice(&signature).map_err(|_| bad())?;
        VerifyingKey::from(&public)
            .verify(self.signing_input.as_bytes(), &signature)
            .map_err(|_| bad())
    }
}

fn decode_header(h: &str) -> Result<Header, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|e| format!("not base64url without padding: {e}"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("not a JSON object with string alg/kid: {e}"))
}

/// The P-256 public key named by `kid`: a KBS resource (`kbs:///...`) or a file in `key_dir`.
fn verification_key(
    kid: &str,
    source: &dyn ResourceSource,
    key_dir: &Path,
) -> Result<PublicKey, SealedError> {
    let bytes = if kid.starts_with(RESOURCE_URI_SCHEME) {
        let fetch = |source| SealedError::KeyFetch {
            kid: kid.to_owned(),
            source: Box::new(source),
        };
        ResourcePath::from_uri(kid).map_err(fetch)?;
        source.get_resource(kid).map_err(fetch)?
    } else {
        read_key_file(kid, key_dir)?
    };
    let bad = |reason: String| SealedError::BadKey {
        kid: kid.to_owned(),
        reason,
    };
    let jwk: Jwk = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not a JWK with kty, crv, x, y: {e}")))?;
    if jwk.kty != jose::KTY_EC {
        return Err(bad(format!("kty {:?}, want \"EC\"", jwk.kty)));
    }
    crate::tee_key::public_key_from_coordinates(&jwk.crv, &jwk.x, &jwk.y).map_err(bad)
}

/// Reads `key_dir/<kid>`; `kid` must be a plain file name.
fn read_key_file(kid: &str, key_dir: &Path) -> Result<Zeroizing<Vec<u8>>, SealedError> {
    let bad = |reason| SealedError::BadKid {
        kid: kid.to_owned(),
        reason,
    };
    if kid.is_empty() {
        return Err(bad("empty"));
    }
    if kid.contains('/') || kid.contains('\\') || kid.contains("..") || kid == "." {
        return Err(bad(
            "a key file name must not contain '/', '\\' or '..' (or use a kbs:/// URI)",
        ));
    }
    if kid.contains('\0') || kid.chars().any(char::is_control) {
        return Err(bad("control characters"));
    }
    let path = key_dir.join(kid);
    let io = |source| SealedError::KeyFile {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(io)?;
    // Capacity up front: the buffer is never reallocated, so no unzeroized copy is left.
    let mut bytes = Zeroizing::new(Vec::with_capacity(wire::MAX_KEY_FILE_LEN + 1));
    file.take(wire::MAX_KEY_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > wire::MAX_KEY_FILE_LEN {
        return Err(SealedError::BadKey {
            kid: kid.to_owned(),
            reason: format!("key file larger than {} bytes", wire::MAX_KEY_FILE_LEN),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const SECRET: &[u8] = b"the-very-secret-value-42";
    const SECRET_URI: &str = "kbs:///default/sealed/one";
    const KEY_URI: &str = "kbs:///default/signing/key";

    /// A KBS stand-in: a map of URIs, and the list of URIs asked for.
    #[derive(Default)]
    struct FakeKbs {
        resources: HashMap<String, Vec<u8>>,
        asked: Mutex<Vec<String>>,
    }

    impl FakeKbs {
        fn with(mut self, uri: &str, bytes: &[u8]) -> Self {
            self.resources.insert(uri.to_owned(), bytes.to_vec());
            self
        }
        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl ResourceSource for FakeKbs {
        fn get_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, crate::Error> {
            self.asked.lock().unwrap().push(uri.to_owned());
            self.resources
                .get(uri)
                .map(|b| Zeroizing::new(b.clone()))
                .ok_or_else(|| crate::Error::NotFound {
                    path: uri.to_owned(),
                    url: "http://kbs/".to_owned(),
                    status: 404,
                    kind: "ResourceNotFound".to_owned(),
                    detail: "no such resource".to_owned(),
                })
        }
    }

    /// A temporary key directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cocoon-sealed-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The public JWK (`with_d`: the private one) of `key`, as upstream's `secret keygen` writes.
    fn jwk(key: &SigningKey, with_d: bool) -> Vec<u8> {
        let point = key.verifying_key().to_encoded_point(false);
        let mut v = serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(point.x().unwrap()),
            "y": b64(point.y().unwrap()),
        });
        if with_d {
            v["d"] = b64(&key.to_bytes()).into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    /// Seals like upstream's `secret seal`: header `{"b64":true,"alg":..,"kid":..}`.
    fn seal_raw(key: &SigningKey, header: &serde_json::Value, payload: &[u8]) -> String {
        let h = b64(&serde_json::to_vec(header).unwrap());
        let p = b64(payload);
        let sig: Signature = key.sign(format!("{h}.{p}").as_bytes());
        format!("sealed.{h}.{p}.{}", b64(&sig.to_bytes()))
    }

    fn seal(key: &SigningKey, kid: &str, payload: &serde_json::Value) -> String {
        let header = serde_json::json!({"b64": true, "alg": "ES256", "kid": kid});
        seal_raw(key, &header, &serde_json::to_vec(payload).unwrap())
    }

    fn vault(name: &str) -> serde_json::Value {
        serde_json::json!({
            "version": "0.1.0",
            "type": "vault",
            "provider": "kbs",
            "name": name,
            "provider_settings": {},
            "annotations": {},
        })
    }

    fn key() -> SigningKey {
        SigningKey::random(&mut rand_core::OsRng)
    }

    fn opts(dir: &TempDir) -> UnsealOptions {
        UnsealOptions {
            key_dir: dir.0.clone(),
            ..UnsealOptions::default()
        }
    }

    fn unseal(text: &str, kbs: &FakeKbs, opts: &UnsealOptions) -> Result<Vec<u8>, SealedError> {
        SealedSecret::parse(text)?
            .unseal(kbs, opts)
            .map(|s| s.to_vec())
    }

    /// No error message ever shows the secret.
    fn err(text: &str, kbs: &FakeKbs, opts: &UnsealOptions) -> SealedError {
        let e = unseal(text, kbs, opts).unwrap_err();
        assert!(!e.to_string().contains("very-secret"), "{e}");
        e
    }

    #[test]
    fn defaults() {
        let o = UnsealOptions::default();
        assert!(o.verify);
        assert_eq!(
            o.key_dir,
            Path::new("/run/confidential-containers/cdh/sealed-secret")
        );
        assert!(is_sealed("sealed.a.b.c"));
        assert!(!is_sealed("kbs:///a/b/c"));
        assert!(!is_sealed(" sealed.a.b.c"));
    }

    #[test]
    fn vault_with_kid_file() {
        let dir = TempDir::new();
        let k = key();
        std::fs::write(dir.0.join("my-key"), jwk(&k, false)).unwrap();
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        let text = seal(&k, "my-key", &vault(SECRET_URI));
        let s = SealedSecret::parse(&text).unwrap();
        assert_eq!(s.kid(), "my-key");
        assert_eq!(s.version(), "0.1.0");
        assert_eq!(s.secret_type(), "vault");
        assert_eq!(&*s.unseal(&kbs, &opts(&dir)).unwrap(), SECRET);
        assert_eq!(kbs.asked(), [SECRET_URI]);
        // Debug shows neither payload names nor secret.
        assert!(!format!("{s:?}").contains("sealed/one"));
        // A trailing newline (a secret read from a file) is fine.
        assert_eq!(
            unseal(&format!("{text}\n"), &kbs, &opts(&dir)).unwrap(),
            SECRET
        );
    }

    #[test]
    fn vault_with_kid_kbs_uri_and_private_jwk() {
        let k = key();
        let kbs = FakeKbs::default()
            .with(SECRET_URI, SECRET)
            .with(KEY_URI, &jwk(&k, true));
        let text = seal(&k, KEY_URI, &vault(SECRET_URI));
        let dir = TempDir::new();
        assert_eq!(unseal(&text, &kbs, &opts(&dir)).unwrap(), SECRET);
        assert_eq!(kbs.asked(), [KEY_URI, SECRET_URI]);
    }

    #[test]
    fn upstream_header_shape_parses() {
        // What jose-jws' `Protected` serialises for upstream's `secret seal`.
        let h = b64(br#"{"b64":true,"alg":"ES256","kid":"kbs:///default/signing/key"}"#);
        let p = b64(&serde_json::to_vec(&vault(SECRET_URI)).unwrap());
        let s = SealedSecret::parse(&format!("sealed.{h}.{p}.{}", b64(&[1; 64]))).unwrap();
        assert_eq!(s.kid(), KEY_URI);
    }

    #[test]
    fn bad_signature() {
        let dir = TempDir::new();
        let (k, other) = (key(), key());
        std::fs::write(dir.0.join("k"), jwk(&k, false)).unwrap();
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        // Signed by another key.
        let e = err(&seal(&other, "k", &vault(SECRET_URI)), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("signature does not verify"), "{e}");
        // Payload swapped after signing.
        let good = seal(&k, "k", &vault(SECRET_URI));
        let parts: Vec<&str> = good.split('.').collect();
        let p2 = b64(&serde_json::to_vec(&vault("kbs:///default/sealed/two")).unwrap());
        let tampered = format!("sealed.{}.{p2}.{}", parts[1], parts[3]);
        let e = err(&tampered, &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::BadSignature { .. }), "{e}");
        // A flipped signature byte.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
        sig[10] ^= 1;
        let flipped = format!("sealed.{}.{}.{}", parts[1], parts[2], b64(&sig));
        let e = err(&flipped, &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::BadSignature { .. }), "{e}");
        // A truncated signature.
        let short = format!("sealed.{}.{}.{}", parts[1], parts[2], b64(&sig[..63]));
        let e = err(&short, &kbs, &opts(&dir));
        assert!(e.to_string().contains("63 bytes, want 64"), "{e}");
        // Nothing was fetched.
        assert!(kbs.asked().is_empty());
    }

    #[test]
    fn unknown_kid_file_and_kid_uri() {
        let dir = TempDir::new();
        let k = key();
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        let e = err(&seal(&k, "missing", &vault(SECRET_URI)), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::KeyFile { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
        let e = err(&seal(&k, KEY_URI, &vault(SECRET_URI)), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::KeyFetch { .. }), "{e}");
        let e = err(
            &seal(&k, "kbs:///only/two", &vault(SECRET_URI)),
            &kbs,
            &opts(&dir),
        );
        assert!(matches!(e, SealedError::KeyFetch { .. }), "{e}");
    }

    #[test]
    fn kid_path_traversal() {
        let dir = TempDir::new();
        let k = key();
        // A valid key one level up must not be reachable.
        let inner = dir.0.join("keys");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(dir.0.join("outside"), jwk(&k, false)).unwrap();
        let o = UnsealOptions {
            key_dir: inner,
            ..UnsealOptions::default()
        };
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        for kid in [
            "../outside",
            "..",
            ".",
            "a/b",
            "/etc/passwd",
            "",
            "x\\..\\y",
        ] {
            let e = err(&seal(&k, kid, &vault(SECRET_URI)), &kbs, &o);
            assert!(matches!(e, SealedError::BadKid { .. }), "{kid}: {e}");
        }
    }

    #[test]
    fn bad_keys() {
        let dir = TempDir::new();
        let k = key();
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        std::fs::write(
            dir.0.join("rsa"),
            br#"{"kty":"RSA","crv":"P-256","x":"AA","y":"AA"}"#,
        )
        .unwrap();
        std::fs::write(dir.0.join("junk"), b"not json").unwrap();
        let p384 = String::from_utf8(jwk(&k, false))
            .unwrap()
            .replace("P-256", "P-384");
        std::fs::write(dir.0.join("p384"), p384).unwrap();
        std::fs::write(dir.0.join("big"), vec![b' '; wire::MAX_KEY_FILE_LEN + 1]).unwrap();
        for kid in ["rsa", "junk", "p384", "big"] {
            let e = err(&seal(&k, kid, &vault(SECRET_URI)), &kbs, &opts(&dir));
            assert!(matches!(e, SealedError::BadKey { .. }), "{kid}: {e}");
        }
    }

    #[test]
    fn wrong_version() {
        let dir = TempDir::new();
        let k = key();
        std::fs::write(dir.0.join("k"), jwk(&k, false)).unwrap();
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        let mut payload = vault(SECRET_URI);
        payload["version"] = "0.2.0".into();
        let e = err(&seal(&k, "k", &payload), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::Version(_)), "{e}");
        assert!(e.to_string().contains("\"0.2.0\""), "{e}");
    }

    #[test]
    fn envelope_unknown_type_and_other_providers() {
        let dir = TempDir::new();
        let k = key();
        std::fs::write(dir.0.join("k"), jwk(&k, false)).unwrap();
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        let envelope = serde_json::json!({
            "version": "0.1.0", "type": "envelope", "provider": "aliyun", "key_id": "xxx",
            "encrypted_key": "yyy", "encrypted_data": "zzz", "wrap_type": "A256GCM",
            "iv": "www", "provider_settings": {}, "annotations": {},
        });
        let e = err(&seal(&k, "k", &envelope), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::EnvelopeProvider(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("envelope secrets: provider aliyun not supported"),
            "{e}"
        );

        let mut unknown = vault(SECRET_URI);
        unknown["type"] = "plaintext".into();
        let e = err(&seal(&k, "k", &unknown), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::UnknownType(_)), "{e}");

        let mut aliyun = vault(SECRET_URI);
        aliyun["provider"] = "aliyun".into();
        let e = err(&seal(&k, "k", &aliyun), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::VaultProvider(_)), "{e}");
        assert!(
            e.to_string().contains("provider \"aliyun\" not supported"),
            "{e}"
        );

        // A vault name that is no KBS URI, and one the KBS does not have.
        let e = err(&seal(&k, "k", &vault("xxx")), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::Fetch { .. }), "{e}");
        let e = err(
            &seal(&k, "k", &vault("kbs:///default/sealed/absent")),
            &kbs,
            &opts(&dir),
        );
        let SealedError::Fetch { source, .. } = &e else {
            panic!("{e}")
        };
        assert!(matches!(**source, crate::Error::NotFound { .. }), "{e}");
        let mut no_name = vault(SECRET_URI);
        no_name.as_object_mut().unwrap().remove("name");
        let e = err(&seal(&k, "k", &no_name), &kbs, &opts(&dir));
        assert!(matches!(e, SealedError::Malformed(_)), "{e}");
    }

    #[test]
    fn malformed() {
        let p = b64(&serde_json::to_vec(&vault(SECRET_URI)).unwrap());
        let h = b64(br#"{"alg":"ES256","kid":"k"}"#);
        let s = b64(&[0; 64]);
        let cases = [
            "kbs:///default/sealed/one".to_owned(),
            "sealed.".to_owned(),
            format!("sealed.{h}.{p}"),
            format!("sealed.{h}.{p}.{s}.extra"),
            format!("sealed.{h}.{p}==.{s}"),
            format!("sealed.{h}.!!!.{s}"),
            format!("sealed.{h}.{}.{s}", b64(b"not json")),
            format!("sealed.{h}.{}.{s}", b64(b"[1,2]")),
            format!("sealed.{h}.{}.{s}", b64(br#"{"version":"0.1.0"}"#)),
            format!("sealed.{h}.{}.{s}", b64(br#"{"version":1,"type":"vault"}"#)),
        ];
        for text in &cases {
            let e = SealedSecret::parse(text).unwrap_err();
            assert!(
                matches!(e, SealedError::NotSealed | SealedError::Malformed(_)),
                "{text}: {e}"
            );
        }
        assert!(matches!(
            SealedSecret::parse("kbs:///a/b/c").unwrap_err(),
            SealedError::NotSealed
        ));

        // A header that is not base64url JSON fails only when verifying.
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        let dir = TempDir::new();
        for bad_h in [
            "fakejwsheader".to_owned(),
            b64(b"{not json"),
            b64(br#"{"kid":"k"}"#),
        ] {
            let text = format!("sealed.{bad_h}.{p}.{s}");
            let e = err(&text, &kbs, &opts(&dir));
            assert!(matches!(e, SealedError::BadHeader(_)), "{bad_h}: {e}");
        }
        let text = format!("sealed.{}.{p}.{s}", b64(br#"{"alg":"ES256"}"#));
        assert!(matches!(
            err(&text, &kbs, &opts(&dir)),
            SealedError::BadHeader(_)
        ));
        let text = format!(
            "sealed.{}.{p}.{s}",
            b64(br#"{"alg":"ES256","kid":"k","b64":false}"#)
        );
        assert!(matches!(
            err(&text, &kbs, &opts(&dir)),
            SealedError::BadHeader(_)
        ));
        let crit = br#"{"alg":"ES256","kid":"k","crit":["exp"],"exp":1}"#;
        let text = format!("sealed.{}.{p}.{s}", b64(crit));
        assert!(matches!(
            err(&text, &kbs, &opts(&dir)),
            SealedError::BadHeader(_)
        ));
        // A signature that is not base64url.
        let k = key();
        std::fs::write(dir.0.join("k"), jwk(&k, false)).unwrap();
        let text = format!("sealed.{h}.{p}.fakesignature");
        assert!(matches!(
            err(&text, &kbs, &opts(&dir)),
            SealedError::Malformed(_)
        ));
    }

    #[test]
    fn verify_false_skips_the_signature() {
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        let off = UnsealOptions {
            verify: false,
            ..UnsealOptions::default()
        };
        // Upstream kata CI's placeholder header and signature.
        let p = b64(&serde_json::to_vec(&vault(SECRET_URI)).unwrap());
        let text = format!("sealed.fakejwsheader.{p}.fakesignature");
        assert_eq!(unseal(&text, &kbs, &off).unwrap(), SECRET);
        assert_eq!(SealedSecret::parse(&text).unwrap().kid(), "");
        // A wrongly signed secret with an unknown kid is accepted too.
        let text = seal(&key(), "nowhere", &vault(SECRET_URI));
        assert_eq!(unseal(&text, &kbs, &off).unwrap(), SECRET);
        // The kid was never looked up; only the secret was fetched.
        assert_eq!(kbs.asked(), [SECRET_URI, SECRET_URI]);
        // The payload is still checked.
        let mut v = vault(SECRET_URI);
        v["version"] = "1.0.0".into();
        let text = seal(&key(), "nowhere", &v);
        assert!(matches!(err(&text, &kbs, &off), SealedError::Version(_)));
    }

    #[test]
    fn alg_none_and_other_algs_refused() {
        let dir = TempDir::new();
        let k = key();
        std::fs::write(dir.0.join("k"), jwk(&k, false)).unwrap();
        let kbs = FakeKbs::default().with(SECRET_URI, SECRET);
        let payload = serde_json::to_vec(&vault(SECRET_URI)).unwrap();
        for alg in ["none", "None"] {
            let h = b64(serde_json::json!({"alg": alg, "kid": "k"})
                .to_string()
                .as_bytes());
            let text = format!("sealed.{h}.{}.", b64(&payload));
            let e = err(&text, &kbs, &opts(&dir));
            assert!(matches!(e, SealedError::AlgNone), "{e}");
        }
        for alg in ["HS256", "ES384", "RS256", "es256"] {
            let header = serde_json::json!({"b64": true, "alg": alg, "kid": "k"});
            let e = err(&seal_raw(&k, &header, &payload), &kbs, &opts(&dir));
            assert!(matches!(e, SealedError::UnsupportedAlg(_)), "{alg}: {e}");
            assert!(e.to_string().contains(alg), "{e}");
        }
        assert!(kbs.asked().is_empty());
    }
}
