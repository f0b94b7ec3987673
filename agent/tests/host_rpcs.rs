//! RPCs that hand the guest's kernel what the host says (SetGuestDateTime,
//! ReseedRandomDev) and the iptables RPCs, through the real binary.
//!
//! The host's clock is never changed here: SetGuestDateTime is checked natively only
//! on its validation path, and its kernel call with the agent lacking CAP_SYS_TIME
//! (`setpriv --bounding-set -sys_time`), so the kernel answers EPERM. Setting the clock
//! for real is left to the QEMU guest (not run by these tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use common::{call, AgentProcess, AGENT};

struct Agent {
    _dir: tempfile::TempDir,
    addr: String,
    agent: AgentProcess,
}

impl Agent {
    /// The agent, run through `wrapper` (a program and its arguments, then the agent).
    fn start(wrapper: &[&str]) -> Option<Agent> {
        if !nix::unistd::Uid::effective().is_root() {
            common::skip_or_fail("these tests need root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(AGENT);
                c
            }
            None => Command::new(AGENT),
        };
        command
            .env(
                "KATA_AGENT_SERVER_ADDR",
                format!("unix://{}", sock.display()),
            )
            .env("COCOON_RUN_DIR", dir.path().join("run"));
        let agent = AgentProcess::start(command);
        Some(Agent {
            addr: format!("unix://{}", sock.display()),
            _dir: dir,
            agent,
        })
    }

    fn call(&self, method: &str, req: Value) -> Result<Value, String> {
        call(&self.addr, method, &req.to_string())
    }

    /// Waits for a log line containing `needle`.
    fn log_line(&mut self, needle: &str) -> String {
        self.agent.wait_for_line(needle, Duration::from_secs(10))
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn set_guest_date_time_checks_and_calls_the_kernel() {
    if !have("setpriv") {
        common::skip_or_fail("needs setpriv (util-linux)");
        return;
    }
    // Natively: only requests refused before the kernel is asked.
    let Some(native) = Agent::start(&[]) else {
        return;
    };
    for (req, field) in [
        (json!({"Sec": 1_700_000_000i64, "Usec": 1_000_000}), "Usec"),
        (json!({"Sec": 1_700_000_000i64, "Usec": -1}), "Usec"),
        (json!({"Sec": -5, "Usec": 0}), "Sec"),
        // An empty request would mean 1970.
        (json!({}), "Sec"),
    ] {
        let err = native.call("SetGuestDateTime", req).unwrap_err();
        assert!(
            err.contains("INVALID_ARGUMENT") && err.contains(field),
            "{err}"
        );
    }
    drop(native);
    // Without CAP_SYS_TIME the kernel refuses: the call really reaches clock_settime.
    let Some(mut agent) = Agent::start(&["setpriv", "--bounding-set", "-sys_time", "--"]) else {
        return;
    };
    let before = std::time::SystemTime::now();
    let err = agent
        .call("SetGuestDateTime", json!({"Sec": 86_400, "Usec": 5}))
        .unwrap_err();
    assert!(
        err.contains("INTERNAL")
            && err.contains("setting the clock")
            && err.contains("not permitted"),
        "{err}"
    );
    let line = agent.log_line("SetGuestDateTime");
    assert!(line.contains("untrusted host"), "{line}");
    // (Still 20xx here.)
    assert!(std::time::SystemTime::now() >= before);
}

/// ReseedRandomDev mixes the bytes into the kernel's pool (0 bits credited, so this
/// changes nothing the host relies on) and reseeds the CRNG.
#[test]
fn reseed_random_dev_mixes_in_the_data() {
    let Some(mut agent) = Agent::start(&[]) else {
        return;
    };
    let data = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([0x5a_u8; 64])
    };
    agent
        .call("ReseedRandomDev", json!({"data": data}))
        .unwrap();
    let line = agent.log_line("ReseedRandomDev");
    assert!(
        line.contains("untrusted host") && line.contains("not credited"),
        "{line}"
    );
    let err = agent.call("ReseedRandomDev", json!({})).unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("data"),
        "{err}"
    );
    drop(agent);
    // Without CAP_SYS_ADMIN the kernel refuses the ioctl: it really is called.
    if !have("setpriv") {
        return;
    }
    let Some(agent) = Agent::start(&["setpriv", "--bounding-set", "-sys_admin", "--"]) else {
        return;
    };
    let err = agent
        .call("ReseedRandomDev", json!({"data": data}))
        .unwrap_err();
    assert!(
        err.contains("INTERNAL") && err.contains("RNDADDENTROPY"),
        "{err}"
    );
}

/// The agent in a private mount namespace whose /usr/sbin and /sbin are empty tmpfs:
/// a guest without iptables. Then fake iptables programs are put there (through
/// /proc/<pid>/root) to check how the agent runs them. The host's iptables are never run.
#[test]
fn iptables_missing_then_run_as_upstream() {
    let Some(agent) = Agent::start(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /usr/sbin && { [ -L /sbin ] || mount -t tmpfs tmpfs /sbin; } && exec \"$0\"",
    ]) else {
        return;
    };
    for (method, v6, program) in [
        ("GetIPTables", false, "iptables-save"),
        ("GetIPTables", true, "ip6tables-save"),
        ("SetIPTables", false, "iptables-restore"),
        ("SetIPTables", true, "ip6tables-restore"),
    ] {
        let req = if method == "SetIPTables" {
            json!({"is_ipv6": v6, "data": ""})
        } else {
            json!({ "is_ipv6": v6 })
        };
        let err = agent.call(method, req).unwrap_err();
        assert!(
            err.contains("FAILED_PRECONDITION")
                && err.contains(&format!("/usr/sbin/{program}"))
                && err.contains(&format!("/sbin/{program}"))
                && err.contains("no iptables"),
            "{method} {v6}: {err}"
        );
    }
    // Fake programs in the agent's /usr/sbin only.
    let sbin = format!("/proc/{}/root/usr/sbin", agent.agent.child.id());
    let put = |name: &str, script: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = format!("{sbin}/{name}");
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    put(
        "iptables-save",
        "echo '*filter'; echo ':INPUT ACCEPT [0:0]'; echo COMMIT",
    );
    put("iptables-restore", "echo \"args: $*\"; cat");
    put(
        "ip6tables-restore",
        "echo 'bad rules at line 1' >&2; exit 2",
    );
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let text = |v: &Value| -> String {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap_or(""))
            .unwrap();
        String::from_utf8(b).unwrap()
    };
    let got = agent.call("GetIPTables", json!({})).unwrap();
    assert_eq!(text(&got), "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
    let rules = "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n";
    let set = agent
        .call("SetIPTables", json!({"data": b64(rules)}))
        .unwrap();
    assert_eq!(text(&set), format!("args: --wait 5\n{rules}"));
    let err = agent
        .call("SetIPTables", json!({"is_ipv6": true, "data": b64(rules)}))
        .unwrap_err();
    assert!(
        err.contains("INTERNAL") && err.contains("status 2") && err.contains("bad rules"),
        "{err}"
    );
}

/// MemAgentCompactSet applies `disabled` to vm.compaction_proactiveness; the rest of both
/// configs is accepted and named as ignored. The agent runs in a mount namespace where a
/// file is bind-mounted over the knob, so the host's kernel setting is never changed.
#[test]
fn mem_agent_settings_applied_or_named_as_ignored() {
    let knob = "/proc/sys/vm/compaction_proactiveness";
    if !std::path::Path::new(knob).exists() {
        common::skip_or_fail("this kernel has no vm.compaction_proactiveness");
        return;
    }
    let host_before = std::fs::read_to_string(knob).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("compaction_proactiveness");
    std::fs::write(&stand_in, "20\n").unwrap();
    let script = format!("mount --bind {} {knob} && exec \"$0\"", stand_in.display());
    let Some(mut agent) = Agent::start(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
    ]) else {
        return;
    };
    agent
        .call(
            "MemAgentCompactSet",
            json!({"disabled": true, "compact_order": 9}),
        )
        .unwrap();
    assert_eq!(std::fs::read_to_string(&stand_in).unwrap(), "0\n");
    let line = agent.log_line("have no kernel knob");
    assert!(line.contains("compact_order"), "{line}");
    agent
        .call("MemAgentCompactSet", json!({"disabled": false}))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&stand_in).unwrap(), "20\n");
    agent
        .call(
            "MemAgentMemcgSet",
            json!({"swap": true, "period_secs": "60"}),
        )
        .unwrap();
    let line = agent.log_line("MemAgentMemcgSet");
    assert!(line.contains("swap,period_secs"), "{line}");
    assert_eq!(std::fs::read_to_string(knob).unwrap(), host_before);
}
