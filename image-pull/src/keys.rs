//! Where layer keys come from: the [`KeyProvider`] seam and private keys.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use p256::pkcs8::DecodePrivateKey as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use zeroize::Zeroizing;

use crate::error::BoxError;

/// Keys for encrypted layers. The agent implements it with its KBS session; the crate
/// knows neither the agent nor the KBS.
pub trait KeyProvider: Send + Sync {
    /// The bytes of the KBS resource `uri` (`kbs:///<repo>/<type>/<tag>`): the 32-byte
    /// KEK of a CoCo annotation packet.
    fn kbs_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, BoxError>;
    /// Private keys for JWE-wrapped layer keys (`org.opencontainers.image.enc.keys.jwe`).
    fn private_keys(&self) -> Vec<DecryptionKey>;
}

/// A private key for JWE layer-key unwrapping: RSA (RSA-OAEP, RSA-OAEP-256) or P-256
/// (ECDH-ES+A256KW). Cheap to clone; the key material is zeroized on drop.
#[derive(Clone)]
pub struct DecryptionKey(pub(crate) Arc<KeyKind>);

#[allow(clippy::large_enum_variant)] // one per key, behind an Arc
pub(crate) enum KeyKind {
    Rsa(rsa::PrivateKey),
    P256(p256::SecretKey),
}

/// A key we could not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "unsupported private key: want PEM or DER of PKCS#8 (RSA or P-256), PKCS#1 RSA or SEC1 P-256"
)]
pub struct KeyParseError;

impl DecryptionKey {
    /// Parses a PEM or DER private key: PKCS#8 (RSA or P-256), PKCS#1 RSA, SEC1 P-256.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, KeyParseError> {
        let kind = if let Ok(text) = std::str::from_utf8(bytes) {
            let text = text.trim();
            if let Ok(k) = rsa::PrivateKey::from_pkcs8_pem(text) {
                KeyKind::Rsa(k)
            } else if let Ok(k) = rsa::PrivateKey::from_pkcs1_pem(text) {
                KeyKind::Rsa(k)
            } else if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
                KeyKind::P256(k)
            } else if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
                KeyKind::P256(k)
            } else {
                return Err(KeyParseError);
            }
        } else if let Ok(k) = rsa::PrivateKey::from_pkcs8_der(bytes) {
            KeyKind::Rsa(k)
        } else if let Ok(k) = rsa::PrivateKey::from_pkcs1_der(bytes) {
            KeyKind::Rsa(k)
        } else if let Ok(k) = p256::SecretKey::from_pkcs8_der(bytes) {
            KeyKind::P256(k)
        } else if let Ok(k) = p256::SecretKey::from_sec1_der(bytes) {
            KeyKind::P256(k)
        } else {
            return Err(KeyParseError);
        };
        Ok(DecryptionKey(Arc::new(kind)))
    }

    /// `"RSA"` or `"P-256"`.
    pub fn kind(&self) -> &'static str {
        match &*self.0 {
            KeyKind::Rsa(_) => "RSA",
            KeyKind::P256(_) => "P-256",
        }
    }
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecryptionKey({}, ..)", self.kind())
    }
}

/// A fixed set of keys: KBS resources by URI and JWE private keys. For tests and the
/// agent's explicit test mode (a key baked into the measured initrd is no secret).
#[derive(Default, Clone)]
pub struct StaticKeys {
    /// KBS resources by URI.
    pub resources: HashMap<String, Zeroizing<Vec<u8>>>,
    /// JWE private keys.
    pub keys: Vec<DecryptionKey>,
}

impl KeyProvider for StaticKeys {
    fn kbs_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, BoxError> {
        self.resources
            .get(uri)
            .cloned()
            .ok_or_else(|| format!("resource {uri} not found").into())
    }
    fn private_keys(&self) -> Vec<DecryptionKey> {
        self.keys.clone()
    }
}

/// No keys at all: plain layers only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKeys;

impl KeyProvider for NoKeys {
    fn kbs_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, BoxError> {
        Err(format!("no key provider configured for {uri}").into())
    }
    fn private_keys(&self) -> Vec<DecryptionKey> {
        Vec::new()
    }
}
