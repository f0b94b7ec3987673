//! Test helpers: tar building, an independent ocicrypt encryptor (openssl CLI for
//! AES-CTR, HMAC and RSA-OAEP), key generation.
#![allow(dead_code)]

pub mod registry;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use cocoon_image_pull::{spec, LayerDescriptor};
use sha2::Digest as _;

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false)
}

/// True when the test can go on; prints SKIPPED otherwise (fails under CI=true).
pub fn need_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} needs root, and CI=true");
    }
    println!("SKIPPED: {what} needs root");
    false
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut v).unwrap();
    v
}

pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A raw header whose name and link name bypass the tar crate's path checks.
pub fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
    mode: u32,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    let g = h.as_gnu_mut().unwrap();
    g.name = [0; 100];
    g.name[..path.len()].copy_from_slice(path.as_bytes());
    g.linkname = [0; 100];
    g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

pub fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    raw_entry(b, path, tar::EntryType::Regular, "", data, mode);
}

pub fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

pub struct Encrypted {
    pub blob: Vec<u8>,
    pub privopts: Vec<u8>,
    pub pubopts: String,
    pub symkey: Vec<u8>,
}

/// ocicrypt's layer format with openssl: AES-256-CTR and HMAC-SHA256 over the ciphertext.
pub fn encrypt_layer(dir: &Path, plain: &[u8]) -> Encrypted {
    let symkey = random(32);
    let nonce = random(16);
    let pin = dir.join("plain.bin");
    let pout = dir.join("cipher.bin");
    std::fs::write(&pin, plain).unwrap();
    run(Command::new("openssl")
        .args(["enc", "-aes-256-ctr", "-nosalt", "-K"])
        .arg(hex::encode(&symkey))
        .arg("-iv")
        .arg(hex::encode(&nonce))
        .arg("-in")
        .arg(&pin)
        .arg("-out")
        .arg(&pout));
    let blob = std::fs::read(&pout).unwrap();
    let mac = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{}", hex::encode(&symkey)))
        .arg("-binary")
        .arg(&pout));
    assert_eq!(mac.len(), 32);
    let pubopts = B64.encode(format!(
        r#"{{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"{}","cipheroptions":{{}}}}"#,
        B64.encode(&mac)
    ));
    let privopts = format!(
        r#"{{"symkey":"{}","digest":"{}","cipheroptions":{{"nonce":"{}"}}}}"#,
        B64.encode(&symkey),
        sha256(plain),
        B64.encode(&nonce)
    )
    .into_bytes();
    Encrypted {
        blob,
        privopts,
        pubopts,
        symkey,
    }
}

pub fn descriptor(
    media_type: &str,
    blob: &[u8],
    annotations: BTreeMap<String, String>,
) -> LayerDescriptor {
    LayerDescriptor {
        media_type: media_type.into(),
        digest: sha256(blob),
        size: blob.len() as u64,
        annotations,
    }
}

pub struct Keys {
    pub dir: PathBuf,
}

impl Keys {
    pub fn new(dir: &Path) -> Keys {
        let d = dir.join("keys");
        std::fs::create_dir_all(&d).unwrap();
        for name in ["rsa", "rsa2"] {
            run(Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(d.join(format!("{name}.pem")))
                .arg("2048"));
            run(Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(d.join(format!("{name}.pem")))
                .arg("-out")
                .arg(d.join(format!("{name}.pub.pem"))));
        }
        for name in ["ec", "ec2"] {
            run(Command::new("openssl")
                .args([
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                ])
                .arg(d.join(format!("{name}.pem"))));
            run(Command::new("openssl")
                .args(["ec", "-pubout", "-in"])
                .arg(d.join(format!("{name}.pem")))
                .arg("-out")
                .arg(d.join(format!("{name}.pub.pem"))));
        }
        Keys { dir: d }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn key(&self, name: &str) -> cocoon_image_pull::DecryptionKey {
        cocoon_image_pull::DecryptionKey::from_pem_or_der(
            &std::fs::read(self.path(&format!("{name}.pem"))).unwrap(),
        )
        .unwrap()
    }
}

fn gcm(cek: &[u8], iv: &[u8], aad: &[u8], pt: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let c = aes_gcm::Aes256Gcm::new_from_slice(cek).unwrap();
    let mut ct = c.encrypt(iv.into(), Payload { msg: pt, aad }).unwrap();
    let tag = ct.split_off(ct.len() - 16);
    (ct, tag)
}

/// A JWE (general JSON) with one recipient: RSA-OAEP / RSA-OAEP-256 via openssl, or
/// ECDH-ES+A256KW with an openssl-made ephemeral key and openssl's ECDH.
pub fn jwe(keys: &Keys, recipient: &str, alg: &str, plaintext: &[u8]) -> String {
    let cek = random(32);
    let d = &keys.dir;
    let (header, ek) = match alg {
        "RSA-OAEP" | "RSA-OAEP-256" => {
            std::fs::write(d.join("cek"), &cek).unwrap();
            let md = if alg == "RSA-OAEP" { "sha1" } else { "sha256" };
            let ek = run(Command::new("openssl")
                .args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
                .arg(keys.path(&format!("{recipient}.pub.pem")))
                .args(["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt"])
                .arg(format!("rsa_oaep_md:{md}"))
                .arg("-pkeyopt")
                .arg(format!("rsa_mgf1_md:{md}"))
                .arg("-in")
                .arg(d.join("cek")));
            (format!(r#"{{"alg":"{alg}"}}"#), ek)
        }
        "ECDH-ES+A256KW" => {
            let eph = d.join("eph.pem");
            run(Command::new("openssl")
                .args([
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                ])
                .arg(&eph));
            let z = run(Command::new("openssl")
                .args(["pkeyutl", "-derive", "-inkey"])
                .arg(&eph)
                .arg("-peerkey")
                .arg(keys.path(&format!("{recipient}.pub.pem"))));
            let der = run(Command::new("openssl")
                .args(["ec", "-pubout", "-outform", "DER", "-in"])
                .arg(&eph));
            let point = &der[der.len() - 65..];
            // RFC 7518 §4.6.2 Concat KDF.
            let mut h = sha2::Sha256::new();
            h.update(1u32.to_be_bytes());
            h.update(&z);
            for p in [alg.as_bytes(), b"", b""] {
                h.update((p.len() as u32).to_be_bytes());
                h.update(p);
            }
            h.update(256u32.to_be_bytes());
            let kek: [u8; 32] = h.finalize().into();
            let ek = aes_kw::KekAes256::from(kek).wrap_vec(&cek).unwrap();
            let epk = format!(
                r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
                B64URL.encode(&point[1..33]),
                B64URL.encode(&point[33..])
            );
            (format!(r#"{{"alg":"{alg}","epk":{epk}}}"#), ek)
        }
        _ => panic!("alg"),
    };
    let protected = B64URL.encode(r#"{"enc":"A256GCM"}"#);
    let iv = random(12);
    let (ct, tag) = gcm(&cek, &iv, protected.as_bytes(), plaintext);
    let json = format!(
        r#"{{"protected":"{protected}","recipients":[{{"header":{header},"encrypted_key":"{}"}}],"iv":"{}","ciphertext":"{}","tag":"{}"}}"#,
        B64URL.encode(&ek),
        B64URL.encode(&iv),
        B64URL.encode(&ct),
        B64URL.encode(&tag)
    );
    B64.encode(json)
}

/// A CoCo annotation packet wrapping `privopts` under `kek`.
pub fn packet(kid: &str, kek: &[u8], privopts: &[u8], v2: bool) -> String {
    let iv = random(12);
    let c = aes_gcm::Aes256Gcm::new_from_slice(kek).unwrap();
    let wrapped = c.encrypt(iv.as_slice().into(), privopts).unwrap();
    let extra = if v2 {
        r#","version":"0.1.0","provider":"kbs","provider_settings":{},"annotations":{}"#
    } else {
        ""
    };
    B64.encode(format!(
        r#"{{"kid":"{kid}","wrapped_data":"{}","iv":"{}","wrap_type":"A256GCM"{extra}}}"#,
        B64.encode(wrapped),
        B64.encode(iv)
    ))
}

pub fn annotations(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn jwe_annotations(e: &Encrypted, jwe: String) -> BTreeMap<String, String> {
    annotations(&[
        (spec::ANNOTATION_PUBOPTS, e.pubopts.clone()),
        (spec::ANNOTATION_KEYS_JWE, jwe),
    ])
}
