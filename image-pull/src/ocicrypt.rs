//! ocicrypt layer keys: public options, JWE-wrapped and CoCo key-provider-wrapped
//! private options (see [`crate::spec`] for the annotation names).
//!
//! Private options are `{"symkey":"<b64>","cipheroptions":{"nonce":"<b64>"},
//! "digest":"sha256:.."}` (Go marshals `[]byte` as standard base64); `digest` is the
//! digest of the blob before encryption as the encrypting tool saw it (skopeo records
//! the source blob's, even when it compresses first), so it is informational only. Public options are
//! `{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"<b64>","cipheroptions":{}}`.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::error::Failure;
use crate::keys::{KeyKind, KeyProvider};
use crate::spec;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
/// Standard base64, padding optional (Go writes it).
const B64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
/// base64url, padding optional (JOSE writes none).
const B64URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

fn bad(msg: impl Into<String>) -> Failure {
    Failure::BadAnnotation(msg.into())
}

/// The decrypted key of one layer.
pub struct LayerKey {
    /// AES-256 key (also the HMAC key).
    pub symkey: Zeroizing<[u8; 32]>,
    /// Initial 128-bit big-endian CTR counter block.
    pub nonce: [u8; 16],
    /// The private options' `digest` (informational, see the module doc).
    pub digest: String,
    /// Expected HMAC-SHA256 of the ciphertext (from the public options).
    pub hmac: [u8; 32],
}

impl std::fmt::Debug for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerKey")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct PublicOptions {
    cipher: String,
    #[serde(default)]
    hmac: Option<String>,
}

#[derive(Deserialize)]
struct PrivateOptions {
    symkey: String,
    #[serde(default)]
    cipheroptions: BTreeMap<String, String>,
    #[serde(default)]
    digest: String,
}

/// Parses the public options annotation: the expected HMAC.
pub fn public_hmac(annotations: &BTreeMap<String, String>) -> Result<[u8; 32], Failure> {
    let b64 = annotations
        .get(spec::ANNOTATION_PUBOPTS)
        .ok_or_else(|| bad(format!("{} missing", spec::ANNOTATION_PUBOPTS)))?;
    let json = B64
        .decode(b64.trim())
        .map_err(|e| bad(format!("pubopts: base64: {e}")))?;
    let opts: PublicOptions =
        serde_json::from_slice(&json).map_err(|e| bad(format!("pubopts: {e}")))?;
    if opts.cipher != spec::CIPHER_AES_256_CTR_HMAC_SHA256 {
        return Err(bad(format!("unsupported cipher {:?}", opts.cipher)));
    }
    let hmac = opts
        .hmac
        .ok_or_else(|| bad("pubopts: no hmac"))
        .and_then(|h| B64.decode(h).map_err(|e| bad(format!("pubopts hmac: {e}"))))?;
    hmac.try_into()
        .map_err(|_| bad("pubopts: hmac is not 32 bytes"))
}

fn parse_private(json: &[u8], hmac: [u8; 32]) -> Result<LayerKey, Failure> {
    let opts: PrivateOptions =
        serde_json::from_slice(json).map_err(|_| bad("private options: not the expected JSON"))?;
    let sym = Zeroizing::new(
        B64.decode(&opts.symkey)
            .map_err(|_| bad("private options: symkey not base64"))?,
    );
    let mut symkey = Zeroizing::new([0u8; 32]);
    if sym.len() != 32 {
        return Err(bad(format!("symkey is {} bytes, want 32", sym.len())));
    }
    symkey.copy_from_slice(&sym);
    let nonce = opts
        .cipheroptions
        .get(spec::CIPHER_OPTION_NONCE)
        .ok_or_else(|| bad("private options: no nonce"))?;
    let nonce: [u8; 16] = B64
        .decode(nonce)
        .map_err(|_| bad("private options: nonce not base64"))?
        .try_into()
        .map_err(|_| bad("private options: nonce is not 16 bytes"))?;
    Ok(LayerKey {
        symkey,
        nonce,
        digest: opts.digest,
        hmac,
    })
}

/// Unwraps the layer key from the descriptor's annotations: first the key-provider
/// packets (KEK from the KBS), then the JWE recipients (private keys).
pub fn unwrap_layer_key(
    annotations: &BTreeMap<String, String>,
    keys: &dyn KeyProvider,
) -> Result<LayerKey, Failure> {
    let hmac = public_hmac(annotations)?;
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut any = false;
    for (name, value) in annotations {
        if !name.starts_with(spec::ANNOTATION_KEYS_PROVIDER_PREFIX) {
            continue;
        }
        for item in value.split(',').filter(|s| !s.trim().is_empty()) {
            any = true;
            let packet = B64
                .decode(item.trim())
                .map_err(|e| bad(format!("{name}: base64: {e}")))?;
            match unwrap_packet(&packet, keys)? {
                Ok(json) => return parse_private(&json, hmac),
                Err(Attempt::Missing(m)) => missing.push(m),
                Err(Attempt::Wrong(m)) => wrong.push(m),
            }
        }
    }
    if let Some(value) = annotations.get(spec::ANNOTATION_KEYS_JWE) {
        let private_keys = keys.private_keys();
        for item in value.split(',').filter(|s| !s.trim().is_empty()) {
            any = true;
            let jwe = B64
                .decode(item.trim())
                .map_err(|e| bad(format!("jwe: base64: {e}")))?;
            if private_keys.is_empty() {
                missing.push("no private keys for JWE".to_owned());
                continue;
            }
            match decrypt_jwe(&jwe, &private_keys)? {
                Ok(json) => return parse_private(&json, hmac),
                Err(Attempt::Missing(m)) => missing.push(m),
                Err(Attempt::Wrong(m)) => wrong.push(m),
            }
        }
    }
    if !any {
        return Err(Failure::NoKey(
            "no key annotation on an encrypted layer".into(),
        ));
    }
    if !wrong.is_empty() {
        wrong.extend(missing);
        return Err(Failure::WrongKey(wrong.join("; ")));
    }
    Err(Failure::NoKey(missing.join("; ")))
}

enum Attempt {
    Missing(String),
    Wrong(String),
}

fn bytes_field(v: &Value, field: &str) -> Result<Vec<u8>, Failure> {
    match v.get(field) {
        Some(Value::String(s)) => B64
            .decode(s)
            .map_err(|_| bad(format!("packet {field}: not base64"))),
        // The Rust CoCo services serialise bytes as integer arrays.
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad(format!("packet {field}: not bytes"))),
        _ => Err(bad(format!("packet: no {field}"))),
    }
}

/// A CoCo annotation packet (v1 `{kid,wrapped_data,iv,wrap_type}`, v2 adds `version`,
/// `provider`, `provider_settings`, `annotations`).
fn unwrap_packet(
    packet: &[u8],
    keys: &dyn KeyProvider,
) -> Result<Result<Zeroizing<Vec<u8>>, Attempt>, Failure> {
    let v: Value = serde_json::from_slice(packet).map_err(|e| bad(format!("packet: {e}")))?;
    let kid = v
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("packet: no kid"))?;
    if !kid.starts_with(spec::KBS_URI_PREFIX) {
        return Err(bad(format!("packet kid {kid:?} is not a kbs:// URI")));
    }
    let wrap_type = v
        .get("wrap_type")
        .and_then(Value::as_str)
        .unwrap_or(spec::PACKET_WRAP_TYPE_A256GCM);
    if wrap_type != spec::PACKET_WRAP_TYPE_A256GCM {
        return Err(bad(format!("packet wrap_type {wrap_type:?} unsupported")));
    }
    let wrapped = bytes_field(&v, "wrapped_data")?;
    let iv = bytes_field(&v, "iv")?;
    if iv.len() != 12 {
        return Err(bad(format!("packet iv is {} bytes, want 12", iv.len())));
    }
    let kek = match keys.kbs_resource(kid) {
        Ok(k) => k,
        Err(e) => return Ok(Err(Attempt::Missing(format!("KBS resource {kid}: {e}")))),
    };
    if kek.len() != 32 {
        return Ok(Err(Attempt::Wrong(format!(
            "KBS resource {kid} is {} bytes, not a 32-byte KEK",
            kek.len()
        ))));
    }
    let cipher = Aes256Gcm::new_from_slice(&kek).map_err(|_| bad("kek length"))?;
    let iv: [u8; 12] = iv
        .as_slice()
        .try_into()
        .map_err(|_| bad("packet iv length"))?;
    match cipher.decrypt(&Nonce::from(iv), wrapped.as_slice()) {
        Ok(pt) => Ok(Ok(Zeroizing::new(pt))),
        Err(_) => Ok(Err(Attempt::Wrong(format!(
            "KEK {kid} does not open the annotation packet"
        )))),
    }
}

#[derive(Deserialize)]
struct RawJwe {
    #[serde(default)]
    protected: Option<String>,
    #[serde(default)]
    unprotected: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    header: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    encrypted_key: Option<String>,
    #[serde(default)]
    recipients: Option<Vec<RawRecipient>>,
    iv: String,
    ciphertext: String,
    tag: String,
    #[serde(default)]
    aad: Option<String>,
}

#[derive(Deserialize)]
struct RawRecipient {
    #[serde(default)]
    header: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    encrypted_key: Option<String>,
}

fn b64url(s: &str, what: &str) -> Result<Vec<u8>, Failure> {
    B64URL
        .decode(s)
        .map_err(|_| bad(format!("jwe {what}: not base64url")))
}

/// Decrypts a JWE in JSON serialisation, general or flattened (go-jose's
/// `FullSerialize` flattens a single recipient and moves its header into the protected
/// one). Tries every recipient against every key of the matching type.
fn decrypt_jwe(
    jwe: &[u8],
    keys: &[crate::DecryptionKey],
) -> Result<Result<Zeroizing<Vec<u8>>, Attempt>, Failure> {
    let raw: RawJwe = serde_json::from_slice(jwe).map_err(|e| bad(format!("jwe: {e}")))?;
    let mut shared = serde_json::Map::new();
    if let Some(p) = &raw.protected {
        let json = b64url(p, "protected")?;
        let m: serde_json::Map<String, Value> =
            serde_json::from_slice(&json).map_err(|e| bad(format!("jwe protected: {e}")))?;
        shared.extend(m);
    }
    if let Some(u) = &raw.unprotected {
        shared.extend(u.clone());
    }
    let recipients: Vec<(serde_json::Map<String, Value>, Option<String>)> = match &raw.recipients {
        Some(r) => r
            .iter()
            .map(|r| {
                (
                    r.header.clone().unwrap_or_default(),
                    r.encrypted_key.clone(),
                )
            })
            .collect(),
        None => vec![(
            raw.header.clone().unwrap_or_default(),
            raw.encrypted_key.clone(),
        )],
    };
    let iv = b64url(&raw.iv, "iv")?;
    let mut ct = b64url(&raw.ciphertext, "ciphertext")?;
    let tag = b64url(&raw.tag, "tag")?;
    let iv: [u8; 12] = iv
        .as_slice()
        .try_into()
        .map_err(|_| bad("jwe: iv is not 12 bytes"))?;
    if tag.len() != 16 {
        return Err(bad("jwe: tag is not 16 bytes"));
    }
    ct.extend_from_slice(&tag);
    let mut aad = raw.protected.clone().unwrap_or_default().into_bytes();
    if let Some(a) = &raw.aad {
        aad.push(b'.');
        aad.extend_from_slice(a.as_bytes());
    }
    let mut tried = Vec::new();
    let mut algs = Vec::new();
    for (header, ek) in recipients {
        let mut h = shared.clone();
        h.extend(header);
        let alg = h
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let enc = h.get("enc").and_then(Value::as_str).unwrap_or_default();
        if enc != spec::JWE_ENC_A256GCM {
            return Err(bad(format!("jwe enc {enc:?} unsupported (want A256GCM)")));
        }
        if h.contains_key("zip") {
            return Err(bad("jwe zip unsupported"));
        }
        let ek = b64url(ek.as_deref().unwrap_or_default(), "encrypted_key")?;
        for key in keys {
            let cek = match (&*key.0, alg.as_str()) {
                (KeyKind::Rsa(k), spec::JWE_ALG_RSA_OAEP) => {
                    k.oaep_decrypt::<sha1::Sha1>(&ek).ok().map(Zeroizing::new)
                }
                (KeyKind::Rsa(k), spec::JWE_ALG_RSA_OAEP_256) => k
                    .oaep_decrypt::<rsa::sha2::Sha256>(&ek)
                    .ok()
                    .map(Zeroizing::new),
                (KeyKind::P256(k), spec::JWE_ALG_ECDH_ES_A256KW) => ecdh_es_a256kw(k, &h, &ek)?,
                (_, spec::JWE_ALG_RSA_OAEP | spec::JWE_ALG_RSA_OAEP_256)
                | (_, spec::JWE_ALG_ECDH_ES_A256KW) => continue,
                (_, other) => return Err(bad(format!("jwe alg {other:?} unsupported"))),
            };
            tried.push(key.kind());
            let Some(cek) = cek else { continue };
            if cek.len() != 32 {
                continue;
            }
            let Ok(cipher) = Aes256Gcm::new_from_slice(&cek) else {
                continue;
            };
            if let Ok(pt) = cipher.decrypt(
                &Nonce::from(iv),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            ) {
                return Ok(Ok(Zeroizing::new(pt)));
            }
        }
        algs.push(alg);
    }
    if tried.is_empty() {
        return Ok(Err(Attempt::Missing(format!(
            "no private key of the kind JWE {} needs",
            algs.join("/")
        ))));
    }
    Ok(Err(Attempt::Wrong(format!(
        "none of {} private key(s) opens the JWE",
        keys.len()
    ))))
}

/// ECDH-ES+A256KW (RFC 7518 §4.6): Concat KDF (SHA-256) over the shared secret, then
/// AES-256 key unwrap of the CEK. `None` when the key does not fit.
fn ecdh_es_a256kw(
    key: &p256::SecretKey,
    header: &serde_json::Map<String, Value>,
    ek: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    let epk = header
        .get("epk")
        .ok_or_else(|| bad("jwe: ECDH-ES without epk"))?;
    let field = |f: &str| -> Result<Vec<u8>, Failure> {
        let s = epk
            .get(f)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("jwe epk: no {f}")))?;
        b64url(s, "epk")
    };
    if epk.get("crv").and_then(Value::as_str) != Some("P-256") {
        return Ok(None);
    }
    let (x, y) = (field("x")?, field("y")?);
    if x.len() != 32 || y.len() != 32 {
        return Err(bad("jwe epk: coordinates are not 32 bytes"));
    }
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let Ok(epk) = p256::PublicKey::from_sec1_bytes(&sec1) else {
        return Err(bad("jwe epk: not a P-256 point"));
    };
    let shared = p256::ecdh::diffie_hellman(key.to_nonzero_scalar(), epk.as_affine());
    let party = |f: &str| -> Result<Vec<u8>, Failure> {
        match header.get(f).and_then(Value::as_str) {
            Some(s) => b64url(s, f),
            None => Ok(Vec::new()),
        }
    };
    let (apu, apv) = (party("apu")?, party("apv")?);
    let mut h = sha2::Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(shared.raw_secret_bytes());
    for part in [spec::JWE_ALG_ECDH_ES_A256KW.as_bytes(), &apu, &apv] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.update(256u32.to_be_bytes());
    let mut kek = Zeroizing::new([0u8; 32]);
    kek.copy_from_slice(&h.finalize());
    let kw = aes_kw::KekAes256::from(*kek);
    Ok(kw.unwrap_vec(ek).ok().map(Zeroizing::new))
}

/// Standard base64 as Go writes it (for tests and tools).
pub fn b64_encode(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}
