//! `cocoon-ctl image encrypt` through the binary, each layer then decrypted and unpacked by
//! the guest's own pipeline (`cocoon_image_pull::unpack_layer` with the KEK as the KBS
//! resource `kid`): in place, into a new layout, chosen layers, a Docker v2s2 source, a
//! base64 KEK file; a wrong KEK, a tampered blob or HMAC are refused.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::path::Path;

use base64::Engine as _;
use cocoon_image_pull::spec;
use common::*;
use serde_json::Value;

const ENC_TAR: &str = "application/vnd.oci.image.layer.v1.tar+encrypted";
const ENC_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
const PROVIDER_ANN: &str = "org.opencontainers.image.enc.keys.provider.attestation-agent";

fn encrypt(args: &[&str]) -> Value {
    serde_json::from_str(&ctl_ok(&[&["image", "encrypt"], args].concat())).unwrap()
}

fn diff_ids(layout: &Path, manifest: &Value) -> Vec<String> {
    let cfg: Value = serde_json::from_slice(&read_blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

/// Every layer of `manifest` decrypts and unpacks with `kek`, giving the original files.
fn check_layers(layout: &Path, manifest: &Value, img: &TestImage, kek: &[u8], scratch: &Path) {
    let ids = diff_ids(layout, manifest);
    let keys = keys(KID, kek);
    for (i, l) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let desc = descriptor(l);
        let blob = read_blob(layout, &desc.digest);
        assert_eq!(blob.len() as u64, desc.size);
        let dest = scratch.join(format!("unpacked-{}-{i}", &desc.digest[7..19]));
        unpack(&desc, &ids[i], &blob, &keys, &dest).unwrap();
        check_files(&dest, i, &img.big[i]);
    }
}

#[test]
fn encrypt_in_place_then_the_guest_pipeline_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("img");
    let img = make_layout(&layout, "v1", false);
    let (kek_path, kek) = keygen(dir.path(), "kek");
    let report = encrypt(&[
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        &format!("oci:{}:v1", layout.display()),
    ]);

    let (md, m) = manifest_for(&layout, "v1");
    assert_ne!(md, img.manifest_digest);
    assert_eq!(report["manifests"][0]["from"], img.manifest_digest.as_str());
    assert_eq!(report["manifests"][0]["to"], md.as_str());
    assert_eq!(report["manifests"][0]["encrypted"], 2);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    // The config, and so its diff_ids, is untouched.
    assert_eq!(m["config"]["digest"], img.config_digest.as_str());
    assert_eq!(
        diff_ids(&layout, &m),
        img.tars.iter().map(|t| sha256(t)).collect::<Vec<_>>()
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers[0]["mediaType"], ENC_TAR);
    assert_eq!(layers[1]["mediaType"], ENC_GZ);
    for (i, l) in layers.iter().enumerate() {
        let ann = l["annotations"].as_object().unwrap();
        assert_eq!(ann["org.example.keep"], "yes", "other annotations are kept");
        assert!(ann.contains_key(spec::ANNOTATION_PUBOPTS));
        let packet: Value =
            serde_json::from_slice(&B64.decode(ann[PROVIDER_ANN].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(packet["kid"], KID);
        assert_eq!(packet["wrap_type"], "A256GCM");
        // The ciphertext is not the plaintext, and has its size.
        let blob = read_blob(&layout, l["digest"].as_str().unwrap());
        assert_ne!(sha256(&blob), img.layer_digests[i]);
        assert!(!blob
            .windows(img.big[i].len().min(64))
            .any(|w| w == &img.big[i][..64]));
    }
    // The plaintext blobs and the old manifest are gone from the layout.
    for d in img.layer_digests.iter().chain([&img.manifest_digest]) {
        assert!(!blob_path(&layout, d).exists(), "{d} removed");
        assert!(report["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == d.as_str()));
    }
    check_layers(&layout, &m, &img, &kek, dir.path());

    // Encrypting again changes nothing (every layer is encrypted already).
    let again = encrypt(&[
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        layout.to_str().unwrap(),
    ]);
    assert_eq!(again["manifests"].as_array().unwrap().len(), 0);
    assert_eq!(manifest_for(&layout, "v1").0, md);

    // A wrong KEK: refused, nothing unpacked.
    let ids = diff_ids(&layout, &m);
    let desc = descriptor(&layers[1]);
    let blob = read_blob(&layout, &desc.digest);
    let wrong = keys(KID, &random(32));
    let dest = dir.path().join("wrong");
    let e = unpack(&desc, &ids[1], &blob, &wrong, &dest).unwrap_err();
    assert!(e.to_string().contains("does not open"), "{e}");
    assert!(!dest.exists());
    // No KEK for the kid at all.
    let other = keys("kbs:///default/key/other", &kek);
    assert!(unpack(&desc, &ids[1], &blob, &other, &dest).is_err());

    // Tampered ciphertext (with a descriptor digest that matches it, so only the HMAC can
    // tell): refused, nothing left behind.
    let mut bad = blob.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let mut tdesc = desc.clone();
    tdesc.digest = sha256(&bad);
    let e = unpack(&tdesc, &ids[1], &bad, &keys(KID, &kek), &dest).unwrap_err();
    assert!(!dest.exists(), "{e}");
    // A blob that does not match its descriptor digest: refused.
    assert!(unpack(&desc, &ids[1], &bad, &keys(KID, &kek), &dest).is_err());
    // A swapped HMAC in the public options: refused.
    let mut hdesc = desc.clone();
    hdesc.annotations.insert(
        spec::ANNOTATION_PUBOPTS.into(),
        b64(format!(
            r#"{{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"{}","cipheroptions":{{}}}}"#,
            b64(&random(32))
        )
        .as_bytes()),
    );
    assert!(unpack(&hdesc, &ids[1], &blob, &keys(KID, &kek), &dest).is_err());
    assert!(!dest.exists());
}

#[test]
fn encrypt_into_new_layout_chosen_layer_base64_kek() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    let img = make_layout(&src, "v1", false);
    let before = std::fs::read(src.join("index.json")).unwrap();
    let kek = random(32);
    let kek_path = dir.path().join("kek.b64");
    std::fs::write(&kek_path, format!("{}\n", b64(&kek))).unwrap();
    let report = encrypt(&[
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        "kbs://kbs.example:8080/repo/image-kek/v1",
        "--encrypt-layer",
        "-1",
        "--tag",
        "v1",
        "-o",
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    assert_eq!(report["manifests"][0]["encrypted"], 1);
    assert_eq!(report["removed"].as_array().unwrap().len(), 0);
    // The source is untouched.
    assert_eq!(std::fs::read(src.join("index.json")).unwrap(), before);
    for d in &img.layer_digests {
        assert!(blob_path(&src, d).exists());
    }
    // The output holds exactly the blobs it needs.
    let (md, m) = manifest_for(&out, "v1");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(layers[0]["digest"], img.layer_digests[0].as_str());
    assert_eq!(layers[1]["mediaType"], ENC_GZ);
    let mut want: Vec<String> = vec![
        md[7..].to_owned(),
        img.config_digest[7..].to_owned(),
        img.layer_digests[0][7..].to_owned(),
        layers[1]["digest"].as_str().unwrap()[7..].to_owned(),
    ];
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(out.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    have.sort();
    assert_eq!(have, want);
    assert!(out.join("oci-layout").exists());

    let ids = diff_ids(&out, &m);
    let keys = keys("kbs://kbs.example:8080/repo/image-kek/v1", &kek);
    // Layer 0 is plain and still unpacks; layer 1 needs the KEK.
    for (i, l) in layers.iter().enumerate() {
        let desc = descriptor(l);
        let dest = dir.path().join(format!("u{i}"));
        unpack(&desc, &ids[i], &read_blob(&out, &desc.digest), &keys, &dest).unwrap();
        check_files(&dest, i, &img.big[i]);
    }
    // An output directory that is not empty is refused.
    let e = ctl(&[
        "image",
        "encrypt",
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        "-o",
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("not empty"));
}

#[test]
fn docker_manifest_becomes_oci() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("img");
    let img = make_layout(&layout, "latest", true);
    let (kek_path, kek) = keygen(dir.path(), "kek");
    encrypt(&[
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        layout.to_str().unwrap(),
    ]);
    let (_, m) = manifest_for(&layout, "latest");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(m["config"]["digest"], img.config_digest.as_str());
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], ENC_GZ);
    }
    check_layers(&layout, &m, &img, &kek, dir.path());
}

#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("img");
    let img = make_layout(&layout, "v1", false);
    let (kek_path, _) = keygen(dir.path(), "kek");
    let k = kek_path.to_str().unwrap();
    let l = layout.to_str().unwrap();
    let fails = |args: &[&str], want: &str| {
        let out = ctl(&[&["image", "encrypt"], args].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    };
    fails(&["--kek", k, "--kid", "/default/key/1", l], "kbs://");
    fails(&["--kek", k, "--kid", "kbs:///default/key", l], "path");
    fails(&["--kek", k, "--kid", KID, "--tag", "nope", l], "nope");
    fails(
        &["--kek", k, "--kid", KID, "--encrypt-layer", "5", l],
        "out of range",
    );
    let short = dir.path().join("short");
    std::fs::write(&short, [0u8; 16]).unwrap();
    fails(
        &["--kek", short.to_str().unwrap(), "--kid", KID, l],
        "32 raw bytes",
    );
    // A corrupt layer blob: refused, and the layout is left as it was.
    let before = std::fs::read(layout.join("index.json")).unwrap();
    let p = blob_path(&layout, &img.layer_digests[1]);
    let mut b = std::fs::read(&p).unwrap();
    b[10] ^= 0xff;
    std::fs::write(&p, &b).unwrap();
    fails(&["--kek", k, "--kid", KID, l], "corrupt");
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");
    // keygen never overwrites.
    assert!(!ctl(&["image", "keygen", "-o", k]).status.success());
}

#[test]
fn multi_arch_index_is_rewritten_bottom_up() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("img");
    let amd = make_layout(&layout, "amd", false);
    let arm = make_layout(&layout, "arm", false);
    // index.json → an image index blob → two manifests.
    let size = |d: &str| read_blob(&layout, d).len();
    let index = serde_json::json!({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.manifest_digest,
         "size": size(&amd.manifest_digest), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.manifest_digest,
         "size": size(&arm.manifest_digest), "platform": {"architecture": "arm64", "os": "linux"}},
    ]});
    let (xd, xs) = put_blob(&layout, &serde_json::to_vec(&index).unwrap());
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": xd, "size": xs,
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let (kek_path, kek) = keygen(dir.path(), "kek");
    let report = encrypt(&[
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        &format!("oci:{}:multi", layout.display()),
    ]);
    assert_eq!(report["manifests"].as_array().unwrap().len(), 2);
    let (nd, idx) = manifest_for(&layout, "multi");
    assert_ne!(nd, xd);
    assert!(!blob_path(&layout, &xd).exists());
    for (entry, (img, arch)) in idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip([(&amd, "amd64"), (&arm, "arm64")])
    {
        assert_eq!(entry["platform"]["architecture"], arch);
        let d = entry["digest"].as_str().unwrap();
        let bytes = read_blob(&layout, d);
        assert_eq!(entry["size"].as_u64().unwrap(), bytes.len() as u64);
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        check_layers(&layout, &m, img, &kek, dir.path());
    }
}

#[test]
fn zstd_layers_need_allow_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("img");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let big = random(50_000);
    let tar = layer_tar(0, &big);
    let (ld, ls) = put_blob(&layout, &zstd::encode_all(&tar[..], 3).unwrap());
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]}});
    let (cd, cs) = put_blob(&layout, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": ld, "size": ls}]});
    let (md, ms) = put_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "z"}}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let (kek_path, kek) = keygen(dir.path(), "kek");
    let k = kek_path.to_str().unwrap();
    let l = layout.to_str().unwrap();

    let out = ctl(&["image", "encrypt", "--kek", k, "--kid", KID, l]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-zstd"));
    encrypt(&["--kek", k, "--kid", KID, "--allow-zstd", l]);
    let (_, m) = manifest_for(&layout, "z");
    let desc = descriptor(&m["layers"][0]);
    assert_eq!(
        desc.media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd+encrypted"
    );
    let dest = dir.path().join("u");
    unpack(
        &desc,
        &sha256(&tar),
        &read_blob(&layout, &desc.digest),
        &keys(KID, &kek),
        &dest,
    )
    .unwrap();
    check_files(&dest, 0, &big);
}

#[test]
fn in_place_keeps_blobs_another_tag_still_uses() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("img");
    let img = make_layout(&layout, "a", false);
    // Tag "b" names the same (plaintext) manifest.
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut b = index["manifests"][0].clone();
    b["annotations"]["org.opencontainers.image.ref.name"] = "b".into();
    index["manifests"].as_array_mut().unwrap().push(b);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let (kek_path, kek) = keygen(dir.path(), "kek");
    let report = encrypt(&[
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        "--tag",
        "a",
        layout.to_str().unwrap(),
    ]);
    assert!(report["removed"].as_array().unwrap().is_empty());
    let (_, m) = manifest_for(&layout, "a");
    check_layers(&layout, &m, &img, &kek, dir.path());
    let (bd, bm) = manifest_for(&layout, "b");
    assert_eq!(bd, img.manifest_digest);
    for (l, d) in bm["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&img.layer_digests)
    {
        assert_eq!(l["digest"], d.as_str());
        read_blob(&layout, d);
    }
}
