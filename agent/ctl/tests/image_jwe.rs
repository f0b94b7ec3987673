//! `image encrypt --recipient jwe:<public key>`: JWE-wrapped layer keys as skopeo's
//! `--encryption-key jwe:` makes them (RSA-OAEP for RSA, ECDH-ES+A256KW for P-256), next
//! to or instead of the CoCo packet. Opened by the guest's decrypter with the private keys,
//! and by real skopeo 1.9.3 (Go ocicrypt) with `--decryption-key`. Keys come from the
//! openssl CLI. Skips (SKIPPED) without openssl/skopeo; under CI=true that is a failure.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use cocoon_image_pull::{spec, DecryptionKey, StaticKeys};
use common::*;
use serde_json::Value;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (private PEM, public PEM) for `rsa` (2048) or `ec` (P-256).
fn keypair(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{kind}.pem"));
    let public = dir.join(format!("{kind}.pub.pem"));
    let (p, q) = (private.to_str().unwrap(), public.to_str().unwrap());
    // PKCS#8 (`genpkey`): skopeo 1.9.3's ocicrypt 1.0.3 does not take SEC1 EC keys
    // ("missing private key needed for decryption"); ours takes both.
    match kind {
        "rsa" => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]),
        _ => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]),
    }
    openssl(&["pkey", "-in", p, "-pubout", "-out", q]);
    (private, public)
}

fn private_keys(paths: &[&Path]) -> StaticKeys {
    StaticKeys {
        keys: paths
            .iter()
            .map(|p| DecryptionKey::from_pem_or_der(&std::fs::read(p).unwrap()).unwrap())
            .collect(),
        ..Default::default()
    }
}

fn diff_ids(layout: &Path, m: &Value) -> Vec<String> {
    let cfg: Value =
        serde_json::from_slice(&read_blob(layout, m["config"]["digest"].as_str().unwrap()))
            .unwrap();
    cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

fn unpack_all(layout: &Path, m: &Value, img: &TestImage, keys: &StaticKeys, scratch: &Path) {
    let ids = diff_ids(layout, m);
    let scratch = tempfile::tempdir_in(scratch).unwrap();
    for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
        let desc = descriptor(l);
        let dest = scratch.path().join(format!("u{i}"));
        unpack(
            &desc,
            &ids[i],
            &read_blob(layout, &desc.digest),
            keys,
            &dest,
        )
        .unwrap();
        check_files(&dest, i, &img.big[i]);
    }
}

fn jwe_of(l: &Value) -> Value {
    let b = B64
        .decode(
            l["annotations"][spec::ANNOTATION_KEYS_JWE]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn jwe_recipients_open_with_the_private_keys() {
    if !have("openssl") {
        skip("openssl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_pub) = keypair(dir.path(), "rsa");
    let (ec, ec_pub) = keypair(dir.path(), "ec");
    let (other, _) = keypair(dir.path(), "other");

    // Two recipients, no KBS key: a general JWE with per-recipient headers.
    let layout = dir.path().join("both");
    let img = make_layout(&layout, "v1", false);
    ctl_ok(&[
        "image",
        "encrypt",
        "--recipient",
        &format!("jwe:{}", rsa_pub.display()),
        "--recipient",
        &format!("jwe:{}", ec_pub.display()),
        layout.to_str().unwrap(),
    ]);
    let (_, m) = manifest_for(&layout, "v1");
    for l in m["layers"].as_array().unwrap() {
        let ann = l["annotations"].as_object().unwrap();
        assert!(!ann
            .keys()
            .any(|k| k.starts_with(spec::ANNOTATION_KEYS_PROVIDER_PREFIX)));
        let jwe = jwe_of(l);
        let r = jwe["recipients"].as_array().unwrap();
        assert_eq!(r[0]["header"]["alg"], "RSA-OAEP");
        assert_eq!(r[1]["header"]["alg"], "ECDH-ES+A256KW");
        assert_eq!(r[1]["header"]["epk"]["crv"], "P-256");
    }
    unpack_all(&layout, &m, &img, &private_keys(&[&rsa]), dir.path());
    unpack_all(&layout, &m, &img, &private_keys(&[&ec]), dir.path());
    // Someone else's key: refused.
    let desc = descriptor(&m["layers"][1]);
    let ids = diff_ids(&layout, &m);
    let e = unpack(
        &desc,
        &ids[1],
        &read_blob(&layout, &desc.digest),
        &private_keys(&[&other]),
        &dir.path().join("x"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("wrong key"), "{e}");

    // One recipient next to the CoCo packet: a flattened JWE (go-jose's single-recipient
    // FullSerialize), and either key opens the layer.
    let layout = dir.path().join("one");
    let img = make_layout(&layout, "v1", false);
    let (kek_path, kek) = keygen(dir.path(), "kek");
    ctl_ok(&[
        "image",
        "encrypt",
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        "--recipient",
        ec_pub.to_str().unwrap(),
        layout.to_str().unwrap(),
    ]);
    let (_, m) = manifest_for(&layout, "v1");
    for l in m["layers"].as_array().unwrap() {
        let jwe = jwe_of(l);
        assert!(jwe.get("recipients").is_none());
        assert!(jwe["encrypted_key"].is_string());
        let protected: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwe["protected"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(protected["alg"], "ECDH-ES+A256KW");
        assert_eq!(protected["enc"], "A256GCM");
    }
    unpack_all(&layout, &m, &img, &private_keys(&[&ec]), dir.path());
    unpack_all(&layout, &m, &img, &keys(KID, &kek), dir.path());

    // Not a key, or neither a KEK nor a recipient: refused.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let out = ctl(&[
        "image",
        "encrypt",
        "--recipient",
        &format!("jwe:{}", junk.display()),
        layout.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("public key"));
    let out = ctl(&["image", "encrypt", layout.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn real_skopeo_decrypts_our_jwe_layers() {
    if !have("openssl") || !have("skopeo") {
        skip("openssl and skopeo needed (apt-get install skopeo)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_pub) = keypair(dir.path(), "rsa");
    let (ec, ec_pub) = keypair(dir.path(), "ec");
    let (kek_path, _) = keygen(dir.path(), "kek");
    let k = kek_path.to_str().unwrap();
    // One recipient (flattened JWE) per key, and both (general JWE), each next to a packet.
    let cases: [(&str, Vec<&Path>, Vec<&Path>); 3] = [
        ("rsa", vec![&rsa_pub], vec![&rsa]),
        ("ec", vec![&ec_pub], vec![&ec]),
        ("both", vec![&rsa_pub, &ec_pub], vec![&rsa, &ec]),
    ];
    for (name, publics, privates) in cases {
        let layout = dir.path().join(format!("enc-{name}"));
        let img = make_layout(&layout, "v1", false);
        let mut args = vec!["image", "encrypt", "--kek", k, "--kid", KID];
        for p in &publics {
            args.extend(["--recipient", p.to_str().unwrap()]);
        }
        args.push(layout.to_str().unwrap());
        ctl_ok(&args);
        for (n, private) in privates.iter().enumerate() {
            let dec = dir.path().join(format!("dec-{name}-{n}"));
            let out = Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--decryption-key"])
                .arg(private)
                .arg(format!("oci:{}:v1", layout.display()))
                .arg(format!("oci:{}:v1", dec.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: skopeo: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let (_, m) = manifest_for(&dec, "v1");
            let layers = m["layers"].as_array().unwrap();
            assert_eq!(
                layers[0]["mediaType"],
                "application/vnd.oci.image.layer.v1.tar"
            );
            assert_eq!(
                layers[1]["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+gzip"
            );
            for (l, want) in layers.iter().zip(&img.layer_digests) {
                assert_eq!(
                    l["digest"],
                    want.as_str(),
                    "{name}: skopeo got the plaintext"
                );
                read_blob(&dec, want);
            }
        }
    }
}
