//! AddSwap and AddSwapPath through the real binary.
//!
//! swapon acts on the whole host kernel, namespaces or not. So: the header check and
//! the refusals are tested without any swapon; the one real swapon uses a 256 KiB swap
//! file and a guard, made before the request, that runs `swapoff` on it whatever
//! happens (also on a failed assertion) and the test checks `/proc/swaps` no longer
//! lists it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use common::{call, AgentProcess, AGENT};

fn agent(dir: &Path, env: &[(&str, &str)]) -> (AgentProcess, String) {
    let sock = dir.join("agent.sock");
    let addr = format!("unix://{}", sock.display());
    let config = dir.join("agent.toml");
    std::fs::write(&config, "hotplug_timeout = 1\n").unwrap();
    let mut cmd = Command::new(AGENT);
    cmd.arg("--config")
        .arg(&config)
        .env("KATA_AGENT_SERVER_ADDR", &addr)
        .env("COCOON_RUN_DIR", dir.join("run"))
        .env_remove("COCOON_POLICY_CONFIDENTIAL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (AgentProcess::start(cmd), addr)
}

fn swaps() -> String {
    std::fs::read_to_string("/proc/swaps").unwrap()
}

/// Runs `swapoff` on the file when dropped, whatever happened.
struct SwapOff(PathBuf);

impl Drop for SwapOff {
    fn drop(&mut self) {
        if swaps().contains(self.0.to_str().unwrap()) {
            let _ = Command::new("swapoff").arg(&self.0).status();
        }
        if swaps().contains(self.0.to_str().unwrap()) {
            eprintln!("WARNING: {} is still an active swap area", self.0.display());
        }
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn add_swap_checks_the_header_and_the_device_without_swapon() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip_or_fail("needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = agent(dir.path(), &[]);
    let plain = dir.path().join("not-swap");
    std::fs::write(&plain, vec![0u8; 64 << 10]).unwrap();
    let swap_path = |p: &str| call(&addr, "AddSwapPath", &json!({ "path": p }).to_string());
    let err = swap_path(plain.to_str().unwrap()).unwrap_err();
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("not a swap area"),
        "{err}"
    );
    for (p, code) in [
        ("/nonexistent/cocoon-swap", "NOT_FOUND"),
        ("swapfile", "INVALID_ARGUMENT"),
        ("", "INVALID_ARGUMENT"),
    ] {
        let err = swap_path(p).unwrap_err();
        assert!(err.contains(code), "{p}: {err}");
    }
    // A PCI path with no device: waited for agent.hotplug_timeout (1 s here).
    let start = Instant::now();
    let err = call(
        &addr,
        "AddSwap",
        &json!({"PCIPath": [0x1e, 0x1d]}).to_string(),
    )
    .unwrap_err();
    assert!(
        err.contains("DEADLINE_EXCEEDED") && err.contains("1e/1d"),
        "{err}"
    );
    assert!(start.elapsed() >= Duration::from_secs(1));
    let err = call(&addr, "AddSwap", &json!({"PCIPath": [0x40]}).to_string()).unwrap_err();
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    let err = call(&addr, "AddSwap", "{}").unwrap_err();
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
}

#[test]
fn the_confidential_default_refuses_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = agent(dir.path(), &[("COCOON_POLICY_CONFIDENTIAL", "1")]);
    for (method, req) in [
        ("AddSwapPath", json!({"path": "/swapfile"})),
        ("AddSwap", json!({"PCIPath": [2]})),
    ] {
        let err = call(&addr, method, &req.to_string()).unwrap_err();
        assert!(err.contains("PERMISSION_DENIED"), "{method}: {err}");
    }
}

/// The one real swapon: a 256 KiB mkswap'ed file, swapped off by the guard.
#[test]
fn add_swap_path_swaps_on_a_tiny_file_then_it_is_swapped_off() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip_or_fail("needs root");
        return;
    }
    for p in ["mkswap", "swapoff"] {
        if !have(p) {
            common::skip_or_fail(&format!("needs {p}"));
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swapfile");
    std::fs::write(&file, vec![0u8; 256 << 10]).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new("mkswap").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let name = file.to_str().unwrap().to_string();
    assert!(!swaps().contains(&name));
    let (mut agent, addr) = agent(dir.path(), &[]);
    // Made before the request: swapoff runs whatever happens below.
    let guard = SwapOff(file.clone());
    let r = call(&addr, "AddSwapPath", &json!({ "path": name }).to_string());
    if let Err(e) = &r {
        if e.contains("Operation not permitted") {
            drop(guard);
            common::skip_or_fail(&format!("swapon is not permitted here: {e}"));
            return;
        }
    }
    r.unwrap();
    assert!(swaps().contains(&name), "{}", swaps());
    let line = agent.wait_for_line("swapon", Duration::from_secs(10));
    assert!(
        line.contains(&name) && line.contains("unencrypted"),
        "{line}"
    );
    // Twice: the kernel says it is busy.
    let err = call(&addr, "AddSwapPath", &json!({ "path": name }).to_string()).unwrap_err();
    assert!(err.contains("INTERNAL") && err.contains("swapon"), "{err}");
    drop(guard);
    assert!(!swaps().contains(&name), "{}", swaps());
}
