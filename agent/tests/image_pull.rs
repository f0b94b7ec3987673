//! Guest image pull through the real agent: CreateContainer with an `image_guest_pull`
//! storage exactly as the Kata runtime sends it, a real Debian `docker-registry` on
//! loopback, images pushed by real `skopeo`, encrypted by `cocoon-ctl image encrypt`
//! (CoCo provider packets, KEK in the KBS) and by skopeo (`jwe:` RSA, private key in the
//! KBS), the test KBS (`cocoon-test-kbs`, a faithful double of Trustee's KBS, which
//! cannot run here) and the sample attester; busybox containers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod kbs;
mod pod;
#[path = "../../image-pull/tests/common/registry.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use kbs::TestKbs;
use pod::{busybox_rootfs, require_pod, Pod};
use registry::LayerBlob;

const KEK_ID: &str = "kbs:///default/image-key/1";
const RSA_ID: &str = "kbs:///default/image-key/rsa";

/// A tar of `dir` (symlinks kept as symlinks), paths relative to it.
fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

fn app_layer() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    let script = dir.path().join("app/run.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"hello $GREETING uid=$(id -u) cwd=$(pwd)\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    tar_dir(dir.path())
}

/// Two layers: busybox, then the app; the config says how to run it.
fn image_layout() -> registry::Layout {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let base = tar_dir(&rootfs);
    registry::layout(
        "v1",
        &[LayerBlob::gzip(&base), LayerBlob::zstd(&app_layer())],
        json!({
            "Entrypoint": ["/bin/sh"], "Cmd": ["/app/run.sh"],
            "Env": ["PATH=/bin", "GREETING=from-the-image"], "WorkingDir": "/app"
        }),
    )
}

fn tools() -> bool {
    registry::tools(&["openssl"])
}

fn config(kbs_url: &str, registry: &str, work_dir: &Path, extra: &str) -> String {
    format!(
        "attester = \"sample\"\naa_kbc_params = \"cc_kbc::{kbs_url}\"\n\
         guest_components_rest_api = \"none\"\n\
         [image]\nwork_dir = \"{}\"\ndecryption_key_uris = [\"{RSA_ID}\"]\n{extra}\n\
         [[image.registry_config.registry]]\nlocation = \"{registry}\"\ninsecure = true\n",
        work_dir.display()
    )
}

/// The storage the Kata runtime sends for a guest-pulled container image.
fn storage(pod: &Pod, cid: &str, image: &str, container_type: &str) -> Value {
    let metadata = json!({"metadata": {
        "io.kubernetes.cri.container-type": container_type,
        "io.kubernetes.cri.image-name": image,
    }});
    json!({
        "driver": "image_guest_pull",
        "driver_options": [format!("image_guest_pull={metadata}")],
        "source": image,
        "fstype": "overlay",
        "mount_point": mount_point(pod, cid).display().to_string(),
    })
}

fn mount_point(pod: &Pod, cid: &str) -> PathBuf {
    pod.run_dir.join(cid).join("rootfs")
}

/// A spec as the runtime sends it for a guest-pulled image: root at the storage's mount
/// point; no args/env/cwd, so the image config's defaults apply.
fn guest_pull_spec(pod: &Pod, cid: &str) -> Value {
    let mut spec = pod.spec(&[]);
    spec["Root"]["Path"] = json!(mount_point(pod, cid).display().to_string());
    spec["Process"]["Args"] = json!([]);
    spec["Process"]["Env"] = json!(["HOME=/root"]);
    spec["Process"]["Cwd"] = json!("");
    spec
}

fn create(pod: &Pod, cid: &str, image: &str, container_type: &str) -> Result<Value, String> {
    pod.call(
        "CreateContainer",
        json!({
            "container_id": cid, "exec_id": cid,
            "OCI": guest_pull_spec(pod, cid),
            "storages": [storage(pod, cid, image, container_type)],
        }),
    )
}

fn run_and_read(pod: &Pod, cid: &str) -> String {
    pod.ok("StartContainer", json!({"container_id": cid}));
    let out = pod.read_all(cid, cid, false);
    pod.wait(cid, cid);
    out
}

fn layer_store_entries(work_dir: &Path) -> Vec<String> {
    match std::fs::read_dir(work_dir.join("layers")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn rsa_key(dir: &Path) -> (PathBuf, Vec<u8>) {
    let private = dir.join("rsa.pem");
    let public = dir.join("rsa.pub.pem");
    assert!(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&private)
        .arg("2048")
        .output()
        .unwrap()
        .status
        .success());
    assert!(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap()
        .status
        .success());
    (public, std::fs::read(private).unwrap())
}

fn pause_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("pause_bundle");
    let rootfs = busybox_rootfs(&bundle);
    assert!(rootfs.ends_with("rootfs"));
    std::fs::write(
        bundle.join("config.json"),
        json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/echo", "pause from the baked-in bundle"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]},
            "root": {"path": "rootfs", "readonly": true}
        })
        .to_string(),
    )
    .unwrap();
    bundle
}

#[test]
fn guest_pull_encrypted_images_run_and_failures_leave_nothing() {
    require_pod!();
    if !tools() {
        return;
    }
    let reg = registry::start_registry(None);
    let work = tempfile::tempdir().unwrap();
    let kek: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let (rsa_pub, rsa_private) = rsa_key(work.path());

    // One image, pushed three ways.
    let layout = image_layout();
    let plain = format!("{}/test/app:plain", reg.addr);
    registry::push(layout.path(), "v1", &plain, None, &[]);
    let jwe = format!("{}/test/app:jwe", reg.addr);
    let rsa_arg = format!("jwe:{}", rsa_pub.display());
    registry::push(
        layout.path(),
        "v1",
        &jwe,
        None,
        &["--encryption-key", &rsa_arg],
    );
    let enc_dir = work.path().join("enc-layout");
    cocoon_ctl::image::layout::encrypt_layout(&cocoon_ctl::image::layout::EncryptOptions {
        layout: layout.path().to_path_buf(),
        output: Some(enc_dir.clone()),
        tags: vec![],
        layers: vec![],
        kbs: Some((
            cocoon_ctl::image::keywrap::Kek::from_bytes(&kek).unwrap(),
            KEK_ID.to_owned(),
        )),
        recipients: vec![],
        provider_name: "attestation-agent".to_owned(),
        allow_zstd: true,
    })
    .unwrap();
    let provider = format!("{}/test/app:provider", reg.addr);
    registry::push(&enc_dir, "v1", &provider, None, &[]);

    let kbs = TestKbs::start(
        &[
            ("default/image-key/1", &kek),
            ("default/image-key/rsa", &rsa_private),
        ],
        None,
        &[],
    );
    let image_dir = work.path().join("image");
    let pause = pause_bundle(work.path());
    let pod = Pod::with_config_env(
        &config(&kbs.url, &reg.addr, &image_dir, ""),
        &[("COCOON_PAUSE_BUNDLE", &pause)],
    );

    // The sandbox container comes from the baked-in pause bundle, with no pull.
    create(&pod, "sandbox", "pause", "sandbox").unwrap();
    assert_eq!(
        run_and_read(&pod, "sandbox").trim(),
        "pause from the baked-in bundle"
    );
    assert!(layer_store_entries(&image_dir).is_empty());

    // Provider-packet layers (KEK from the KBS), then the JWE ones (private key from the
    // KBS), then plain: each runs with the image's defaults merged in.
    for (cid, image) in [
        ("c-provider", &provider),
        ("c-jwe", &jwe),
        ("c-plain", &plain),
    ] {
        create(&pod, cid, image, "container")
            .unwrap_or_else(|e| panic!("{cid}: {e}\n{}", pod.agent_log()));
        assert_eq!(
            run_and_read(&pod, cid).trim(),
            "hello from-the-image uid=0 cwd=/app",
            "{cid}"
        );
    }
    // The same two layers (same diff_ids) stored once for all three images.
    assert_eq!(layer_store_entries(&image_dir).len(), 2);
    let log = pod.agent_log();
    assert!(log.contains("image pulled"), "no pull summary in the log");
    assert!(log.contains("container rootfs from guest-pulled image"));
    assert!(
        !log.contains("from-the-image uid"),
        "workload output in the agent log"
    );

    // RemoveContainer unmounts the overlay and removes its upper dir.
    pod.ok(
        "RemoveContainer",
        json!({"container_id": "c-provider", "timeout": 10}),
    );
    let mp = mount_point(&pod, "c-provider");
    assert!(!pod
        .mounts()
        .iter()
        .any(|m| m.contains(&*mp.to_string_lossy())));
    assert!(!image_dir.join("overlay/c-provider").exists());
    drop(pod);

    // Failures, each on a fresh agent and store: nothing visible, nothing left.
    let wrong_kek = vec![7u8; 32];
    let bad_kbs = TestKbs::start(&[("default/image-key/1", &wrong_kek)], None, &[]);
    for (name, kbs_url, image, want) in [
        ("wrong KEK", bad_kbs.url.clone(), &provider, "wrong key"),
        ("no JWE key in the KBS", bad_kbs.url.clone(), &jwe, "no key"),
        (
            "not in the registry",
            kbs.url.clone(),
            &format!("{}/test/app:missing", reg.addr),
            "not found",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let image_dir = dir.path().join("image");
        let pod = Pod::with_config_env(
            &config(&kbs_url, &reg.addr, &image_dir, ""),
            &[("COCOON_PAUSE_BUNDLE", &pause)],
        );
        let e = create(&pod, "c1", image, "container").unwrap_err();
        println!("{name}: {e}");
        assert!(e.contains(image.as_str()), "{name}: {e}");
        assert!(e.to_lowercase().contains(want), "{name}: {e}");
        assert!(
            layer_store_entries(&image_dir).is_empty(),
            "{name}: {:?}",
            layer_store_entries(&image_dir)
        );
        assert!(!pod.run_dir.join("c1").exists(), "{name}: bundle left");
        assert!(pod.mounts().iter().all(|m| !m.contains("/c1/")), "{name}");
        // The agent still works.
        pod.ok("Check", json!({}));
    }

    // An image signature policy we cannot enforce: refused, not ignored.
    let dir = tempfile::tempdir().unwrap();
    let pod = Pod::with_config_env(
        &config(
            &kbs.url,
            &reg.addr,
            &dir.path().join("image"),
            "image_security_policy_uri = \"kbs:///default/security-policy/test\"",
        ),
        &[("COCOON_PAUSE_BUNDLE", &pause)],
    );
    let e = create(&pod, "c1", &plain, "container").unwrap_err();
    assert!(e.contains("image_security_policy_uri"), "{e}");
}
