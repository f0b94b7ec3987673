#![allow(clippy::unwrap_used)]
//! `kernel-config check` on Debian's 6.1 and 6.12 configs reports the expected gaps, and
//! the fragments merged onto x86_64_defconfig survive `make olddefconfig`.

use std::path::{Path, PathBuf};
use std::process::Command;

use kernel_config::{check, needed_modules, Config, Finding, Fragment, Status};

const SETUP: &str = "run `bash tests/qemu/setup.sh` first";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn debian(series: &str) -> Config {
    let p = workspace().join(format!("build/kernel-configs/config-{series}-amd64"));
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|_| panic!("{} missing: {SETUP}", p.display()));
    Config::parse(&text)
}

fn findings(series: &str) -> Vec<Finding> {
    let frags: Vec<Fragment> = ["base", "confidential"]
        .iter()
        .map(|n| Fragment::load(n).unwrap())
        .collect();
    check(&debian(series), &frags)
}

fn status_of(f: &[Finding], sym: &str) -> Status {
    f.iter().find(|x| x.symbol == sym).unwrap().status
}

#[test]
fn debian_6_1_gaps() {
    let f = findings("6.1");
    // No configfs-tsm and no TDX guest driver before 6.7 / 6.7.
    assert_eq!(status_of(&f, "CONFIG_TSM_REPORTS"), Status::Absent);
    assert_eq!(status_of(&f, "CONFIG_TDX_GUEST_DRIVER"), Status::Absent);
    assert_eq!(status_of(&f, "CONFIG_INTEL_TDX_GUEST"), Status::NotSet);
    assert_eq!(status_of(&f, "CONFIG_UNACCEPTED_MEMORY"), Status::Absent);
    // virtio itself is modular in Debian's 6.1: fine, but the initrd must ship it.
    assert_eq!(status_of(&f, "CONFIG_VIRTIO_PCI"), Status::Module);
    let m = needed_modules(&f);
    for want in [
        "virtio",
        "virtio_pci",
        "vsock",
        "vmw_vsock_virtio_transport",
        "sev_guest",
    ] {
        assert!(m.contains(&want.to_string()), "{want} not in {m:?}");
    }
    assert!(!m.contains(&"tsm".to_string()));
    common_gaps(&f);
}

#[test]
fn debian_6_12_gaps() {
    let f = findings("6.12");
    assert_eq!(status_of(&f, "CONFIG_TSM_REPORTS"), Status::Module);
    assert_eq!(status_of(&f, "CONFIG_INTEL_TDX_GUEST"), Status::Ok);
    assert_eq!(status_of(&f, "CONFIG_TDX_GUEST_DRIVER"), Status::Module);
    assert_eq!(status_of(&f, "CONFIG_VIRTIO_PCI"), Status::Ok);
    let m = needed_modules(&f);
    for want in [
        "tsm",
        "tdx_guest",
        "sev_guest",
        "vsock",
        "vmw_vsock_virtio_transport",
    ] {
        assert!(m.contains(&want.to_string()), "{want} not in {m:?}");
    }
    assert!(!m.contains(&"virtio_pci".to_string()));
    common_gaps(&f);
}

/// What both Debian kernels lack for a Cocoon guest.
fn common_gaps(f: &[Finding]) {
    // dm-verity must be built in to open the rootfs from the command line.
    assert_eq!(status_of(f, "CONFIG_DM_VERITY"), Status::ModuleNotBuiltin);
    assert_eq!(status_of(f, "CONFIG_BLK_DEV_DM"), Status::ModuleNotBuiltin);
    assert_eq!(status_of(f, "CONFIG_DM_INIT"), Status::Absent);
    // Debian loads unsigned modules and does not force lockdown.
    assert_eq!(status_of(f, "CONFIG_MODULE_SIG_FORCE"), Status::NotSet);
    assert_eq!(status_of(f, "CONFIG_DEVMEM"), Status::MustBeOff);
    assert_eq!(status_of(f, "CONFIG_AMD_MEM_ENCRYPT"), Status::Ok);
}

#[test]
fn cli_exit_codes_and_modules() {
    let bin = env!("CARGO_BIN_EXE_kernel-config");
    let cfg = workspace().join("build/kernel-configs/config-6.12-amd64");
    assert!(cfg.is_file(), "{} missing: {SETUP}", cfg.display());
    let out = Command::new(bin)
        .arg("check")
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("WRONG   CONFIG_DM_VERITY"), "{text}");
    let out = Command::new(bin)
        .args(["modules", "-c"])
        .arg(&cfg)
        .args(["-f", "base"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mods = String::from_utf8_lossy(&out.stdout);
    assert!(mods.lines().any(|l| l == "vsock"), "{mods}");
    // A config that satisfies everything passes.
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged");
    let st = Command::new(bin)
        .args(["merge", "--base"])
        .arg(&cfg)
        .args(["-f", "base", "-f", "confidential", "-o"])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new(bin)
        .arg("check")
        .arg("-c")
        .arg(&merged)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The build script's config stage on Debian's 6.12 Kconfig: every fragment line must
/// survive `make olddefconfig` (dependencies complete), for base+confidential+debug and
/// for the Kata-style kernel of tests/qemu/builtin-kernel.sh, base+builtin+trim, and for
/// the confidential kernel with it built in (docs/kata.md).
#[test]
fn fragments_survive_olddefconfig() {
    olddefconfig_keeps(&["base", "confidential", "debug"]);
    olddefconfig_keeps(&["base", "builtin", "trim"]);
    olddefconfig_keeps(&["base", "confidential", "builtin"]);
}

fn olddefconfig_keeps(fragments: &[&str]) {
    let env = std::fs::read_to_string(workspace().join("build/kernel/env"))
        .unwrap_or_else(|_| panic!("build/kernel/env missing: {SETUP}"));
    let src = env
        .lines()
        .find_map(|l| l.strip_prefix("KERNEL_SRC="))
        .unwrap_or_else(|| panic!("no KERNEL_SRC: {SETUP}"));
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(workspace().join("kernel-config/build-kernel.sh"))
        .args(["--source", src, "--config-only"])
        .args(fragments.iter().flat_map(|f| ["--fragment", f]))
        .arg("--out")
        .arg(out_dir.path())
        .env("KERNEL_CONFIG_BIN", env!("CARGO_BIN_EXE_kernel-config"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 0 problems"), "{fragments:?}: {text}");
}
