#![allow(clippy::unwrap_used)]
//! The initrd: parsed back by our reader, GNU cpio and bsdcpio; compared with the
//! manifest; byte-identical across builds, umasks and input mtimes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use rootfs_builder::{initrd, tree::ManifestEntry};

fn build(dir: &Path, out: &str, extra: &[&str]) -> serde_json::Value {
    let agent = fake_agent(dir);
    let mods = fake_modules(dir);
    let out_path = dir.join(out);
    let mut args = vec![
        "initrd",
        "--agent",
        agent.to_str().unwrap(),
        "--kernel-modules",
        mods.to_str().unwrap(),
        "--no-default-modules",
        "--module",
        "c",
        "--module",
        "virtio",
        "-o",
        out_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    json(&run_ok(&args))
}

/// Decompresses with the system's gzip and lists with an external cpio reader.
fn external_list(img: &Path, reader: &[&str]) -> Vec<String> {
    let cmd = format!(
        "gzip -dc '{}' | {} 2>/dev/null",
        img.display(),
        reader.join(" ")
    );
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    assert!(out.status.success(), "{cmd} failed");
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| format!("/{}", l.trim_start_matches("./")))
        .collect();
    names.sort();
    names
}

#[test]
fn archive_matches_manifest_for_all_readers() {
    require("cpio");
    require("bsdcpio");
    require("bsdtar");
    let dir = tempfile::tempdir().unwrap();
    let busybox = require("busybox");
    let m = build(
        dir.path(),
        "initrd.img",
        &["--busybox", busybox.to_str().unwrap()],
    );
    let img = dir.path().join("initrd.img");
    let manifest: initrd::InitrdManifest = serde_json::from_value(m.clone()).unwrap();

    // Our reader: every member equals its manifest line, owner 0:0, mtime 0.
    let entries = initrd::read(&img).unwrap();
    let parsed: Vec<ManifestEntry> = entries.iter().map(ManifestEntry::from_cpio).collect();
    assert_eq!(parsed, manifest.entries);
    assert!(entries
        .iter()
        .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 0));
    assert!(initrd::verify(&img, &manifest).unwrap().is_empty());

    // Sorted, parents first, no duplicates.
    let names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted);

    // GNU cpio and bsdcpio see the same paths.
    let mut want: Vec<String> = manifest.entries.iter().map(|e| e.path.clone()).collect();
    want.sort();
    assert_eq!(external_list(&img, &["cpio", "-t", "--quiet"]), want);
    assert_eq!(external_list(&img, &["bsdcpio", "-it"]), want);

    // bsdtar extracts the same files, modes and links the manifest lists.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let cmd = format!(
        "gzip -dc '{}' | bsdtar -xpf - -C '{}' --exclude dev/console",
        img.display(),
        x.display()
    );
    assert!(Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .status()
        .unwrap()
        .success());
    for e in &manifest.entries {
        let p = x.join(e.path.trim_start_matches('/'));
        match e.kind.as_str() {
            "file" => {
                use sha2::Digest;
                let data = std::fs::read(&p).unwrap();
                assert_eq!(
                    Some(hex::encode(sha2::Sha256::digest(&data))),
                    e.sha256,
                    "{}",
                    e.path
                );
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&p).unwrap().permissions(),
                );
                assert_eq!(format!("{:04o}", mode & 0o7777), e.mode, "{}", e.path);
            }
            "symlink" => assert_eq!(
                std::fs::read_link(&p).unwrap().to_string_lossy(),
                e.target.clone().unwrap().as_str()
            ),
            "dir" => assert!(p.is_dir(), "{}", e.path),
            _ => {}
        }
    }

    assert!(manifest.entries.iter().any(|e| e.path == "/bin/sh"));

    // Content: /init is the agent, /dev/console a device, modules decompressed in order.
    let init = entries.iter().find(|e| e.name == "init").unwrap();
    assert_eq!(
        init.data,
        std::fs::read(dir.path().join("cocoon-agent")).unwrap()
    );
    assert_eq!(init.mode, 0o100_755);
    let console = entries.iter().find(|e| e.name == "dev/console").unwrap();
    assert_eq!(
        (console.mode, console.rdev_major, console.rdev_minor),
        (0o020_600, 5, 1)
    );
    let order = entries
        .iter()
        .find(|e| e.name == "etc/cocoon/modules.order")
        .unwrap();
    let order: Vec<_> = std::str::from_utf8(&order.data)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    let base = "/lib/modules/9.9.9-test/kernel/drivers/test";
    assert_eq!(
        order,
        [
            format!("{base}/a.ko"),
            format!("{base}/b.ko"),
            format!("{base}/c.ko")
        ]
    );
    for path in &order {
        let e = entries
            .iter()
            .find(|e| format!("/{}", e.name) == *path)
            .unwrap();
        assert!(
            e.data.starts_with(b"\x7fELF module"),
            "{path} not decompressed"
        );
    }
    assert_eq!(m["modules"].as_array().unwrap().len(), 3);
    assert_eq!(m["modules_builtin"], serde_json::json!(["virtio"]));
    assert_eq!(m["kernel_version"], "9.9.9-test");
    // The built-in pause bundle.
    assert!(entries
        .iter()
        .any(|e| e.name == "pause_bundle/rootfs/pause"));
    assert!(entries.iter().any(|e| e.name == "pause_bundle/config.json"));
}

#[test]
fn byte_identical_across_umask_mtime_and_paths() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (dir, umask, stamp, mode) in [
        (a.path(), "022", "2001-01-01", "0644"),
        (b.path(), "077", "2024-06-30", "0600"),
    ] {
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(bundle.join("config.json"), "{}").unwrap();
        std::fs::write(bundle.join("rootfs/pause"), "pause").unwrap();
        std::fs::write(dir.join("policy.rego"), "package agent_policy\n").unwrap();
        let agent = fake_agent(dir);
        let mods = fake_modules(dir);
        let script = format!(
            "chmod {mode} {d}/policy.rego {d}/bundle/config.json; \
             chmod 0755 {d}/bundle/rootfs/pause; \
             find {d} -exec touch -h -d {stamp} {{}} +; \
             umask {umask}; exec {bin} initrd --agent {agent} --kernel-modules {mods} \
             --module c --no-default-modules --pause-bundle {d}/bundle \
             --policy {d}/policy.rego --compression zstd --compression-level 3 -o {d}/out.img",
            d = dir.display(),
            bin = bin().display(),
            agent = agent.display(),
            mods = mods.display(),
        );
        let st = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    }
    let x = std::fs::read(a.path().join("out.img")).unwrap();
    let y = std::fs::read(b.path().join("out.img")).unwrap();
    assert!(x == y, "initrds differ across umask/mtime/path");
    // The bundle's executable bit survived, the rest was normalised.
    let entries = initrd::read(&a.path().join("out.img")).unwrap();
    let mode = |n: &str| entries.iter().find(|e| e.name == n).unwrap().mode & 0o7777;
    assert_eq!(mode("pause_bundle/rootfs/pause"), 0o755);
    assert_eq!(mode("pause_bundle/config.json"), 0o644);
    assert_eq!(mode("etc/kata-opa/default-policy.rego"), 0o644);
}

#[test]
fn source_date_epoch_sets_mtimes_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(dir.path());
    let img = dir.path().join("i.img");
    let man = dir.path().join("i.json");
    let out = Command::new(bin())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["initrd", "--agent", agent.to_str().unwrap(), "-o"])
        .arg(&img)
        .arg("--manifest")
        .arg(&man)
        .output()
        .unwrap();
    assert!(out.status.success());
    let entries = initrd::read(&img).unwrap();
    assert!(entries.iter().all(|e| e.mtime == 1_700_000_000));

    let verify = |img: &Path| {
        Command::new(bin())
            .args(["verify", "--initrd"])
            .arg(img)
            .arg("--manifest")
            .arg(&man)
            .output()
            .unwrap()
    };
    assert!(verify(&img).status.success());
    let mut data = std::fs::read(&img).unwrap();
    let n = data.len();
    data[n / 2] ^= 0x01;
    std::fs::write(&img, data).unwrap();
    let v = verify(&img);
    assert!(!v.status.success(), "verify accepted a tampered initrd");

    let bad = Command::new(bin())
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .args(["initrd", "--agent", agent.to_str().unwrap(), "-o"])
        .arg(dir.path().join("x.img"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// The real Debian 6.12 tree from setup.sh: the vsock modules are modules there and
/// virtio/virtio_pci built in.
#[test]
fn debian_kernel_modules() {
    let (mods, version) = debian_kernel();
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(dir.path());
    let img = dir.path().join("i.img");
    let m = json(&run_ok(&[
        "initrd",
        "--agent",
        agent.to_str().unwrap(),
        "--kernel-modules",
        mods.to_str().unwrap(),
        "-o",
        img.to_str().unwrap(),
    ]));
    assert_eq!(m["kernel_version"], version.as_str());
    let names: Vec<String> = m["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "vsock.ko",
            "vmw_vsock_virtio_transport_common.ko",
            "vmw_vsock_virtio_transport.ko"
        ]
    );
    let builtin = m["modules_builtin"].as_array().unwrap();
    assert!(builtin.iter().any(|v| v == "virtio_pci"));
    assert!(m.get("module_signatures_stripped").is_none());
    let magic = rootfs_builder::modules::MODULE_SIG_MAGIC;
    for e in initrd::read(&img).unwrap() {
        if e.name.ends_with(".ko") {
            assert!(
                e.data.starts_with(b"\x7fELF"),
                "{} is not a plain ELF",
                e.name
            );
            // Debian signs its modules; by default they ship as signed.
            assert!(e.data.ends_with(magic), "{} lost its signature", e.name);
        }
    }

    // --strip-module-signatures: the same ELF files without the signature.
    let stripped = dir.path().join("s.img");
    let m = json(&run_ok(&[
        "initrd",
        "--agent",
        agent.to_str().unwrap(),
        "--kernel-modules",
        mods.to_str().unwrap(),
        "--strip-module-signatures",
        "-o",
        stripped.to_str().unwrap(),
    ]));
    assert_eq!(m["module_signatures_stripped"], 3);
    let signed: std::collections::BTreeMap<String, Vec<u8>> = initrd::read(&img)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.data))
        .collect();
    let mut seen = 0;
    for e in initrd::read(&stripped).unwrap() {
        if e.name.ends_with(".ko") {
            let full = &signed[&e.name];
            assert!(!e.data.ends_with(magic), "{} still signed", e.name);
            assert!(full.starts_with(&e.data) && full.len() > e.data.len() + 200);
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}
