//! Resource JWEs: `ECDH-ES+A256KW` key agreement with `A256GCM` content encryption
//! (RFC 7516 flattened JSON serialisation, RFC 7518 §4.6 and §5.3), in RustCrypto.
//!
//! Opening: Z = ECDH(TEE private key, header `epk`); KEK = Concat KDF (SHA-256) over Z with
//! AlgorithmID `"ECDH-ES+A256KW"`, PartyUInfo/PartyVInfo from `apu`/`apv` (empty when
//! absent) and 256 key bits; CEK = AES key unwrap of `encrypted_key`; plaintext =
//! AES-256-GCM with AAD = the received `protected` string's ASCII bytes (plus `.` and the
//! `aad` member when present). Every intermediate key is zeroized.
//!
//! [`encrypt`] is the KBS side of the same scheme: tests use it to play the KBS.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use aes_kw::KekAes256;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kbs_types::TeePubKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::JweError;
use crate::kbs::protocol::{jose, FlattenedJwe};
use crate::tee_key::{public_key_from_coordinates, TeeKey};

const KEY_LEN: usize = 32;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Deserialize)]
struct Header {
    alg: String,
    enc: String,
    epk: Option<Epk>,
    apu: Option<String>,
    apv: Option<String>,
}

#[derive(Deserialize)]
struct Epk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

fn b64(field: &'static str, v: &str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|e| JweError::Malformed(format!("{field}: not base64url: {e}")))
}

/// Decrypts a flattened JWE encrypted to `key`.
pub fn decrypt(key: &TeeKey, jwe: &FlattenedJwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
    let header: Header = serde_json::from_slice(&b64("protected", &jwe.protected)?)
        .map_err(|e| JweError::Malformed(format!("protected header: {e}")))?;
    if header.alg != jose::ALG_ECDH_ES_A256KW {
        return Err(JweError::Unsupported {
            field: "alg",
            value: header.alg,
            want: jose::ALG_ECDH_ES_A256KW,
        });
    }
    if header.enc != jose::ENC_A256GCM {
        return Err(JweError::Unsupported {
            field: "enc",
            value: header.enc,
            want: jose::ENC_A256GCM,
        });
    }
    let epk = header
        .epk
        .ok_or_else(|| JweError::Malformed("protected header has no epk".to_owned()))?;
    if epk.kty != jose::KTY_EC {
        return Err(JweError::Unsupported {
            field: "epk.kty",
            value: epk.kty,
            want: jose::KTY_EC,
        });
    }
    let epk = public_key_from_coordinates(&epk.crv, &epk.x, &epk.y)
        .map_err(|e| JweError::Malformed(format!("epk: {e}")))?;
    let apu = header.apu.as_deref().map(|v| b64("apu", v)).transpose()?;
    let apv = header.apv.as_deref().map(|v| b64("apv", v)).transpose()?;

    let encrypted_key = b64("encrypted_key", &jwe.encrypted_key)?;
    let iv = b64("iv", &jwe.iv)?;
    let tag = b64("tag", &jwe.tag)?;
    let iv: [u8; IV_LEN] = iv
        .as_slice()
        .try_into()
        .map_err(|_| JweError::Malformed(format!("iv: {} bytes, want {IV_LEN}", iv.len())))?;
    let tag: [u8; TAG_LEN] = tag
        .as_slice()
        .try_into()
        .map_err(|_| JweError::Malformed(format!("tag: {} bytes, want {TAG_LEN}", tag.len())))?;
    if encrypted_key.len() != KEY_LEN + 8 {
        return Err(JweError::Malformed(format!(
            "encrypted_key: {} bytes, want {}",
            encrypted_key.len(),
            KEY_LEN + 8
        )));
    }
    let mut plaintext = Zeroizing::new(b64("ciphertext", &jwe.ciphertext)?);

    let kek = kek(key.secret(), &epk, apu.as_deref(), apv.as_deref());
    let mut cek = Zeroizing::new([0u8; KEY_LEN]);
    KekAes256::from(*kek)
        .unwrap(&encrypted_key, cek.as_mut_slice())
        .map_err(|_| JweError::KeyUnwrap)?;

    let aad = aad(jwe);
    let cipher = Aes256Gcm::new_from_slice(cek.as_slice()).map_err(|_| JweError::Decrypt)?;
    cipher
        .decrypt_in_place_detached(
            &aes_gcm::Nonce::from(iv),
            &aad,
            plaintext.as_mut(),
            &aes_gcm::Tag::from(tag),
        )
        .map_err(|_| JweError::Decrypt)?;
    Ok(plaintext)
}

/// RFC 7516 §5.1 step 14: AAD = ASCII(protected), or ASCII(protected || '.' || aad).
fn aad(jwe: &FlattenedJwe) -> Vec<u8> {
    match &jwe.aad {
        Some(extra) => format!("{}.{extra}", jwe.protected).into_bytes(),
        None => jwe.protected.as_bytes().to_vec(),
    }
}

/// The key-encryption key: Concat KDF (RFC 7518 §4.6.2, NIST SP 800-56A) over the ECDH
/// shared secret. 256 bits is one SHA-256 round.
fn kek(
    secret: &SecretKey,
    public: &PublicKey,
    apu: Option<&[u8]>,
    apv: Option<&[u8]>,
) -> Zeroizing<[u8; KEY_LEN]> {
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
    concat_kdf(
        shared.raw_secret_bytes(),
        jose::ALG_ECDH_ES_A256KW.as_bytes(),
        apu.unwrap_or_default(),
        apv.unwrap_or_default(),
        256,
    )
}

/// One round of the Concat KDF: SHA-256(1 || Z || len||AlgorithmID || len||apu ||
/// len||apv || keydatalen), enough for keys up to 256 bits (`key_bits`).
fn concat_kdf(
    z: &[u8],
    alg_id: &[u8],
    apu: &[u8],
    apv: &[u8],
    key_bits: u32,
) -> Zeroizing<[u8; KEY_LEN]> {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    for part in [alg_id, apu, apv] {
        h.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(part);
    }
    h.update(key_bits.to_be_bytes());
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&h.finalize());
    out
}

/// Encrypts `plaintext` to the EC P-256 JWK `recipient`, as a KBS does for a resource.
pub fn encrypt(recipient: &TeePubKey, plaintext: &[u8]) -> Result<FlattenedJwe, JweError> {
    let recipient = crate::tee_key::jwk_public_key(recipient).map_err(JweError::Encrypt)?;
    let ephemeral = SecretKey::random(&mut rand_core::OsRng);
    let epk = ephemeral.public_key().to_encoded_point(false);
    let coord =
        |c: Option<&p256::FieldBytes>| c.map(|b| URL_SAFE_NO_PAD.encode(b)).unwrap_or_default();
    let header = serde_json::json!({
        "alg": jose::ALG_ECDH_ES_A256KW,
        "enc": jose::ENC_A256GCM,
        "epk": {"kty": jose::KTY_EC, "crv": jose::CRV_P256, "x": coord(epk.x()), "y": coord(epk.y())},
    });
    let protected = URL_SAFE_NO_PAD.encode(header.to_string());

    let kek = kek(&ephemeral, &recipient, None, None);
    let mut cek = Zeroizing::new([0u8; KEY_LEN]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, cek.as_mut_slice());
    let mut wrapped = [0u8; KEY_LEN + 8];
    KekAes256::from(*kek)
        .wrap(cek.as_slice(), &mut wrapped)
        .map_err(|e| JweError::Encrypt(format!("key wrap: {e}")))?;

    let mut iv = [0u8; IV_LEN];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut iv);
    let cipher = Aes256Gcm::new_from_slice(cek.as_slice())
        .map_err(|e| JweError::Encrypt(format!("cek: {e}")))?;
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&aes_gcm::Nonce::from(iv), protected.as_bytes(), &mut buf)
        .map_err(|e| JweError::Encrypt(format!("A256GCM: {e}")))?;
    Ok(FlattenedJwe {
        protected,
        encrypted_key: URL_SAFE_NO_PAD.encode(wrapped),
        iv: URL_SAFE_NO_PAD.encode(iv),
        ciphertext: URL_SAFE_NO_PAD.encode(&buf),
        tag: URL_SAFE_NO_PAD.encode(tag),
        aad: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let key = TeeKey::generate();
        let jwe = encrypt(key.jwk(), b"top secret").unwrap();
        assert_eq!(decrypt(&key, &jwe).unwrap().as_slice(), b"top secret");
        let empty = encrypt(key.jwk(), b"").unwrap();
        assert!(decrypt(&key, &empty).unwrap().is_empty());
    }

    #[test]
    fn wrong_key_fails_at_unwrap() {
        let jwe = encrypt(TeeKey::generate().jwk(), b"x").unwrap();
        assert!(matches!(
            decrypt(&TeeKey::generate(), &jwe),
            Err(JweError::KeyUnwrap)
        ));
    }

    #[test]
    fn tampering_fails() {
        let key = TeeKey::generate();
        let jwe = encrypt(key.jwk(), b"hello world").unwrap();
        let flip = |s: &str| {
            let mut b = URL_SAFE_NO_PAD.decode(s).unwrap();
            b[0] ^= 1;
            URL_SAFE_NO_PAD.encode(b)
        };
        let mut t = jwe.clone();
        t.ciphertext = flip(&t.ciphertext);
        assert!(matches!(decrypt(&key, &t), Err(JweError::Decrypt)));
        let mut t = jwe.clone();
        t.tag = flip(&t.tag);
        assert!(matches!(decrypt(&key, &t), Err(JweError::Decrypt)));
        let mut t = jwe.clone();
        t.iv = flip(&t.iv);
        assert!(matches!(decrypt(&key, &t), Err(JweError::Decrypt)));
        let mut t = jwe.clone();
        t.encrypted_key = flip(&t.encrypted_key);
        assert!(matches!(decrypt(&key, &t), Err(JweError::KeyUnwrap)));
        // The protected header is authenticated as sent: same JSON, different bytes.
        let mut t = jwe.clone();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&t.protected).unwrap()).unwrap();
        t.protected = URL_SAFE_NO_PAD.encode(serde_json::to_string_pretty(&header).unwrap());
        assert!(matches!(decrypt(&key, &t), Err(JweError::Decrypt)));
        let mut t = jwe;
        t.aad = Some("extra".into());
        assert!(matches!(decrypt(&key, &t), Err(JweError::Decrypt)));
    }

    #[test]
    fn rejects_other_algorithms_and_garbage() {
        let key = TeeKey::generate();
        let jwe = encrypt(key.jwk(), b"x").unwrap();
        let with_header = |h: serde_json::Value| FlattenedJwe {
            protected: URL_SAFE_NO_PAD.encode(h.to_string()),
            ..jwe.clone()
        };
        let r = decrypt(
            &key,
            &with_header(serde_json::json!({"alg": "RSA-OAEP", "enc": "A256GCM"})),
        );
        assert!(matches!(r, Err(JweError::Unsupported { field: "alg", .. })));
        let r = decrypt(
            &key,
            &with_header(serde_json::json!({"alg": "ECDH-ES+A256KW", "enc": "A128GCM"})),
        );
        assert!(matches!(r, Err(JweError::Unsupported { field: "enc", .. })));
        let r = decrypt(
            &key,
            &with_header(serde_json::json!({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"})),
        );
        assert!(matches!(r, Err(JweError::Malformed(_))));
        let mut t = jwe;
        t.iv = "!!".into();
        assert!(matches!(decrypt(&key, &t), Err(JweError::Malformed(_))));
    }

    /// RFC 7518 Appendix C: the ECDH-ES Concat KDF example (alg "A128GCM", apu "Alice",
    /// apv "Bob", 128 bits) checks our KDF layout with a published vector.
    #[test]
    fn concat_kdf_layout_rfc7518_appendix_c() {
        let d = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let bob = SecretKey::from_slice(&d("VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw")).unwrap();
        let alice_pub = public_key_from_coordinates(
            "P-256",
            "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
            "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps",
        )
        .unwrap();
        let z = p256::ecdh::diffie_hellman(bob.to_nonzero_scalar(), alice_pub.as_affine());
        let out = concat_kdf(z.raw_secret_bytes(), b"A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(URL_SAFE_NO_PAD.encode(&out[..16]), "VqqN6vgjbSBcIijNcacQGg");
    }
}
