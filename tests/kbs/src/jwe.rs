//! Resource encryption as Trustee's `kbs/src/jwe/mod.rs` does it for a P-256 TEE key:
//! flattened JWE JSON, `alg` `ECDH-ES+A256KW` (ephemeral P-256 key in the protected header's
//! `epk`, Concat KDF SHA-256 with AlgorithmID "ECDH-ES+A256KW", empty PartyU/PartyV info,
//! 256-bit key, CEK wrapped with AES-256-KW), `enc` `A256GCM`, AAD = the ASCII of the
//! `protected` member. Written against RFC 7516/7518, not against the client's code.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use aes_kw::KekAes256;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdh::EphemeralSecret;
use p256::EncodedPoint;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::{EC_CURVE, EC_KTY, JWE_ALG, JWE_ENC};

/// A flattened JWE, members in Trustee's order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwe {
    pub protected: String,
    pub encrypted_key: String,
    pub iv: String,
    pub ciphertext: String,
    pub tag: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JweError {
    #[error("unsupported TEE key: {0}")]
    Unsupported(String),
    #[error("TEE key coordinates are not base64url of 32 bytes")]
    Coordinates,
    #[error("TEE key is not a point on P-256")]
    NotOnCurve,
    #[error("AES key wrap failed")]
    Wrap,
    #[error("AES-GCM failed")]
    Encrypt,
}

/// Concat KDF (NIST SP 800-56A §5.8.1, RFC 7518 §4.6.2) with SHA-256, for one 256-bit key.
pub fn concat_kdf(z: &[u8], algorithm_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes()); // round counter
    h.update(z);
    h.update((algorithm_id.len() as u32).to_be_bytes());
    h.update(algorithm_id.as_bytes());
    h.update(0u32.to_be_bytes()); // PartyUInfo: empty
    h.update(0u32.to_be_bytes()); // PartyVInfo: empty
    h.update(256u32.to_be_bytes()); // SuppPubInfo: keydatalen in bits
    h.finalize().into()
}

/// The TEE public key of a token or request, reduced to what encryption needs.
pub fn encrypt_to_jwk(jwk: &serde_json::Value, plaintext: &[u8]) -> Result<Jwe, JweError> {
    let field = |k: &str| jwk.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    if field("kty") != EC_KTY || field("crv") != EC_CURVE || field("alg") != JWE_ALG {
        return Err(JweError::Unsupported(format!(
            "kty {:?} crv {:?} alg {:?} (only EC P-256 {JWE_ALG})",
            field("kty"),
            field("crv"),
            field("alg")
        )));
    }
    encrypt_p256(field("x"), field("y"), plaintext)
}

/// Encrypt `plaintext` to the P-256 point (`x`, `y`), base64url coordinates.
pub fn encrypt_p256(x: &str, y: &str, plaintext: &[u8]) -> Result<Jwe, JweError> {
    let coord = |c: &str| -> Result<[u8; 32], JweError> {
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(JweError::Coordinates)
    };
    let (x, y) = (coord(x)?, coord(y)?);
    let point = EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    let recipient =
        p256::PublicKey::from_sec1_bytes(point.as_bytes()).map_err(|_| JweError::NotOnCurve)?;

    let ephemeral = EphemeralSecret::random(&mut OsRng);
    let shared = ephemeral.diffie_hellman(&recipient);
    let kek = concat_kdf(shared.raw_secret_bytes(), JWE_ALG);

    let mut cek = [0u8; 32];
    OsRng.fill_bytes(&mut cek);
    let encrypted_key = KekAes256::from(kek)
        .wrap_vec(&cek)
        .map_err(|_| JweError::Wrap)?;

    let epk = EncodedPoint::from(ephemeral.public_key());
    let (Some(ex), Some(ey)) = (epk.x(), epk.y()) else {
        return Err(JweError::NotOnCurve);
    };
    // Trustee's header text: `alg`, `enc`, then `epk` with its members sorted.
    let header = format!(
        r#"{{"alg":"{JWE_ALG}","enc":"{JWE_ENC}","epk":{{"crv":"{EC_CURVE}","kty":"{EC_KTY}","x":"{}","y":"{}"}}}}"#,
        URL_SAFE_NO_PAD.encode(ex),
        URL_SAFE_NO_PAD.encode(ey)
    );
    let protected = URL_SAFE_NO_PAD.encode(header.as_bytes());

    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let mut buf = plaintext.to_vec();
    let tag = Aes256Gcm::new_from_slice(&cek)
        .map_err(|_| JweError::Encrypt)?
        .encrypt_in_place_detached(&Nonce::from(iv), protected.as_bytes(), &mut buf)
        .map_err(|_| JweError::Encrypt)?;
    cek.fill(0);

    Ok(Jwe {
        protected,
        encrypted_key: URL_SAFE_NO_PAD.encode(encrypted_key),
        iv: URL_SAFE_NO_PAD.encode(iv),
        ciphertext: URL_SAFE_NO_PAD.encode(&buf),
        tag: URL_SAFE_NO_PAD.encode(tag),
    })
}

/// Flip one bit of the first ciphertext byte (the `tamper` fault). An empty ciphertext gets
/// its tag flipped instead, so the JWE never stays valid.
pub fn tamper(jwe: &mut Jwe) {
    let flip = |s: &str| -> String {
        let mut b = URL_SAFE_NO_PAD.decode(s).unwrap_or_default();
        if let Some(first) = b.first_mut() {
            *first ^= 0x01;
        }
        URL_SAFE_NO_PAD.encode(b)
    };
    if jwe.ciphertext.is_empty() {
        jwe.tag = flip(&jwe.tag);
    } else {
        jwe.ciphertext = flip(&jwe.ciphertext);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aes_gcm::aead::AeadInPlace;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    /// RFC 7518 Appendix C uses other parameters (A128GCM, "Alice"/"Bob"), so check the
    /// construction against a hand-assembled SHA-256 input.
    #[test]
    fn kdf_layout() {
        let z = [7u8; 32];
        let mut input = vec![0, 0, 0, 1];
        input.extend_from_slice(&z);
        input.extend_from_slice(&14u32.to_be_bytes());
        input.extend_from_slice(b"ECDH-ES+A256KW");
        input.extend_from_slice(&[0; 8]);
        input.extend_from_slice(&[0, 0, 1, 0]);
        let want: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(concat_kdf(&z, "ECDH-ES+A256KW"), want);
    }

    #[test]
    fn round_trip_with_a_local_decrypt() {
        let sk = p256::SecretKey::random(&mut OsRng);
        let pt = sk.public_key().to_encoded_point(false);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
            "x": URL_SAFE_NO_PAD.encode(pt.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(pt.y().unwrap()),
        });
        let jwe = encrypt_to_jwk(&jwk, b"secret bytes").unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&jwe.protected).unwrap()).unwrap();
        assert_eq!(header["alg"], "ECDH-ES+A256KW");
        assert_eq!(header["enc"], "A256GCM");
        let epk = EncodedPoint::from_affine_coordinates(
            URL_SAFE_NO_PAD
                .decode(header["epk"]["x"].as_str().unwrap())
                .unwrap()
                .as_slice()
                .into(),
            URL_SAFE_NO_PAD
                .decode(header["epk"]["y"].as_str().unwrap())
                .unwrap()
                .as_slice()
                .into(),
            false,
        );
        let epk = p256::PublicKey::from_sec1_bytes(epk.as_bytes()).unwrap();
        let z = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), epk.as_affine());
        let kek = concat_kdf(z.raw_secret_bytes(), "ECDH-ES+A256KW");
        let cek = KekAes256::from(kek)
            .unwrap_vec(&URL_SAFE_NO_PAD.decode(&jwe.encrypted_key).unwrap())
            .unwrap();
        let mut buf = URL_SAFE_NO_PAD.decode(&jwe.ciphertext).unwrap();
        let tag = URL_SAFE_NO_PAD.decode(&jwe.tag).unwrap();
        let iv: [u8; 12] = URL_SAFE_NO_PAD.decode(&jwe.iv).unwrap().try_into().unwrap();
        let cipher = Aes256Gcm::new_from_slice(&cek).unwrap();
        cipher
            .decrypt_in_place_detached(
                &Nonce::from(iv),
                jwe.protected.as_bytes(),
                &mut buf,
                tag.as_slice().into(),
            )
            .unwrap();
        assert_eq!(buf, b"secret bytes");

        let mut bad = jwe.clone();
        tamper(&mut bad);
        let mut buf = URL_SAFE_NO_PAD.decode(&bad.ciphertext).unwrap();
        assert!(cipher
            .decrypt_in_place_detached(
                &Nonce::from(iv),
                bad.protected.as_bytes(),
                &mut buf,
                tag.as_slice().into(),
            )
            .is_err());
    }

    #[test]
    fn refuses_other_keys() {
        let rsa = serde_json::json!({"kty":"RSA","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"});
        assert!(matches!(
            encrypt_to_jwk(&rsa, b"x"),
            Err(JweError::Unsupported(_))
        ));
        assert_eq!(
            encrypt_p256("AAAA", "AAAA", b"x"),
            Err(JweError::Coordinates)
        );
        let zero = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert_eq!(encrypt_p256(&zero, &zero, b"x"), Err(JweError::NotOnCurve));
    }
}
