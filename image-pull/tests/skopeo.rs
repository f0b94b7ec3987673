//! Layers encrypted by real skopeo (`--encryption-key jwe:pub.pem`, upstream ocicrypt),
//! decrypted and unpacked by us: RSA and P-256 keys; tar, gzip and zstd layers.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::path::Path;
use std::process::Command;

use cocoon_image_pull::{spec, unpack_layer, LayerDescriptor, StaticKeys, UnpackOptions};
use common::*;
use serde_json::{json, Value};

fn put_blob(layout: &Path, bytes: &[u8]) -> (String, u64) {
    let d = sha256(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    (d, bytes.len() as u64)
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
}

fn layer_tar(n: usize) -> Vec<u8> {
    tar_of(|b| {
        raw_entry(
            b,
            &format!("layer{n}/"),
            tar::EntryType::Directory,
            "",
            b"",
            0o755,
        );
        file(
            b,
            &format!("layer{n}/data"),
            format!("content of layer {n}\n").repeat(1000).as_bytes(),
            0o644,
        );
        raw_entry(
            b,
            &format!("layer{n}/link"),
            tar::EntryType::Symlink,
            "data",
            b"",
            0o777,
        );
    })
}

/// An OCI layout with a plain tar, a gzip and a zstd layer.
fn make_layout(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tars: Vec<Vec<u8>> = (0..3).map(layer_tar).collect();
    let mut layers = Vec::new();
    for (i, (mt, blob)) in [
        (spec::MEDIA_TYPE_TAR, tars[0].clone()),
        (spec::MEDIA_TYPE_TAR_GZIP, gzip(&tars[1])),
        (spec::MEDIA_TYPE_TAR_ZSTD, zstd(&tars[2])),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = i;
        let (d, s) = put_blob(dir, &blob);
        layers.push(json!({"mediaType": mt, "digest": d, "size": s}));
    }
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| sha256(t)).collect::<Vec<_>>()},
    });
    let (cd, cs) = put_blob(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    });
    let (md, ms) = put_blob(dir, &serde_json::to_vec(&manifest).unwrap());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    tars
}

#[test]
fn skopeo_encrypted_layers_decrypt() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        println!(
            "SKIPPED: skopeo not installed (apt-get install -y --no-install-recommends skopeo)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let src = tmp.path().join("src");
    let tars = make_layout(&src);
    for key in ["rsa", "ec"] {
        let dst = tmp.path().join(format!("dst-{key}"));
        run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--encryption-key"])
            .arg(format!(
                "jwe:{}",
                keys.path(&format!("{key}.pub.pem")).display()
            ))
            .arg(format!("oci:{}:latest", src.display()))
            .arg(format!("oci:{}:latest", dst.display())));
        let index: Value =
            serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
        let md = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: Value = serde_json::from_slice(&read_blob(&dst, md)).unwrap();
        let config: Value = serde_json::from_slice(&read_blob(
            &dst,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        let layers: Vec<LayerDescriptor> =
            serde_json::from_value(manifest["layers"].clone()).unwrap();
        assert_eq!(layers.len(), 3);
        let provider = StaticKeys {
            keys: vec![
                keys.key(if key == "rsa" { "rsa2" } else { "ec2" }),
                keys.key(key),
            ],
            ..Default::default()
        };
        let wrong = StaticKeys {
            keys: vec![keys.key(if key == "rsa" { "rsa2" } else { "ec2" })],
            ..Default::default()
        };
        for (i, desc) in layers.iter().enumerate() {
            assert!(
                desc.media_type.ends_with("+encrypted"),
                "{}",
                desc.media_type
            );
            assert!(desc.annotations.contains_key(spec::ANNOTATION_KEYS_JWE));
            let diff_id = config["rootfs"]["diff_ids"][i].as_str().unwrap();
            assert_eq!(diff_id, sha256(&tars[i]));
            let blob = read_blob(&dst, &desc.digest);
            let out = tmp.path().join(format!("out-{key}-{i}"));
            let opts = UnpackOptions {
                same_owner: is_root(),
            };
            let e = unpack_layer(desc, diff_id, &blob[..], &wrong, &out, &opts).unwrap_err();
            assert!(e.to_string().contains("wrong key"), "{e}");
            assert!(!out.exists());
            unpack_layer(desc, diff_id, &blob[..], &provider, &out, &opts)
                .unwrap_or_else(|e| panic!("skopeo {key} layer {i} ({}): {e}", desc.media_type));
            let data = std::fs::read_to_string(out.join(format!("layer{i}/data"))).unwrap();
            assert_eq!(data, format!("content of layer {i}\n").repeat(1000));
            assert_eq!(
                std::fs::read_link(out.join(format!("layer{i}/link"))).unwrap(),
                Path::new("data")
            );
        }
    }
}
