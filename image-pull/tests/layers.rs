//! The per-layer pipeline: formats, encryption kinds, the attack set, safe unpacking.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cocoon_image_pull::{
    spec, unpack_layer, LayerDescriptor, LayerError, NoKeys, StaticKeys, UnpackOptions,
};
use common::*;
use zeroize::Zeroizing;

fn opts() -> UnpackOptions {
    UnpackOptions {
        same_owner: is_root(),
    }
}

/// Unpacks into `<tmp>/layers/L`; on failure checks nothing is left in `layers/`.
fn pull(
    tmp: &Path,
    desc: &LayerDescriptor,
    diff_id: &str,
    blob: &[u8],
    keys: &dyn cocoon_image_pull::KeyProvider,
) -> Result<std::path::PathBuf, LayerError> {
    let layers = tmp.join("layers");
    let _ = std::fs::remove_dir_all(&layers);
    std::fs::create_dir(&layers).unwrap();
    let dest = layers.join("L");
    match unpack_layer(desc, diff_id, blob, keys, &dest, &opts()) {
        Ok(_) => Ok(dest),
        Err(e) => {
            let left: Vec<_> = std::fs::read_dir(&layers)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "left after failure {e}: {left:?}");
            Err(e)
        }
    }
}

fn sample_tar() -> Vec<u8> {
    tar_of(|b| {
        raw_entry(b, "etc/", tar::EntryType::Directory, "", b"", 0o755);
        file(b, "etc/hello", b"hello world\n", 0o644);
        raw_entry(
            b,
            "etc/hello.link",
            tar::EntryType::Link,
            "etc/hello",
            b"",
            0o644,
        );
        raw_entry(b, "etc/rel", tar::EntryType::Symlink, "hello", b"", 0o777);
        raw_entry(b, "etc/abs", tar::EntryType::Symlink, "/bin/sh", b"", 0o777);
        file(b, "bin/suid", b"#!/bin/sh\n", 0o4755);
        // A GNU long name (> 100 bytes).
        let long = format!("deep/{}/file", "d".repeat(120));
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o600);
        h.set_mtime(1_500_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, &long, &b"long"[..]).unwrap();
        // A PAX path, and a PAX xattr.
        let pax_path = format!("pax/{}", "p".repeat(150));
        b.append_pax_extensions([
            ("path", pax_path.as_bytes()),
            ("SCHILY.xattr.user.test", &b"v1"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o640);
        h.set_mtime(1_400_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.as_mut_bytes()[..5].copy_from_slice(b"short");
        h.set_cksum();
        b.append(&h, &b"pax"[..]).unwrap();
    })
}

fn check_sample(root: &Path) {
    let hello = root.join("etc/hello");
    assert_eq!(std::fs::read(&hello).unwrap(), b"hello world\n");
    let m = std::fs::symlink_metadata(&hello).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o644);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(
        m.ino(),
        std::fs::metadata(root.join("etc/hello.link"))
            .unwrap()
            .ino(),
        "hardlink"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/rel")).unwrap(),
        Path::new("hello")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/abs")).unwrap(),
        Path::new("/bin/sh")
    );
    assert_eq!(
        std::fs::metadata(root.join("bin/suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    let long = root.join(format!("deep/{}/file", "d".repeat(120)));
    assert_eq!(std::fs::read(&long).unwrap(), b"long");
    let pax = root.join(format!("pax/{}", "p".repeat(150)));
    assert_eq!(std::fs::read(&pax).unwrap(), b"pax");
    assert_eq!(std::fs::metadata(&pax).unwrap().mode() & 0o777, 0o640);
    assert_eq!(std::fs::metadata(&pax).unwrap().mtime(), 1_400_000_000);
    let mut v = [0u8; 16];
    let n = rustix_getxattr(&pax, "user.test", &mut v);
    assert_eq!(&v[..n], b"v1");
    assert_eq!(
        std::fs::metadata(root).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

fn rustix_getxattr(p: &Path, name: &str, buf: &mut [u8]) -> usize {
    rustix::fs::lgetxattr(p, name, buf).unwrap_or_else(|e| panic!("getxattr {name} {p:?}: {e}"))
}

#[test]
fn plain_gzip_zstd_and_docker() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = sample_tar();
    let diff_id = sha256(&tar);
    for (mt, blob) in [
        (spec::MEDIA_TYPE_TAR, tar.clone()),
        (spec::MEDIA_TYPE_TAR_GZIP, gzip(&tar)),
        (spec::MEDIA_TYPE_TAR_ZSTD, zstd(&tar)),
        (spec::MEDIA_TYPE_DOCKER_TAR_GZIP, gzip(&tar)),
        (spec::MEDIA_TYPE_ND_TAR_GZIP, gzip(&tar)),
    ] {
        let desc = descriptor(mt, &blob, BTreeMap::new());
        let root = pull(tmp.path(), &desc, &diff_id, &blob, &NoKeys)
            .unwrap_or_else(|e| panic!("{mt}: {e}"));
        check_sample(&root);
    }
}

fn compress(mt_base: &str, tar: &[u8]) -> Vec<u8> {
    match mt_base {
        spec::MEDIA_TYPE_TAR => tar.to_vec(),
        spec::MEDIA_TYPE_TAR_GZIP => gzip(tar),
        _ => zstd(tar),
    }
}

#[test]
fn encrypted_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let tar = sample_tar();
    let diff_id = sha256(&tar);
    let kek = random(32);
    let kid = "kbs:///default/key/layer";
    let provider = StaticKeys {
        resources: [(kid.to_string(), Zeroizing::new(kek.clone()))].into(),
        keys: vec![keys.key("rsa2"), keys.key("ec"), keys.key("rsa")],
    };
    let bases = [
        spec::MEDIA_TYPE_TAR,
        spec::MEDIA_TYPE_TAR_GZIP,
        spec::MEDIA_TYPE_TAR_ZSTD,
    ];
    let wrappings = [
        "RSA-OAEP",
        "RSA-OAEP-256",
        "ECDH-ES+A256KW",
        "packet-v1",
        "packet-v2",
    ];
    for (i, wrap) in wrappings.iter().enumerate() {
        let base = bases[i % 3];
        let plain = compress(base, &tar);
        let enc = encrypt_layer(tmp.path(), &plain);
        let ann = match *wrap {
            "packet-v1" | "packet-v2" => annotations(&[
                (spec::ANNOTATION_PUBOPTS, enc.pubopts.clone()),
                (
                    "org.opencontainers.image.enc.keys.provider.attestation-agent",
                    packet(kid, &kek, &enc.privopts, *wrap == "packet-v2"),
                ),
            ]),
            alg => {
                let recipient = if alg.starts_with("RSA") { "rsa" } else { "ec" };
                jwe_annotations(&enc, jwe(&keys, recipient, alg, &enc.privopts))
            }
        };
        let desc = descriptor(&format!("{base}+encrypted"), &enc.blob, ann);
        let root = pull(tmp.path(), &desc, &diff_id, &enc.blob, &provider)
            .unwrap_or_else(|e| panic!("{wrap} {base}: {e}"));
        check_sample(&root);
    }
}

fn expect_err(r: Result<std::path::PathBuf, LayerError>, want: &str) {
    match r {
        Ok(_) => panic!("accepted; want error containing {want:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains(want), "error {s:?} does not contain {want:?}");
            assert!(s.starts_with("layer sha256:"), "{s}");
        }
    }
}

#[test]
fn attacks_on_encrypted_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let tar = sample_tar();
    let diff_id = sha256(&tar);
    let plain = gzip(&tar);
    let enc = encrypt_layer(tmp.path(), &plain);
    let ann = jwe_annotations(&enc, jwe(&keys, "rsa", "RSA-OAEP", &enc.privopts));
    let mt = spec::MEDIA_TYPE_TAR_GZIP.to_string() + "+encrypted";
    let good = descriptor(&mt, &enc.blob, ann.clone());
    let right = StaticKeys {
        keys: vec![keys.key("rsa")],
        ..Default::default()
    };
    let p = tmp.path();
    pull(p, &good, &diff_id, &enc.blob, &right).unwrap();

    // A flipped ciphertext byte, digest recomputed (a swapped manifest): the HMAC.
    let mut flipped = enc.blob.clone();
    flipped[enc.blob.len() / 2] ^= 1;
    let d = descriptor(&mt, &flipped, ann.clone());
    expect_err(pull(p, &d, &diff_id, &flipped, &right), "HMAC mismatch");
    // The same blob against the original descriptor: the blob digest.
    expect_err(
        pull(p, &good, &diff_id, &flipped, &right),
        "blob digest mismatch",
    );
    // A wrong HMAC in the public options.
    let bad_pub = base64::Engine::encode(
        &B64,
        format!(
            r#"{{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"{}","cipheroptions":{{}}}}"#,
            base64::Engine::encode(&B64, random(32))
        ),
    );
    let mut a = ann.clone();
    a.insert(spec::ANNOTATION_PUBOPTS.into(), bad_pub);
    expect_err(
        pull(
            p,
            &descriptor(&mt, &enc.blob, a),
            &diff_id,
            &enc.blob,
            &right,
        ),
        "HMAC mismatch",
    );
    // Wrong blob digest in the descriptor.
    let mut d = good.clone();
    d.digest = sha256(b"other");
    expect_err(
        pull(p, &d, &diff_id, &enc.blob, &right),
        "blob digest mismatch",
    );
    // Wrong diff_id.
    expect_err(
        pull(p, &good, &sha256(b"x"), &enc.blob, &right),
        "diff_id mismatch",
    );
    // Truncated blob, and a longer one.
    expect_err(
        pull(p, &good, &diff_id, &enc.blob[..enc.blob.len() - 10], &right),
        "truncated blob",
    );
    let mut longer = enc.blob.clone();
    longer.push(0);
    expect_err(pull(p, &good, &diff_id, &longer, &right), "longer than");
    // Missing key, wrong key.
    expect_err(
        pull(p, &good, &diff_id, &enc.blob, &NoKeys),
        "no key for layer",
    );
    let wrong = StaticKeys {
        keys: vec![keys.key("rsa2")],
        ..Default::default()
    };
    expect_err(pull(p, &good, &diff_id, &enc.blob, &wrong), "wrong key");
    let ec_only = StaticKeys {
        keys: vec![keys.key("ec")],
        ..Default::default()
    };
    expect_err(
        pull(p, &good, &diff_id, &enc.blob, &ec_only),
        "no key for layer",
    );
    let ec_ann = jwe_annotations(&enc, jwe(&keys, "ec", "ECDH-ES+A256KW", &enc.privopts));
    let ec_desc = descriptor(&mt, &enc.blob, ec_ann);
    let ec2 = StaticKeys {
        keys: vec![keys.key("ec2")],
        ..Default::default()
    };
    expect_err(pull(p, &ec_desc, &diff_id, &enc.blob, &ec2), "wrong key");
    // No key annotation at all on an encrypted layer.
    let only_pub = annotations(&[(spec::ANNOTATION_PUBOPTS, enc.pubopts.clone())]);
    expect_err(
        pull(
            p,
            &descriptor(&mt, &enc.blob, only_pub),
            &diff_id,
            &enc.blob,
            &right,
        ),
        "no key for layer",
    );
    // Key provider: KBS has no such resource, and a wrong KEK.
    let kid = "kbs:///default/key/1";
    let pk = annotations(&[
        (spec::ANNOTATION_PUBOPTS, enc.pubopts.clone()),
        (
            "org.opencontainers.image.enc.keys.provider.attestation-agent",
            packet(kid, &random(32), &enc.privopts, false),
        ),
    ]);
    let pd = descriptor(&mt, &enc.blob, pk);
    expect_err(
        pull(p, &pd, &diff_id, &enc.blob, &NoKeys),
        "no key for layer",
    );
    let wrong_kek = StaticKeys {
        resources: [(kid.to_string(), Zeroizing::new(random(32)))].into(),
        keys: vec![],
    };
    expect_err(pull(p, &pd, &diff_id, &enc.blob, &wrong_kek), "wrong key");
    // Unknown media type.
    let mut d = good.clone();
    d.media_type = "application/x-evil".into();
    expect_err(
        pull(p, &d, &diff_id, &enc.blob, &right),
        "unsupported media type",
    );
}

#[test]
fn attacks_on_plain_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let tar = sample_tar();
    let gz = gzip(&tar);
    let mt = spec::MEDIA_TYPE_TAR_GZIP;
    let mut flipped = gz.clone();
    flipped[gz.len() / 2] ^= 0xff;
    expect_err(
        pull(
            p,
            &descriptor(mt, &gz, BTreeMap::new()),
            &sha256(&tar),
            &flipped,
            &NoKeys,
        ),
        "blob digest mismatch",
    );
    // A corrupt blob whose digest matches (swapped manifest): the tar's diff_id or the gzip CRC.
    let r = pull(
        p,
        &descriptor(mt, &flipped, BTreeMap::new()),
        &sha256(&tar),
        &flipped,
        &NoKeys,
    );
    assert!(r.is_err());
    // Not gzip at all.
    expect_err(
        pull(
            p,
            &descriptor(mt, &tar, BTreeMap::new()),
            &sha256(&tar),
            &tar,
            &NoKeys,
        ),
        "corrupt layer",
    );
}

fn malicious(name: &str, build: impl FnOnce(&mut tar::Builder<Vec<u8>>), want: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let tar = tar_of(build);
    let desc = descriptor(spec::MEDIA_TYPE_TAR, &tar, BTreeMap::new());
    let r = pull(tmp.path(), &desc, &sha256(&tar), &tar, &NoKeys);
    match r {
        Ok(_) => panic!("{name}: accepted"),
        Err(e) => assert!(e.to_string().contains(want), "{name}: {e}"),
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "{name}: wrote outside"
    );
}

#[test]
fn malicious_entries() {
    use tar::EntryType::*;
    malicious(
        "dotdot",
        |b| file(b, "../outside/x", b"x", 0o644),
        "`..` in path",
    );
    malicious(
        "inner dotdot",
        |b| file(b, "a/../../outside/x", b"x", 0o644),
        "`..` in path",
    );
    malicious(
        "absolute",
        |b| file(b, "/tmp/x", b"x", 0o644),
        "absolute path",
    );
    malicious(
        "symlink escape",
        |b| raw_entry(b, "a/l", Symlink, "../../outside", b"", 0o777),
        "symlink points out",
    );
    malicious(
        "hardlink dotdot",
        |b| raw_entry(b, "h", Link, "../outside/x", b"", 0o644),
        "hardlink points out",
    );
    malicious(
        "hardlink absolute",
        |b| raw_entry(b, "h", Link, "/etc/passwd", b"", 0o644),
        "hardlink points out",
    );
    malicious(
        "hardlink missing",
        |b| raw_entry(b, "h", Link, "nothere", b"", 0o644),
        "not in the layer",
    );
    malicious(
        "write through symlink parent",
        |b| {
            raw_entry(b, "l", Symlink, "/", b"", 0o777);
            file(b, "l/outside-x", b"x", 0o644);
        },
        "parent is a symlink",
    );
    malicious(
        "write through relative symlink parent",
        |b| {
            raw_entry(b, "d/", Directory, "", b"", 0o755);
            raw_entry(b, "l", Symlink, "d", b"", 0o777);
            file(b, "l/x", b"x", 0o644);
        },
        "parent is a symlink",
    );
    malicious(
        "hardlink through symlink",
        |b| {
            raw_entry(b, "l", Symlink, "/etc", b"", 0o777);
            raw_entry(b, "h", Link, "l/passwd", b"", 0o644);
        },
        "not in the layer",
    );
    malicious(
        "bad whiteout",
        |b| file(b, "a/.wh..", b"", 0o644),
        "bad whiteout",
    );
}

#[test]
fn whiteouts_devices_owners() {
    if !need_root("whiteouts (mknod), chown and trusted.* xattrs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    use tar::EntryType::*;
    let tar = tar_of(|b| {
        raw_entry(b, "dir/", Directory, "", b"", 0o750);
        file(b, "dir/.wh..wh..opq", b"", 0o644);
        file(b, ".wh.gone", b"", 0o644);
        raw_entry(b, "fifo", Fifo, "", b"", 0o640);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(Char);
        h.set_mode(0o666);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, "null", &b""[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o6755);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_size(2);
        b.append_data(&mut h, "dir/owned", &b"hi"[..]).unwrap();
    });
    let desc = descriptor(spec::MEDIA_TYPE_TAR, &tar, BTreeMap::new());
    let root = pull(tmp.path(), &desc, &sha256(&tar), &tar, &NoKeys).unwrap();
    let wh = std::fs::symlink_metadata(root.join("gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    assert_eq!(wh.rdev(), 0);
    assert!(!root.join(".wh.gone").exists());
    assert!(!root.join("dir/.wh..wh..opq").exists());
    let mut v = [0u8; 4];
    let n = rustix_getxattr(&root.join("dir"), "trusted.overlay.opaque", &mut v);
    assert_eq!(&v[..n], b"y");
    assert_eq!(
        std::fs::metadata(root.join("dir")).unwrap().mode() & 0o7777,
        0o750
    );
    let null = std::fs::symlink_metadata(root.join("null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null.file_type()
    ));
    assert_eq!(null.rdev(), rustix_makedev(1, 3));
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type()
    ));
    let owned = std::fs::metadata(root.join("dir/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1000, 1001, 0o6755)
    );
}

fn rustix_makedev(major: u64, minor: u64) -> u64 {
    (major << 8) | minor
}

#[test]
fn xattrs_the_filesystem_refuses_are_errors() {
    // user.* xattrs are not allowed on symlinks: a clear error, never a silent skip.
    let tmp = tempfile::tempdir().unwrap();
    let tar = tar_of(|b| {
        b.append_pax_extensions([("SCHILY.xattr.user.x", &b"1"[..])])
            .unwrap();
        raw_entry(b, "l", tar::EntryType::Symlink, "target", b"", 0o777);
    });
    let desc = descriptor(spec::MEDIA_TYPE_TAR, &tar, BTreeMap::new());
    expect_err(
        pull(tmp.path(), &desc, &sha256(&tar), &tar, &NoKeys),
        "xattr user.x on \"l\" unsupported here",
    );
}

#[test]
fn key_formats_and_media_types() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let rsa = d.join("rsa.pem");
    run(std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&rsa)
        .arg("2048"));
    let ec = d.join("ec.pem");
    run(std::process::Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&ec));
    let forms: Vec<(&str, Vec<&str>, &std::path::Path)> = vec![
        ("RSA", vec!["pkey", "-in"], &rsa), // PKCS#8 PEM
        ("RSA", vec!["pkey", "-outform", "DER", "-in"], &rsa), // PKCS#8 DER
        ("RSA", vec!["rsa", "-traditional", "-in"], &rsa), // PKCS#1 PEM
        (
            "RSA",
            vec!["rsa", "-traditional", "-outform", "DER", "-in"],
            &rsa,
        ), // PKCS#1 DER
        ("P-256", vec!["ec", "-in"], &ec),  // SEC1 PEM
        ("P-256", vec!["ec", "-outform", "DER", "-in"], &ec), // SEC1 DER
        ("P-256", vec!["pkey", "-in"], &ec), // PKCS#8 PEM
        ("P-256", vec!["pkey", "-outform", "DER", "-in"], &ec), // PKCS#8 DER
    ];
    for (kind, args, path) in forms {
        let bytes = run(std::process::Command::new("openssl").args(&args).arg(path));
        let k = cocoon_image_pull::DecryptionKey::from_pem_or_der(&bytes)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(k.kind(), kind, "{args:?}");
    }
    assert!(cocoon_image_pull::DecryptionKey::from_pem_or_der(b"not a key").is_err());
    // P-384 is refused, not misread.
    let p384 = run(std::process::Command::new("openssl").args([
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
    ]));
    assert!(cocoon_image_pull::DecryptionKey::from_pem_or_der(&p384).is_err());

    use cocoon_image_pull::{parse_media_type, Compression::*};
    for (mt, want) in [
        (
            "application/vnd.oci.image.layer.v1.tar",
            Some((None, false)),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Some((Gzip, false)),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Some((Zstd, false)),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+encrypted",
            Some((None, true)),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            Some((Gzip, true)),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+zstd+encrypted",
            Some((Zstd, true)),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip+encrypted",
            Some((Gzip, true)),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some((Gzip, false)),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some((Gzip, false)),
        ),
        ("application/vnd.oci.image.layer.v1.tar+bzip2", Option::None),
        (
            "application/vnd.oci.image.layer.v1.tar+encrypted+gzip",
            Option::None,
        ),
    ] {
        assert_eq!(parse_media_type(mt), want, "{mt}");
    }
}

#[test]
fn failure_after_unpack_leaves_nothing_even_with_read_only_dirs() {
    // diff_id is checked after the tar was fully unpacked and directory modes applied.
    let tmp = tempfile::tempdir().unwrap();
    let tar = tar_of(|b| {
        raw_entry(b, "ro/", tar::EntryType::Directory, "", b"", 0o755);
        file(b, "ro/f", b"x", 0o444);
        raw_entry(b, "ro/", tar::EntryType::Directory, "", b"", 0o555);
        raw_entry(b, "./", tar::EntryType::Directory, "", b"", 0o555);
    });
    let desc = descriptor(spec::MEDIA_TYPE_TAR, &tar, BTreeMap::new());
    expect_err(
        pull(tmp.path(), &desc, &sha256(b"other"), &tar, &NoKeys),
        "diff_id mismatch",
    );
    // And the same layer with the right diff_id keeps the last mode of each directory.
    let root = pull(tmp.path(), &desc, &sha256(&tar), &tar, &NoKeys).unwrap();
    assert_eq!(
        std::fs::metadata(root.join("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o555);
    std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
}
