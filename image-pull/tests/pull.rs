//! Whole-image pulls against a real Debian `docker-registry` on 127.0.0.1: images built
//! from Debian's busybox-static plus generated layers (whiteouts, opaque dirs, hardlinks,
//! symlinks, long names), pushed with real `skopeo`, encrypted by skopeo (`jwe:` RSA and
//! EC); layers in parallel, deduplicated by diff_id; failures leave nothing behind.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cocoon_image_pull::registry::{OciRegistry, RegistriesConf, RegistryOptions};
use cocoon_image_pull::{
    ImagePuller, KeyProvider, LayerStore, NoKeys, PullError, PullOptions, StaticKeys, UnpackOptions,
};
use common::registry::{self as reg, LayerBlob};
use common::{file, is_root, run, tar_of, Keys};

const BUSYBOX: &str = "/bin/busybox";

fn registry_client(addr: &str) -> Arc<OciRegistry> {
    Arc::new(
        OciRegistry::new(RegistryOptions {
            registries: RegistriesConf::parse(&reg::insecure_conf_text(&[addr])).unwrap(),
            ..Default::default()
        })
        .unwrap(),
    )
}

fn options() -> PullOptions {
    PullOptions {
        unpack: UnpackOptions {
            same_owner: is_root(),
        },
        progress_interval: Duration::from_millis(1),
        ..Default::default()
    }
}

fn puller(addr: &str, keys: Arc<dyn KeyProvider>, store: &Path) -> ImagePuller {
    ImagePuller::new(
        registry_client(addr),
        keys,
        Arc::new(LayerStore::open(store).unwrap()),
        options(),
    )
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn dir_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777);
    b.append_link(&mut h, path, target).unwrap();
}

fn hardlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Link, 0o644);
    b.append_link(&mut h, path, target).unwrap();
}

const LONG: &str = "usr/share/a-directory-whose-name-is-long-enough/and-a-file-name-that-makes-the-path-longer-than-one-hundred-bytes.txt";

/// Bottom: busybox and a small tree. Middle (zstd): a whiteout, an opaque dir, a hardlink,
/// a long name. Top (plain tar): the app.
fn busybox_layers() -> Vec<LayerBlob> {
    let bb = std::fs::read(BUSYBOX).unwrap();
    let base = tar_of(|b| {
        for d in ["bin", "etc", "tmp", "usr", "usr/share", "usr/share/doc"] {
            dir_entry(b, d, if d == "tmp" { 0o1777 } else { 0o755 });
        }
        file(b, "bin/busybox", &bb, 0o755);
        for applet in ["sh", "ls", "cat", "echo"] {
            symlink(b, &format!("bin/{applet}"), "busybox");
        }
        file(b, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644);
        file(b, "etc/remove-me", b"gone in the next layer\n", 0o644);
        file(b, "usr/share/doc/old", b"hidden by an opaque dir\n", 0o644);
    });
    let middle = tar_of(|b| {
        dir_entry(b, "etc", 0o755);
        file(b, "etc/.wh.remove-me", b"", 0o644);
        dir_entry(b, "usr/share/doc", 0o755);
        file(b, "usr/share/doc/.wh..wh..opq", b"", 0o644);
        file(b, "usr/share/doc/new", b"the only doc\n", 0o644);
        hardlink(b, "usr/share/doc/new-link", "usr/share/doc/new");
        let mut h = header(tar::EntryType::Regular, 0o600);
        h.set_size(5);
        b.append_data(&mut h, LONG, &b"long\n"[..]).unwrap();
    });
    let top = tar_of(|b| {
        dir_entry(b, "app", 0o755);
        file(
            b,
            "app/run.sh",
            b"#!/bin/sh\necho hello from the app\n",
            0o755,
        );
    });
    vec![
        LayerBlob::gzip(&base),
        LayerBlob::zstd(&middle),
        LayerBlob::plain(&top),
    ]
}

fn process() -> serde_json::Value {
    serde_json::json!({
        "Entrypoint": ["/bin/sh"], "Cmd": ["/app/run.sh"],
        "Env": ["PATH=/bin", "GREETING=hi"], "WorkingDir": "/app", "User": "0:0"
    })
}

fn check_layers(layers: &[std::path::PathBuf]) {
    assert_eq!(layers.len(), 3);
    let (base, middle, top) = (&layers[0], &layers[1], &layers[2]);
    assert_eq!(
        std::fs::read(base.join("bin/busybox")).unwrap(),
        std::fs::read(BUSYBOX).unwrap()
    );
    assert_eq!(
        std::fs::read_link(base.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::metadata(base.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    if is_root() {
        let wh = std::fs::symlink_metadata(middle.join("etc/remove-me")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    }
    let a = std::fs::metadata(middle.join("usr/share/doc/new")).unwrap();
    let b = std::fs::metadata(middle.join("usr/share/doc/new-link")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(std::fs::read(middle.join(LONG)).unwrap(), b"long\n");
    assert!(!middle.join("usr/share/doc/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::read_to_string(top.join("app/run.sh")).unwrap(),
        "#!/bin/sh\necho hello from the app\n"
    );
}

/// Mounts the layers as a read-only overlay (root only) and checks the merged view, then
/// runs the image's busybox in it.
fn check_overlay(layers: &[std::path::PathBuf]) {
    if !is_root() {
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    run(std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={}", lower.join(":")))
        .arg(mnt.path()));
    let m = mnt.path();
    let result = std::panic::catch_unwind(|| {
        assert!(!m.join("etc/remove-me").exists(), "whiteout not applied");
        assert_eq!(entries(&m.join("usr/share/doc")), ["new", "new-link"]);
        assert!(m.join("etc/passwd").exists());
        let out = run(std::process::Command::new("chroot")
            .arg(m)
            .args(["/bin/sh", "/app/run.sh"]));
        assert_eq!(out, b"hello from the app\n");
    });
    run(std::process::Command::new("umount").arg(m));
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn no_staging_left(store: &Path) {
    for e in entries(store) {
        assert!(!e.contains("staging"), "staging left in the store: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_plain_and_skopeo_encrypted_images() {
    if !reg::tools(&["openssl"]) {
        return;
    }
    if !Path::new(BUSYBOX).exists() && reg::skip("busybox-static not installed") {
        return;
    }
    let r = reg::start_registry(None);
    let work = tempfile::tempdir().unwrap();
    let keys = Keys::new(work.path());
    let layout = reg::layout("v1", &busybox_layers(), process());
    let plain = format!("{}/test/busybox:v1", r.addr);
    reg::push(layout.path(), "v1", &plain, None, &[]);
    let rsa = format!("{}/test/busybox-rsa:v1", r.addr);
    let rsa_key = format!("jwe:{}", keys.path("rsa.pub.pem").display());
    reg::push(
        layout.path(),
        "v1",
        &rsa,
        None,
        &["--encryption-key", &rsa_key],
    );
    let ec = format!("{}/test/busybox-ec:v1", r.addr);
    let ec_key = format!("jwe:{}", keys.path("ec.pub.pem").display());
    reg::push(
        layout.path(),
        "v1",
        &ec,
        None,
        &["--encryption-key", &ec_key],
    );

    // Plain, by tag.
    let store = work.path().join("store-plain");
    let p = puller(&r.addr, Arc::new(NoKeys), &store);
    let img = p.pull(&plain).await.unwrap();
    assert_eq!(img.manifest_digest, layout.manifest_digest);
    assert_eq!(
        img.defaults.entrypoint.as_deref(),
        Some(&["/bin/sh".to_owned()][..])
    );
    assert_eq!(
        img.defaults.cmd.as_deref(),
        Some(&["/app/run.sh".to_owned()][..])
    );
    assert_eq!(img.defaults.working_dir.as_deref(), Some("/app"));
    assert_eq!(img.defaults.user.as_deref(), Some("0:0"));
    assert_eq!(img.stats.layers, 3);
    assert_eq!(img.stats.fetched, 3);
    check_layers(&img.layers);
    check_overlay(&img.layers);
    // Again: everything is in the store.
    let again = p.pull(&plain).await.unwrap();
    assert_eq!(again.stats.fetched, 0);
    assert_eq!(again.layers, img.layers);

    // Encrypted by skopeo, RSA-OAEP and ECDH-ES, each into its own store.
    for (image, key) in [(&rsa, "rsa"), (&ec, "ec")] {
        let store = work.path().join(format!("store-{key}"));
        let k: Arc<dyn KeyProvider> = Arc::new(StaticKeys {
            keys: vec![keys.key(key)],
            ..Default::default()
        });
        let img = puller(&r.addr, k, &store).pull(image).await.unwrap();
        assert_eq!(img.stats.fetched, 3, "{image}");
        check_layers(&img.layers);
        check_overlay(&img.layers);
    }

    // Missing key and wrong key: an error naming the image and a layer, nothing in the store.
    for (name, keys) in [
        ("missing", Arc::new(NoKeys) as Arc<dyn KeyProvider>),
        (
            "wrong",
            Arc::new(StaticKeys {
                keys: vec![keys.key("rsa2")],
                ..Default::default()
            }) as Arc<dyn KeyProvider>,
        ),
    ] {
        let store = work.path().join(format!("store-{name}"));
        let e = puller(&r.addr, keys, &store).pull(&rsa).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, PullError::Layer { .. }), "{name}: {text}");
        assert!(
            text.contains(&rsa) && text.contains("layer sha256:"),
            "{text}"
        );
        let want = if name == "missing" {
            "no key"
        } else {
            "wrong key"
        };
        assert!(text.contains(want), "{name}: {text}");
        assert!(entries(&store).is_empty(), "{name}: {:?}", entries(&store));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_layers_by_diff_id() {
    if !reg::tools(&[]) {
        return;
    }
    let r = reg::start_registry(None);
    let big = common::random(4 << 20);
    let a = LayerBlob::gzip(&tar_of(|b| file(b, "a.bin", &big, 0o644)));
    let b1 = LayerBlob::gzip(&tar_of(|b| file(b, "b.txt", b"b\n", 0o644)));
    let c1 = LayerBlob::zstd(&tar_of(|b| file(b, "c.txt", b"c\n", 0o644)));
    let (a_diff, b_diff, c_diff) = (a.diff_id.clone(), b1.diff_id.clone(), c1.diff_id.clone());
    let a2 = LayerBlob {
        media_type: a.media_type.clone(),
        blob: a.blob.clone(),
        diff_id: a.diff_id.clone(),
    };
    let x = reg::layout("v1", &[a, b1], serde_json::json!({}));
    let y = reg::layout("v1", &[a2, c1], serde_json::json!({}));
    let (xi, yi) = (
        format!("{}/test/x:v1", r.addr),
        format!("{}/test/y:v1", r.addr),
    );
    reg::push(x.path(), "v1", &xi, None, &[]);
    reg::push(y.path(), "v1", &yi, None, &[]);

    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let p = Arc::new(puller(&r.addr, Arc::new(NoKeys), &store));
    let pulls: Vec<_> = [&xi, &xi, &yi, &xi, &yi]
        .into_iter()
        .map(|image| {
            let (p, image) = (p.clone(), image.clone());
            tokio::spawn(async move { p.pull(&image).await.unwrap() })
        })
        .collect();
    let mut fetched = 0;
    for t in pulls {
        fetched += t.await.unwrap().stats.fetched;
    }
    assert_eq!(fetched, 3, "each distinct layer is fetched once");
    let store_entries = entries(&store);
    assert_eq!(store_entries.len(), 3, "{store_entries:?}");
    for d in [a_diff, b_diff, c_diff] {
        assert!(p.store().layer_dir(&d).unwrap().is_dir(), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_layer_fails_the_pull_and_leaves_no_staging() {
    if !reg::tools(&[]) {
        return;
    }
    let r = reg::start_registry(None);
    let work = tempfile::tempdir().unwrap();
    let good = LayerBlob::gzip(&tar_of(|b| file(b, "good", b"good\n", 0o644)));
    let big = common::random(2 << 20);
    let mut bad = LayerBlob::gzip(&tar_of(|b| file(b, "bad", &big, 0o644)));
    bad.diff_id = reg::digest_of(b"not this layer");
    let bad_blob = reg::digest_of(&bad.blob);
    let image = format!("{}/test/bad-diff:v1", r.addr);
    reg::push(
        reg::layout("v1", &[good, bad], serde_json::json!({})).path(),
        "v1",
        &image,
        None,
        &[],
    );
    let store = work.path().join("store");
    let e = puller(&r.addr, Arc::new(NoKeys), &store)
        .pull(&image)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&image), "{text}");
    assert!(text.contains(&bad_blob), "{text}");
    assert!(text.contains("diff_id mismatch"), "{text}");
    no_staging_left(&store);
    assert!(entries(&store).len() <= 1, "only the good layer may stay");

    // A config whose diff_ids do not match the manifest's layer count.
    let one = LayerBlob::plain(&tar_of(|b| file(b, "one", b"1\n", 0o644)));
    let l = reg::layout("v1", &[one], serde_json::json!({}));
    let mut cfg = l.config.clone();
    cfg["rootfs"]["diff_ids"] = serde_json::json!([]);
    let bytes = cfg.to_string();
    // Rewrite the layout's config and manifest by hand.
    let manifest_path = l.path().join("blobs/sha256").join(&l.manifest_digest[7..]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let cd = reg::digest_of(bytes.as_bytes());
    std::fs::write(l.path().join("blobs/sha256").join(&cd[7..]), &bytes).unwrap();
    manifest["config"]["digest"] = serde_json::json!(cd);
    manifest["config"]["size"] = serde_json::json!(bytes.len());
    let mbytes = manifest.to_string();
    let md = reg::digest_of(mbytes.as_bytes());
    std::fs::write(l.path().join("blobs/sha256").join(&md[7..]), &mbytes).unwrap();
    let index = std::fs::read_to_string(l.path().join("index.json"))
        .unwrap()
        .replace(&l.manifest_digest, &md)
        .replace(
            &format!(
                "\"size\":{}",
                std::fs::metadata(&manifest_path).unwrap().len()
            ),
            &format!("\"size\":{}", mbytes.len()),
        );
    std::fs::write(l.path().join("index.json"), index).unwrap();
    let image = format!("{}/test/bad-config:v1", r.addr);
    reg::push(l.path(), "v1", &image, None, &[]);
    let e = puller(&r.addr, Arc::new(NoKeys), &work.path().join("store2"))
        .pull(&image)
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::Config { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("1 layers in the manifest but 0 diff_ids"),
        "{e}"
    );
}
