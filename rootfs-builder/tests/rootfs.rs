#![allow(clippy::unwrap_used)]
//! Rootfs images: reproducible, `veritysetup verify` accepts them and rejects them after
//! one flipped byte.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn build(dir: &Path, format: &str, out: &str) -> serde_json::Value {
    let agent = fake_agent(dir);
    let mods = fake_modules(dir);
    json(&run_ok(&[
        "rootfs",
        "--agent",
        agent.to_str().unwrap(),
        "--kernel-modules",
        mods.to_str().unwrap(),
        "--no-default-modules",
        "--module",
        "c",
        "--format",
        format,
        "-o",
        dir.join(out).to_str().unwrap(),
    ]))
}

fn veritysetup_verify(m: &serde_json::Value) -> bool {
    let cmd = m["verify_command"].as_str().unwrap();
    let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    Command::new(require("veritysetup"))
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

fn check(format: &str) {
    require("veritysetup");
    require(if format == "ext4" {
        "mkfs.ext4"
    } else {
        "mkfs.erofs"
    });
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ma = build(a.path(), format, "root.img");
    // A second build, later and elsewhere: identical bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mb = build(b.path(), format, "root.img");
    let ia = std::fs::read(a.path().join("root.img")).unwrap();
    let ib = std::fs::read(b.path().join("root.img")).unwrap();
    assert!(ia == ib, "{format} images differ between builds");
    assert_eq!(ma["verity"], mb["verity"]);

    let root = ma["verity"]["root_hash"].as_str().unwrap();
    assert_eq!(root.len(), 64);
    let cmdline = ma["kernel_cmdline"].as_str().unwrap();
    assert!(cmdline.contains(root) && cmdline.contains(&format!("rootfstype={format}")));
    assert!(cmdline.contains("dm-mod.create=\"cocoon-root,,,ro,0 "));
    let data_size = ma["data_size"].as_u64().unwrap();
    assert_eq!(data_size % 4096, 0);
    assert!(ia.len() as u64 > data_size, "no hash tree appended");

    assert!(
        veritysetup_verify(&ma),
        "veritysetup verify rejected a fresh image"
    );
    let img = a.path().join("root.img");
    let man = a.path().join("root.json");
    std::fs::write(&man, serde_json::to_string(&ma).unwrap()).unwrap();
    let ok = Command::new(bin())
        .args(["verify", "--rootfs"])
        .arg(&img)
        .arg("--manifest")
        .arg(&man)
        .output()
        .unwrap();
    assert!(ok.status.success());

    // Flip one byte of the agent inside the filesystem.
    let mut bytes = ia.clone();
    let needle = b"\x7fELF fake agent";
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("agent bytes not found in the image");
    bytes[pos + 100] ^= 0x01;
    std::fs::write(&img, &bytes).unwrap();
    assert!(
        !veritysetup_verify(&ma),
        "veritysetup verify accepted a flipped byte"
    );
    let bad = Command::new(bin())
        .args(["verify", "--rootfs"])
        .arg(&img)
        .arg("--manifest")
        .arg(&man)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn ext4_with_verity() {
    require("debugfs");
    check("ext4");
}

#[test]
fn erofs_with_verity() {
    check("erofs");
}

#[test]
fn ext4_owners_and_times_are_normalised() {
    let debugfs = require("debugfs");
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), "ext4", "root.img");
    let out = Command::new(debugfs)
        .args(["-R", "stat /init"])
        .arg(dir.path().join("root.img"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("User:     0   Group:     0"), "{text}");
    assert!(text.contains("mtime: 0x00000000"), "{text}");
    let out = Command::new(require("debugfs"))
        .args(["-R", "stat /dev/console"])
        .arg(dir.path().join("root.img"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Type: character special"), "{text}");
    let fsck = Command::new(require("e2fsck"))
        .args(["-fn"])
        .arg(dir.path().join("root.img"))
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
