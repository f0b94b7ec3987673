//! The agent as PID 1 of fresh PID, mount, UTS, network and IPC namespaces — the closest
//! this machine gets to a guest without a VM: it must mount, set up, reap orphans, and
//! on DestroySandbox "power off" (in a PID namespace, reboot() ends its init) — all
//! without touching the host's mounts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{call, temp_socket, AgentProcess, AGENT};

/// (mount point, fstype) pairs of a mountinfo file.
fn mounts(pid: &str) -> BTreeSet<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-").unwrap();
            (fields[4].to_string(), fields[dash + 1].to_string())
        })
        .collect()
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn nsenter(pid: u32, flags: &[&str], cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .args(flags)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn agent_as_pid1_mounts_reaps_and_powers_off() {
    if !nix::unistd::geteuid().is_root() {
        common::skip_or_fail("the PID-1 test needs root (namespaces and mounts)");
        return;
    }
    let host_mounts_before = mounts("self");
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let addr = format!("unix://{}", sock.display());

    let mut command = Command::new("unshare");
    command
        .args([
            "--pid",
            "--mount",
            "--uts",
            "--net",
            "--ipc",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            AGENT,
        ])
        .env("KATA_AGENT_SERVER_ADDR", &addr);
    let mut agent = AgentProcess::start(command);
    let unshare_pid = agent.child.id();
    let agent_pid = *children(unshare_pid).first().expect("unshare has no child");
    assert_eq!(
        status_field(agent_pid, "NSpid").unwrap(),
        format!("{agent_pid}\t1"),
        "the agent is not PID 1 of its namespace"
    );

    // Mounts, in the agent's namespace.
    let inside = mounts(&agent_pid.to_string());
    for (target, fstype) in [
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/dev/shm", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/ptmx", "devpts"),
        ("/run", "tmpfs"),
        ("/sys/fs/cgroup", "cgroup2"),
    ] {
        assert!(
            inside.contains(&(target.to_string(), fstype.to_string())),
            "no {fstype} on {target} inside: {inside:?}"
        );
    }

    // Hostname and loopback, in its UTS and network namespaces.
    assert_eq!(nsenter(agent_pid, &["-u"], &["hostname"]), "localhost");
    let flags = nsenter(
        agent_pid,
        &["-n", "-m"],
        &["cat", "/sys/class/net/lo/flags"],
    );
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is not up: flags {flags:#x}");

    // It says it is the init daemon.
    let details = call(&addr, "GetGuestDetails", "{}").unwrap();
    assert_eq!(details["agent_details"]["init_daemon"], true);

    // An orphan is re-parented to the agent and reaped when it exits.
    nsenter(
        agent_pid,
        &["-p", "-m"],
        &["sh", "-c", "sleep 2 </dev/null >/dev/null 2>&1 & exit 0"],
    );
    // The orphan must not hold nsenter's output pipes (output() would wait for it to
    // exit, and it would be reaped before we look); and it may not have exec'd `sleep`
    // yet when `sh` exits: poll.
    let find_deadline = Instant::now() + Duration::from_secs(5);
    let orphan = loop {
        let found = children(agent_pid)
            .into_iter()
            .find(|p| status_field(*p, "Name").as_deref() == Some("sleep"));
        match found {
            Some(p) => break p,
            None if Instant::now() < find_deadline => std::thread::sleep(Duration::from_millis(10)),
            None => panic!("the orphan was not re-parented to the agent"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(
            Instant::now() < deadline,
            "orphan {orphan} not reaped: state {:?}",
            status_field(orphan, "State")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // DestroySandbox: the agent "powers off", which in a PID namespace ends its init.
    call(&addr, "DestroySandbox", "{}").unwrap();
    agent.wait_exit(Duration::from_secs(15));
    assert!(!std::path::Path::new(&format!("/proc/{agent_pid}")).exists());

    // The host's mounts were never touched.
    assert_eq!(mounts("self"), host_mounts_before);
}
