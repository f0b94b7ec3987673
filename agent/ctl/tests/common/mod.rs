//! Helpers for the image-encryption tests: OCI layouts from real tars, the binary, and the
//! guest's decrypter (`cocoon-image-pull`, a dev-dependency only).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use cocoon_image_pull::{unpack_layer, LayerDescriptor, LayerError, StaticKeys, UnpackOptions};
use serde_json::{json, Value};
use sha2::Digest as _;

// image-pull's test harness: a real registry on loopback, and the repository's skip rule
// (`registry::skip`) and tool check (`have`), one copy for both crates' tests.
#[path = "../../../../image-pull/tests/common/registry.rs"]
pub mod registry;
#[allow(unused_imports)] // not every test binary skips
pub use registry::{have, skip};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const KID: &str = "kbs:///default/key/1";

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

pub fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocoon-ctl"))
        .args(args)
        .output()
        .unwrap()
}

pub fn ctl_ok(args: &[&str]) -> String {
    let out = ctl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the binary with `stdin`.
pub fn ctl_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon-ctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut v).unwrap();
    v
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A tar with `layer<n>/` (a directory, a file, a symlink) and a bigger random file.
pub fn layer_tar(n: usize, big: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, format!("layer{n}/"), &[][..])
        .unwrap();
    let data = format!("content of layer {n}\n").repeat(500);
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, format!("layer{n}/data"), data.as_bytes())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o600);
    h.set_size(big.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, format!("layer{n}/big.bin"), big)
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_link(&mut h, format!("layer{n}/link"), "data")
        .unwrap();
    b.into_inner().unwrap()
}

pub fn put_blob(layout: &Path, bytes: &[u8]) -> (String, u64) {
    let d = sha256(bytes);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    (d, bytes.len() as u64)
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(&digest[7..])
}

pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let b = std::fs::read(blob_path(layout, digest)).unwrap();
    assert_eq!(sha256(&b), digest, "blob file content matches its name");
    b
}

/// A test image: the layout and what went into it.
pub struct TestImage {
    pub tars: Vec<Vec<u8>>,
    pub big: Vec<Vec<u8>>,
    pub layer_digests: Vec<String>,
    pub config_digest: String,
    pub manifest_digest: String,
}

/// An OCI layout tagged `tag` with a plain tar layer and a gzip layer (OCI types), or the
/// same as a Docker v2s2 manifest with Docker types.
pub fn make_layout(dir: &Path, tag: &str, docker: bool) -> TestImage {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let big: Vec<Vec<u8>> = vec![random(300_000), random(70_000)];
    let tars: Vec<Vec<u8>> = (0..2).map(|n| layer_tar(n, &big[n])).collect();
    let (t_tar, t_gz, t_cfg, t_man) = if docker {
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
    } else {
        (
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        )
    };
    let blobs = if docker {
        vec![gzip(&tars[0]), gzip(&tars[1])]
    } else {
        vec![tars[0].clone(), gzip(&tars[1])]
    };
    let mut layers = Vec::new();
    let mut layer_digests = Vec::new();
    for (mt, blob) in [(t_tar, &blobs[0]), (t_gz, &blobs[1])] {
        let (d, s) = put_blob(dir, blob);
        layers.push(json!({"mediaType": mt, "digest": d, "size": s,
                           "annotations": {"org.example.keep": "yes"}}));
        layer_digests.push(d);
    }
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| sha256(t)).collect::<Vec<_>>()},
    });
    let (cd, cs) = put_blob(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": t_man,
        "config": {"mediaType": t_cfg, "digest": cd, "size": cs},
        "layers": layers,
    });
    let (md, ms) = put_blob(dir, &serde_json::to_vec(&manifest).unwrap());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": t_man, "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    TestImage {
        tars,
        big,
        layer_digests,
        config_digest: cd,
        manifest_digest: md,
    }
}

/// The manifest `index.json` tags `tag`, checked: its digest and size are those of its blob.
pub fn manifest_for(layout: &Path, tag: &str) -> (String, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let d = entry["digest"].as_str().unwrap().to_owned();
    let bytes = read_blob(layout, &d);
    assert_eq!(entry["size"].as_u64().unwrap(), bytes.len() as u64);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(entry["mediaType"], m["mediaType"]);
    (d, m)
}

pub fn keys(kid: &str, kek: &[u8]) -> StaticKeys {
    StaticKeys {
        resources: HashMap::from([(kid.to_owned(), zeroize::Zeroizing::new(kek.to_vec()))]),
        keys: Vec::new(),
    }
}

pub fn descriptor(v: &Value) -> LayerDescriptor {
    serde_json::from_value(v.clone()).unwrap()
}

/// Decrypts and unpacks one layer with the guest's pipeline into `dest`.
pub fn unpack(
    desc: &LayerDescriptor,
    diff_id: &str,
    blob: &[u8],
    keys: &StaticKeys,
    dest: &Path,
) -> Result<(), LayerError> {
    unpack_layer(
        desc,
        diff_id,
        blob,
        keys,
        dest,
        &UnpackOptions { same_owner: false },
    )
    .map(|_| ())
}

/// Checks what `layer_tar(n, big)` unpacked into `dest`.
pub fn check_files(dest: &Path, n: usize, big: &[u8]) {
    let d = dest.join(format!("layer{n}"));
    assert_eq!(
        std::fs::read_to_string(d.join("data")).unwrap(),
        format!("content of layer {n}\n").repeat(500)
    );
    assert_eq!(std::fs::read(d.join("big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_link(d.join("link")).unwrap(),
        PathBuf::from("data")
    );
}

/// Writes a KEK with `image keygen` and returns (path, bytes).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let p = dir.join(name);
    ctl_ok(&["image", "keygen", "-o", p.to_str().unwrap()]);
    let b = std::fs::read(&p).unwrap();
    assert_eq!(b.len(), 32);
    (p, b)
}

pub fn b64(b: &[u8]) -> String {
    B64.encode(b)
}
