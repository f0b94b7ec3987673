//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SETUP: &str = "run `bash tests/qemu/setup.sh` first";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rootfs-builder"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails (never skips) when a host tool is missing.
pub fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{tool}` is not installed: {SETUP}");
}

/// The Debian kernel unpacked by setup.sh: (modules dir, version).
pub fn debian_kernel() -> (PathBuf, String) {
    let env = workspace().join("build/kernel/env");
    let text = std::fs::read_to_string(&env)
        .unwrap_or_else(|_| panic!("{} missing: {SETUP}", env.display()));
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not in {}", env.display()))
            .to_string()
    };
    (PathBuf::from(get("KERNEL_MODULES")), get("KERNEL_VERSION"))
}

/// Runs the CLI; panics with its stderr unless it succeeds.
pub fn run_ok(args: &[&str]) -> Output {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rootfs-builder {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A fake static agent: any bytes will do for packing.
pub fn fake_agent(dir: &Path) -> PathBuf {
    let p = dir.join("cocoon-agent");
    let mut data = b"\x7fELF fake agent ".to_vec();
    data.extend((0..50_000u32).map(|i| (i * 7 % 251) as u8));
    std::fs::write(&p, data).unwrap();
    p
}

/// A tiny `/lib/modules/<ver>` tree with xz-compressed modules and a dependency chain
/// `c -> b -> a`, plus a built-in `virtio`.
pub fn fake_modules(dir: &Path) -> PathBuf {
    let root = dir.join("lib/modules/9.9.9-test");
    let k = root.join("kernel/drivers/test");
    std::fs::create_dir_all(&k).unwrap();
    for name in ["a", "b", "c"] {
        let plain = format!("\x7fELF module {name}").into_bytes();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut plain.as_slice(), &mut xz).unwrap();
        std::fs::write(k.join(format!("{name}.ko.xz")), xz).unwrap();
    }
    std::fs::write(
        root.join("modules.dep"),
        "kernel/drivers/test/a.ko.xz:\n\
         kernel/drivers/test/b.ko.xz: kernel/drivers/test/a.ko.xz\n\
         kernel/drivers/test/c.ko.xz: kernel/drivers/test/b.ko.xz kernel/drivers/test/a.ko.xz\n",
    )
    .unwrap();
    std::fs::write(
        root.join("modules.builtin"),
        "kernel/drivers/virtio/virtio.ko\n",
    )
    .unwrap();
    root
}
