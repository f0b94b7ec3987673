//! Layer keys on the host: the KEK, CoCo annotation packets, ocicrypt's private and public
//! options, and the `AES_256_CTR_HMAC_SHA256` layer cipher.
//!
//! What upstream writes, and so what we write (checked against guest-components
//! `attestation-agent/coco_keyprovider/src/enc_mods/{mod.rs,crypto.rs}` and
//! `confidential-data-hub/hub/src/image/annotation_packet/{v1,v2}.rs`, and ocicrypt
//! `blockcipher/blockcipher.go`, `encryption.go`):
//!
//! - the annotation packet is the v1 form `{"kid":..,"wrapped_data":..,"iv":..,"wrap_type":"A256GCM"}`
//!   in that field order, `wrapped_data` = standard base64 of AES-256-GCM(KEK, iv) over the
//!   private options (ciphertext‖16-byte tag, no AAD), `iv` = standard base64 of 12 random
//!   bytes. CDH's v2 reader defaults the missing `version` to `0.1.0` and `provider` to `kbs`.
//! - the layer annotation is standard base64 of the packet JSON (ocicrypt's `preWrapKeys`;
//!   several packets are comma-separated).
//! - private options, Go field order: `{"symkey":"<b64 32B>","digest":"sha256:<blob before
//!   encryption>","cipheroptions":{"nonce":"<b64 16B>"}}`; public options
//!   `{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"<b64>","cipheroptions":{}}` (ocicrypt-rs
//!   requires every one of these fields).
//! - the KEK is the KBS resource's bytes: 32 raw bytes (coco_keyprovider's `keypath` reads
//!   the file raw; its `encrypt.sh` takes the key base64 and decodes it into that file).

use std::io::{self, Read, Write};
use std::path::Path;

use aes::cipher::{KeyIvInit, StreamCipher};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::Mac;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::spec;
use super::ImageError;

/// Standard base64 with padding, as Go's `encoding/json` and upstream write it.
pub(crate) const B64: GeneralPurpose = general_purpose::STANDARD;
/// Standard base64, padding optional (for reading).
pub(crate) const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A 32-byte key-encryption key (zeroized on drop).
pub struct Kek(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// From bytes: exactly 32 raw bytes (what a Trustee resource for an image key holds and
    /// what coco_keyprovider's `keypath` reads), or base64 text of 32 bytes (what its
    /// `encrypt.sh -k` and offline-fs-kbc's key file take), surrounding whitespace ignored.
    /// The two never overlap: base64 of 32 bytes is 43–44 characters.
    pub fn from_bytes(bytes: &[u8]) -> Result<Kek, ImageError> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() == 32 {
            key.copy_from_slice(bytes);
            return Ok(Kek(key));
        }
        let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
        let decoded = Zeroizing::new(B64_LENIENT.decode(text).unwrap_or_default());
        if decoded.len() != 32 {
            return Err(ImageError::Kek(format!(
                "{} bytes: want 32 raw bytes or base64 of 32 bytes",
                bytes.len()
            )));
        }
        key.copy_from_slice(&decoded);
        Ok(Kek(key))
    }

    /// Reads a KEK file (see [`Kek::from_bytes`]).
    pub fn from_file(path: &Path) -> Result<Kek, ImageError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| ImageError::io(path, e))?);
        Kek::from_bytes(&bytes).map_err(|e| match e {
            ImageError::Kek(why) => ImageError::Kek(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    /// A random KEK (for `keygen`).
    pub fn random() -> Kek {
        let mut key = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(&mut key[..]);
        Kek(key)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Checks a `kid`: a KBS resource URI `kbs://[<kbs-host[:port]>]/<repo>/<type>/<tag>` with
/// three non-empty path segments (what upstream's `ResourceUri` parses and the guest asks
/// the KBS for). Upstream's keyprovider also writes `/<repo>/..` and `<addr>/<repo>/..`
/// verbatim, which its own reader then refuses as no URL; we refuse them up front.
pub fn check_kid(kid: &str) -> Result<(), ImageError> {
    let bad = |why: &str| ImageError::Kid {
        kid: kid.to_owned(),
        why: why.to_owned(),
    };
    let rest = kid
        .strip_prefix(spec::KBS_URI_PREFIX)
        .ok_or_else(|| bad("must start with kbs:// (e.g. kbs:///default/key/1)"))?;
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("no resource path"))?;
    if host.contains(['?', '#', '@', ' ']) {
        return Err(bad("bad KBS address"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() != 3 || segments.iter().any(|s| s.is_empty()) {
        return Err(bad("path must be /<repository>/<type>/<tag>"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.~%+=:".contains(c);
    if !segments.iter().all(|s| s.chars().all(ok)) {
        return Err(bad("path segments may hold only URL-safe characters"));
    }
    Ok(())
}

/// CoCo's annotation packet, v1 shape and field order exactly as coco_keyprovider's
/// `AnnotationPacket` serialises it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnnotationPacket {
    /// The KBS resource URI of the KEK.
    pub kid: String,
    /// Standard base64 of AES-256-GCM ciphertext‖tag of the private options.
    pub wrapped_data: String,
    /// Standard base64 of the 12-byte GCM nonce.
    pub iv: String,
    /// `A256GCM`.
    pub wrap_type: String,
}

/// Wraps `optsdata` (the private options JSON) under `kek` for `kid`: the packet's JSON
/// bytes (what a keyprovider returns as `annotation`; ocicrypt base64-encodes it again
/// into the layer annotation).
pub fn wrap_packet(kek: &Kek, kid: &str, optsdata: &[u8]) -> Result<Vec<u8>, ImageError> {
    check_kid(kid)?;
    let mut iv = [0u8; 12];
    rand_core::OsRng.fill_bytes(&mut iv);
    let cipher = Aes256Gcm::new_from_slice(kek.as_bytes())
        .map_err(|_| ImageError::Kek("not 32 bytes".into()))?;
    let wrapped = cipher
        .encrypt(&Nonce::from(iv), optsdata)
        .map_err(|_| ImageError::Crypto("AES-256-GCM wrap failed".into()))?;
    let packet = AnnotationPacket {
        kid: kid.to_owned(),
        wrapped_data: B64.encode(wrapped),
        iv: B64.encode(iv),
        wrap_type: spec::PACKET_WRAP_TYPE_A256GCM.to_owned(),
    };
    serde_json::to_vec(&packet).map_err(|e| ImageError::Crypto(format!("packet JSON: {e}")))
}

/// Opens a packet (JSON bytes, v1 or v2 with `provider` `kbs`) with `kek`: the private
/// options. For the keyprovider's `keyunwrap` with a local KEK; in the guest the KBS
/// releases the KEK and `cocoon-image-pull` unwraps.
pub fn unwrap_packet(kek: &Kek, packet: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), ImageError> {
    let bad = |why: String| ImageError::Packet(why);
    let v: serde_json::Value =
        serde_json::from_slice(packet).map_err(|e| bad(format!("not JSON: {e}")))?;
    let field = |name: &str| v.get(name).and_then(serde_json::Value::as_str);
    if let Some(version) = field("version") {
        if version != "0.1.0" {
            return Err(bad(format!("version {version:?}, want 0.1.0")));
        }
    }
    if let Some(provider) = field("provider") {
        if provider != "kbs" {
            return Err(bad(format!("provider {provider:?}, want kbs")));
        }
    }
    let kid = field("kid").ok_or_else(|| bad("no kid".into()))?.to_owned();
    let wrap_type = field("wrap_type").ok_or_else(|| bad("no wrap_type".into()))?;
    if wrap_type != spec::PACKET_WRAP_TYPE_A256GCM {
        return Err(bad(format!("wrap_type {wrap_type:?} unsupported")));
    }
    let wrapped = B64_LENIENT
        .decode(field("wrapped_data").ok_or_else(|| bad("no wrapped_data".into()))?)
        .map_err(|_| bad("wrapped_data is not base64".into()))?;
    let iv: [u8; 12] = B64_LENIENT
        .decode(field("iv").ok_or_else(|| bad("no iv".into()))?)
        .map_err(|_| bad("iv is not base64".into()))?
        .try_into()
        .map_err(|_| bad("iv is not 12 bytes".into()))?;
    let cipher = Aes256Gcm::new_from_slice(kek.as_bytes())
        .map_err(|_| ImageError::Kek("not 32 bytes".into()))?;
    let plain = cipher
        .decrypt(&Nonce::from(iv), wrapped.as_slice())
        .map_err(|_| ImageError::WrongKek(kid.clone()))?;
    Ok((kid, Zeroizing::new(plain)))
}

/// A fresh layer key: 32-byte AES-256 key (also the HMAC key) and 16-byte CTR nonce.
pub struct LayerSecret {
    /// AES-256 key.
    pub symkey: Zeroizing<[u8; 32]>,
    /// Initial 128-bit big-endian counter block.
    pub nonce: [u8; 16],
}

impl LayerSecret {
    /// Random key and nonce from the OS.
    pub fn random() -> LayerSecret {
        let mut symkey = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut symkey[..]);
        rand_core::OsRng.fill_bytes(&mut nonce);
        LayerSecret { symkey, nonce }
    }

    /// The private options JSON (Go's field order), `digest` = the blob before encryption.
    pub fn private_options(&self, digest: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            format!(
                r#"{{"symkey":"{}","digest":"{}","cipheroptions":{{"{}":"{}"}}}}"#,
                Zeroizing::new(B64.encode(&self.symkey[..])).as_str(),
                json_escape(digest),
                spec::CIPHER_OPTION_NONCE,
                B64.encode(self.nonce)
            )
            .into_bytes(),
        )
    }
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// The public options annotation value: base64 of
/// `{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"<b64>","cipheroptions":{}}`.
pub fn public_options_annotation(hmac: &[u8; 32]) -> String {
    B64.encode(format!(
        r#"{{"cipher":"{}","hmac":"{}","cipheroptions":{{}}}}"#,
        spec::CIPHER_AES_256_CTR_HMAC_SHA256,
        B64.encode(hmac)
    ))
}

/// What encrypting one blob produced.
#[derive(Debug, Clone)]
pub struct EncryptedBlob {
    /// `sha256:<hex>` of the ciphertext (the new blob).
    pub digest: String,
    /// Ciphertext length (= plaintext length: CTR).
    pub size: u64,
    /// `sha256:<hex>` of the blob before encryption.
    pub plain_digest: String,
    /// HMAC-SHA256 of the ciphertext keyed with the symkey.
    pub hmac: [u8; 32],
}

/// Streams `input` through AES-256-CTR into `output`, hashing both sides and computing the
/// HMAC over the ciphertext. Constant memory.
pub fn encrypt_stream(
    secret: &LayerSecret,
    mut input: impl Read,
    mut output: impl Write,
) -> io::Result<EncryptedBlob> {
    let mut cipher = Aes256Ctr::new((&*secret.symkey).into(), (&secret.nonce).into());
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&secret.symkey[..])
        .map_err(|_| io::Error::other("HMAC key"))?;
    let mut plain_hash = sha2::Sha256::new();
    let mut cipher_hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &mut buf[..n];
        plain_hash.update(&*chunk);
        cipher.apply_keystream(chunk);
        mac.update(chunk);
        cipher_hash.update(&*chunk);
        output.write_all(chunk)?;
        size += n as u64;
    }
    output.flush()?;
    Ok(EncryptedBlob {
        digest: format!("sha256:{}", hex::encode(cipher_hash.finalize())),
        size,
        plain_digest: format!("sha256:{}", hex::encode(plain_hash.finalize())),
        hmac: mac.finalize().into_bytes().into(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kek_raw_or_base64() {
        let raw = [7u8; 32];
        assert_eq!(Kek::from_bytes(&raw).unwrap().as_bytes(), &raw);
        let b64 = format!("{}\n", B64.encode(raw));
        assert_eq!(Kek::from_bytes(b64.as_bytes()).unwrap().as_bytes(), &raw);
        assert!(Kek::from_bytes(&[1u8; 31]).is_err());
        assert!(Kek::from_bytes(B64.encode([1u8; 16]).as_bytes()).is_err());
    }

    #[test]
    fn kids() {
        for ok in [
            "kbs:///default/key/1",
            "kbs://kbs.example:8080/repo/image-kek/abc-1",
        ] {
            check_kid(ok).unwrap();
        }
        for bad in [
            "/default/key/1",
            "kbs:///default/key",
            "kbs:///default//1",
            "kbs:///a/b/c/d",
            "kbs+pkcs11:///a/b/c",
            "kbs:///a/b/c?x",
            "default/key/1",
        ] {
            assert!(check_kid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packet_round_trip_and_wrong_kek() {
        let kek = Kek::random();
        let p = wrap_packet(&kek, "kbs:///default/key/1", b"{\"x\":1}").unwrap();
        let text = String::from_utf8(p.clone()).unwrap();
        assert!(text.starts_with(r#"{"kid":"kbs:///default/key/1","wrapped_data":""#));
        assert!(text.ends_with(r#","wrap_type":"A256GCM"}"#));
        let (kid, opts) = unwrap_packet(&kek, &p).unwrap();
        assert_eq!(kid, "kbs:///default/key/1");
        assert_eq!(&opts[..], b"{\"x\":1}");
        assert!(matches!(
            unwrap_packet(&Kek::random(), &p),
            Err(ImageError::WrongKek(_))
        ));
    }

    #[test]
    fn ctr_matches_known_answer() {
        // NIST SP 800-38A F.5.5 (CTR-AES256.Encrypt), first block.
        let key: [u8; 32] =
            hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 16] = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .unwrap()
            .try_into()
            .unwrap();
        let secret = LayerSecret {
            symkey: Zeroizing::new(key),
            nonce,
        };
        let pt = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        let mut out = Vec::new();
        let r = encrypt_stream(&secret, &pt[..], &mut out).unwrap();
        assert_eq!(hex::encode(&out), "601ec313775789a5b7a7f504bbf3d228");
        assert_eq!(r.size, 16);
    }
}
