//! The debug console through the real binary, on a unix socket
//! (`COCOON_DEBUG_CONSOLE_ADDR`, the tests' stand-in for vsock port 1026): a shell
//! without a TEE; refused under the TEE test double (`COCOON_POLICY_CONFIDENTIAL=1`)
//! with the confidential default policy; opened there when the tenant's policy allows
//! `DebugConsoleRequest`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{AgentProcess, AGENT};

struct Agent {
    agent: AgentProcess,
    console: PathBuf,
}

fn agent(dir: &Path, enabled: bool, env: &[(&str, &str)]) -> Agent {
    let config = dir.join("agent.toml");
    std::fs::write(&config, format!("debug_console = {enabled}\n")).unwrap();
    let console = dir.join("console.sock");
    let mut cmd = Command::new(AGENT);
    cmd.arg("--config")
        .arg(&config)
        .env(
            "KATA_AGENT_SERVER_ADDR",
            format!("unix://{}", dir.join("agent.sock").display()),
        )
        .env(
            "COCOON_DEBUG_CONSOLE_ADDR",
            format!("unix://{}", console.display()),
        )
        .env("COCOON_RUN_DIR", dir.join("run"))
        .env_remove("COCOON_POLICY_CONFIDENTIAL")
        .env_remove("KATA_AGENT_POLICY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Agent {
        agent: AgentProcess::start(cmd),
        console,
    }
}

/// A log line with `needle`: one already read (start-up) or the next one.
fn log_line(a: &mut Agent, needle: &str) -> String {
    if let Some(l) = a.agent.seen.iter().find(|l| l.contains(needle)) {
        return l.clone();
    }
    a.agent.wait_for_line(needle, Duration::from_secs(10))
}

/// Reads until `needle` shows up (or the connection ends / 10 s pass); all that was read.
fn read_until(conn: &mut UnixStream, needle: &str) -> String {
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&got).contains(needle) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A shell answers on the console, and `exit` ends the connection.
fn shell_works(a: &mut Agent) {
    let mut conn = UnixStream::connect(&a.console).unwrap();
    // (The echo of the typed line holds the expression, not its value.)
    conn.write_all(b"echo cocoon-$((40+2)) $$\n").unwrap();
    let out = read_until(&mut conn, "cocoon-42");
    assert!(out.contains("cocoon-42"), "{out:?}");
    let line = a
        .agent
        .wait_for_line("debug console session started", Duration::from_secs(10));
    assert!(line.contains("pid"), "{line}");
    conn.write_all(b"exit\n").unwrap();
    // The end of the shell closes the connection.
    let rest = read_until(&mut conn, "\u{0}never");
    assert!(!rest.contains("cocoon-42 "), "{rest:?}");
    a.agent
        .wait_for_line("debug console session ended", Duration::from_secs(10));
}

#[test]
fn the_debug_console_opens_a_shell_without_a_tee() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(dir.path(), true, &[]);
    log_line(&mut a, "debug console listening");
    shell_works(&mut a);
    // Again: one shell per connection, the console keeps listening.
    shell_works(&mut a);
}

#[test]
fn the_debug_console_is_off_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), false, &[]);
    assert!(UnixStream::connect(&a.console).is_err());
}

#[test]
fn the_debug_console_is_refused_in_a_tee_by_the_default_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent(dir.path(), true, &[("COCOON_POLICY_CONFIDENTIAL", "1")]);
    log_line(&mut a, "each connection is refused");
    let mut conn = UnixStream::connect(&a.console).unwrap();
    let _ = conn.write_all(b"echo cocoon-$((40+2))\n");
    let out = read_until(&mut conn, "\u{0}never");
    assert!(out.contains("debug console refused"), "{out:?}");
    assert!(!out.contains("cocoon-42"), "{out:?}");
    let line = a
        .agent
        .wait_for_line("debug console connection refused", Duration::from_secs(10));
    assert!(line.contains("DebugConsoleRequest"), "{line}");
    assert!(!a.agent.seen.iter().any(|l| l.contains("session started")));
}

#[test]
fn the_tenants_policy_can_allow_the_debug_console_in_a_tee() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.rego");
    std::fs::write(
        &policy,
        "package agent_policy\n\ndefault DebugConsoleRequest := true\n",
    )
    .unwrap();
    let mut a = agent(
        dir.path(),
        true,
        &[
            ("COCOON_POLICY_CONFIDENTIAL", "1"),
            ("KATA_AGENT_POLICY_FILE", policy.to_str().unwrap()),
        ],
    );
    shell_works(&mut a);
    log_line(&mut a, "debug console opened in a TEE");
}
