//! JWE recipients for `image encrypt --recipient jwe:<public key>`, as ocicrypt's JWE key
//! wrapper writes them (`keywrap/jwe/keywrapper_jwe.go`): the private options encrypted
//! with `enc` A256GCM under a random CEK, wrapped per recipient with `RSA-OAEP` (SHA-1,
//! an RSA key) or `ECDH-ES+A256KW` (a P-256 key), serialised as JSON (go-jose's
//! `FullSerialize`: flattened with everything in the protected header for one recipient,
//! general with per-recipient headers for several). The layer annotation
//! `org.opencontainers.image.enc.keys.jwe` is standard base64 of that JSON.
//! RFC 7516 (JWE), RFC 7518 §4.3 (RSA-OAEP), §4.6 (ECDH-ES, Concat KDF), §5.3 (A256GCM).

use std::path::Path;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePublicKey as _;
use rand_core::RngCore;
use serde_json::{json, Map, Value};
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::ImageError;

/// RSA-OAEP (SHA-1 and MGF1-SHA-1): what ocicrypt uses for RSA keys.
pub const ALG_RSA_OAEP: &str = "RSA-OAEP";
/// ECDH-ES with Concat KDF and AES-256 key wrap: what ocicrypt uses for EC keys.
pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// Content encryption.
pub const ENC_A256GCM: &str = "A256GCM";

/// A recipient's public key.
#[derive(Debug, Clone)]
pub enum Recipient {
    /// RSA (RSA-OAEP).
    Rsa(Box<rsa::PublicKey>),
    /// P-256 (ECDH-ES+A256KW).
    P256(p256::PublicKey),
}

impl Recipient {
    /// Parses a public key: PEM or DER, SubjectPublicKeyInfo (RSA or P-256) or PKCS#1 RSA.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Recipient, ImageError> {
        use rsa::pkcs1::DecodeRsaPublicKey as _;
        use rsa::pkcs8::DecodePublicKey as _;
        if let Ok(text) = std::str::from_utf8(bytes) {
            let text = text.trim();
            if let Ok(k) = rsa::PublicKey::from_public_key_pem(text) {
                return Ok(Recipient::Rsa(Box::new(k)));
            }
            if let Ok(k) = rsa::PublicKey::from_pkcs1_pem(text) {
                return Ok(Recipient::Rsa(Box::new(k)));
            }
            if let Ok(k) = p256::PublicKey::from_public_key_pem(text) {
                return Ok(Recipient::P256(k));
            }
        }
        if let Ok(k) = rsa::PublicKey::from_public_key_der(bytes) {
            return Ok(Recipient::Rsa(Box::new(k)));
        }
        if let Ok(k) = rsa::PublicKey::from_pkcs1_der(bytes) {
            return Ok(Recipient::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::PublicKey::from_public_key_der(bytes) {
            return Ok(Recipient::P256(k));
        }
        Err(ImageError::Recipient(
            "want a PEM or DER public key: RSA (SPKI or PKCS#1) or P-256 (SPKI)".into(),
        ))
    }

    /// Reads `jwe:<path>` (or a bare path).
    pub fn from_arg(arg: &str) -> Result<Recipient, ImageError> {
        let path = arg.strip_prefix("jwe:").unwrap_or(arg);
        let bytes = std::fs::read(path).map_err(|e| ImageError::io(Path::new(path), e))?;
        Recipient::from_pem_or_der(&bytes).map_err(|e| match e {
            ImageError::Recipient(why) => ImageError::Recipient(format!("{path}: {why}")),
            other => other,
        })
    }

    /// The per-recipient header and encrypted key for `cek`.
    fn wrap(&self, cek: &[u8; 32]) -> Result<(Map<String, Value>, Vec<u8>), ImageError> {
        let mut header = Map::new();
        match self {
            Recipient::Rsa(k) => {
                header.insert("alg".into(), json!(ALG_RSA_OAEP));
                let ek = k
                    .oaep_encrypt::<sha1::Sha1>(cek)
                    .map_err(|e| ImageError::Crypto(format!("RSA-OAEP: {e}")))?;
                Ok((header, ek))
            }
            Recipient::P256(k) => {
                let eph = p256::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
                let epk = eph.public_key().to_encoded_point(false);
                let (Some(x), Some(y)) = (epk.x(), epk.y()) else {
                    return Err(ImageError::Crypto("ephemeral key encoding".into()));
                };
                let shared = eph.diffie_hellman(k);
                let kek = concat_kdf(shared.raw_secret_bytes(), ALG_ECDH_ES_A256KW);
                let ek = aes_kw::KekAes256::from(*kek)
                    .wrap_vec(cek)
                    .map_err(|_| ImageError::Crypto("AES key wrap".into()))?;
                header.insert("alg".into(), json!(ALG_ECDH_ES_A256KW));
                header.insert(
                    "epk".into(),
                    json!({"kty": "EC", "crv": "P-256",
                           "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
                );
                Ok((header, ek))
            }
        }
    }
}

/// RFC 7518 §4.6.2: Concat KDF with SHA-256 (one round: at most 256 bits).
fn concat_kdf_bits(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], bits: u32) -> Zeroizing<Vec<u8>> {
    let mut h = sha2::Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    for part in [alg.as_bytes(), apu, apv] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.update(bits.to_be_bytes());
    let full = h.finalize();
    Zeroizing::new(full[..(bits as usize / 8).min(32)].to_vec())
}

/// The ECDH-ES+A256KW key-wrapping key: empty `apu`/`apv` (as go-jose), 256 bits.
fn concat_kdf(z: &[u8], alg: &str) -> Zeroizing<[u8; 32]> {
    let k = concat_kdf_bits(z, alg, b"", b"", 256);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&k);
    out
}

/// Encrypts `plaintext` (the private options) to `recipients`: the JWE JSON.
pub fn encrypt(recipients: &[Recipient], plaintext: &[u8]) -> Result<Vec<u8>, ImageError> {
    if recipients.is_empty() {
        return Err(ImageError::Recipient("no recipients".into()));
    }
    let mut cek = Zeroizing::new([0u8; 32]);
    rand_core::OsRng.fill_bytes(&mut cek[..]);
    let mut wrapped = Vec::new();
    for r in recipients {
        wrapped.push(r.wrap(&cek)?);
    }
    let single = wrapped.len() == 1;
    let mut protected = Map::new();
    if single {
        protected.extend(wrapped[0].0.clone());
    }
    protected.insert("enc".into(), json!(ENC_A256GCM));
    let protected_b64 = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&Value::Object(protected))
            .map_err(|e| ImageError::Crypto(e.to_string()))?,
    );
    let mut iv = [0u8; 12];
    rand_core::OsRng.fill_bytes(&mut iv);
    let mut buf = Zeroizing::new(plaintext.to_vec());
    let tag = Aes256Gcm::new_from_slice(&cek[..])
        .map_err(|_| ImageError::Crypto("CEK".into()))?
        .encrypt_in_place_detached(&Nonce::from(iv), protected_b64.as_bytes(), &mut buf)
        .map_err(|_| ImageError::Crypto("A256GCM".into()))?;
    let mut jwe = Map::new();
    jwe.insert("protected".into(), json!(protected_b64));
    if single {
        jwe.insert(
            "encrypted_key".into(),
            json!(URL_SAFE_NO_PAD.encode(&wrapped[0].1)),
        );
    } else {
        let list: Vec<Value> = wrapped
            .iter()
            .map(|(h, ek)| json!({"header": h, "encrypted_key": URL_SAFE_NO_PAD.encode(ek)}))
            .collect();
        jwe.insert("recipients".into(), Value::Array(list));
    }
    jwe.insert("iv".into(), json!(URL_SAFE_NO_PAD.encode(iv)));
    jwe.insert("ciphertext".into(), json!(URL_SAFE_NO_PAD.encode(&buf[..])));
    jwe.insert("tag".into(), json!(URL_SAFE_NO_PAD.encode(tag)));
    serde_json::to_vec(&Value::Object(jwe)).map_err(|e| ImageError::Crypto(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn concat_kdf_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: Z, alg "A128GCM", apu "Alice", apv "Bob", 128 bits.
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf_bits(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(URL_SAFE_NO_PAD.encode(&k[..]), "VqqN6vgjbSBcIijNcacQGg");
        assert_eq!(
            &concat_kdf(&z, ALG_ECDH_ES_A256KW)[..],
            &concat_kdf_bits(&z, ALG_ECDH_ES_A256KW, b"", b"", 256)[..]
        );
    }
}
