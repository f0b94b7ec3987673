//! The real agent binary as a plain process on a unix socket, driven by the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{call, temp_socket, AgentProcess};

#[test]
fn check_version_and_guest_details() {
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let _agent = AgentProcess::start_unix(&sock);
    let addr = format!("unix://{}", sock.display());

    let check = call(&addr, "Check", "{}").unwrap();
    assert_eq!(check["status"], "SERVING");

    let version = call(&addr, "Version", "{}").unwrap();
    assert_eq!(version["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["grpc_version"], "0.0.1");

    let details = call(
        &addr,
        "GetGuestDetails",
        r#"{"mem_block_size": true, "mem_hotplug_probe": true}"#,
    )
    .unwrap();
    let agent = &details["agent_details"];
    assert_eq!(agent["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        agent["storage_handlers"],
        serde_json::json!(["local", "ephemeral", "blk", "virtio-blk", "virtio-fs"])
    );
    assert_eq!(
        agent["device_handlers"],
        serde_json::json!(["blk", "virtio-blk"])
    );
    // Not PID 1 here.
    assert!(agent.get("init_daemon").is_none() || agent["init_daemon"] == false);
    // The host has a memory block size in sysfs; the agent reports it (as a string:
    // proto3 JSON prints 64-bit integers as strings).
    if std::path::Path::new("/sys/devices/system/memory/block_size_bytes").exists() {
        let size: u64 = details["mem_block_size_bytes"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(size > 0 && size.is_power_of_two(), "{size}");
    }
}

#[test]
fn abstract_socket_address() {
    let name = format!("cocoon-test-{}", std::process::id());
    let mut command = std::process::Command::new(common::AGENT);
    command.env("KATA_AGENT_SERVER_ADDR", format!("unix://@{name}"));
    let _agent = AgentProcess::start(command);
    let check = call(&format!("unix://@{name}"), "Check", "{}").unwrap();
    assert_eq!(check["status"], "SERVING");
}

/// The generated `snake_case` name of an RPC (ttrpc-codegen's rule: a break before an
/// upper-case letter after a lower-case one, or before the last of an upper-case run).
fn snake(rpc: &str) -> String {
    let c: Vec<char> = rpc.chars().collect();
    let mut out = String::new();
    for (i, ch) in c.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| c[j]);
        let next = c.get(i + 1);
        if ch.is_uppercase()
            && i > 0
            && (prev.is_some_and(|p| p.is_lowercase())
                || next.is_some_and(|n| n.is_lowercase()) && prev.is_some_and(|p| p.is_uppercase()))
        {
            out.push('_');
        }
        out.extend(ch.to_lowercase());
    }
    out
}

/// Every RPC of `grpc.AgentService` has a handler: none falls through to the generated
/// default, which answers UNIMPLEMENTED (agent/protocols/build.rs). Checked on the
/// sources, so that no request has to be sent that would change this host (online its
/// CPUs, set its clock, restore its iptables).
#[test]
fn no_rpc_answers_unimplemented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto = std::fs::read_to_string(root.join("protocols/protos/agent.proto")).unwrap();
    let handlers = std::fs::read_to_string(root.join("src/rpc/agent.rs")).unwrap();
    let rpcs: Vec<&str> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .map(str::trim)
        .collect();
    assert_eq!(rpcs.len(), 42, "{rpcs:?}");
    assert_eq!(snake("OnlineCPUMem"), "online_cpu_mem");
    assert_eq!(snake("GetIPTables"), "get_ip_tables");
    let missing: Vec<&&str> = rpcs
        .iter()
        .filter(|r| !handlers.contains(&format!("async fn {}(", snake(r))))
        .collect();
    assert!(
        missing.is_empty(),
        "RPCs without a handler (UNIMPLEMENTED): {missing:?}"
    );
}

/// Writes a raw ttrpc frame: length u32 BE, stream id u32 BE, type, flags.
fn frame(len: u32, stream: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&stream.to_be_bytes());
    buf.push(kind);
    buf.push(0);
    buf.extend_from_slice(payload);
    buf
}

/// Reads whatever the agent answers until it closes or goes quiet.
fn read_answer(conn: &mut UnixStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => return answer,
        }
    }
}

#[test]
fn garbage_and_oversized_frames_do_not_hurt_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let mut agent = AgentProcess::start_unix(&sock);
    let addr = format!("unix://{}", sock.display());

    // A request frame whose payload is not a ttrpc Request protobuf.
    let garbage = b"\xff\xff\xff\xff not protobuf at all";
    let mut conn = UnixStream::connect(&sock).unwrap();
    conn.write_all(&frame(garbage.len() as u32, 1, 1, garbage))
        .unwrap();
    let answer = read_answer(&mut conn);
    eprintln!("garbage frame answered with {} bytes", answer.len());
    if !answer.is_empty() {
        // An error response on stream 1 (type 2), never a success.
        assert!(answer.len() >= 10, "{answer:?}");
        assert_eq!(&answer[4..8], &1u32.to_be_bytes());
        assert_eq!(answer[8], 2);
    }

    // Pure noise, not even a header.
    let mut noise = UnixStream::connect(&sock).unwrap();
    noise.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    drop(noise);

    // An oversized frame (> 4 MiB) is refused with an error status (the payload is
    // skipped) or a closed connection.
    let mut big = UnixStream::connect(&sock).unwrap();
    big.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let len = (4u32 << 20) + 1;
    big.write_all(&frame(len, 3, 1, &[])).unwrap();
    let payload = vec![0u8; len as usize];
    let _ = big.write_all(&payload); // may fail if the agent closed on us: fine
    let answer = read_answer(&mut big);
    let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
    eprintln!(
        "oversized frame answered with {} bytes: {text:?}",
        answer.len()
    );
    if !answer.is_empty() {
        assert_eq!(&answer[4..8], &3u32.to_be_bytes());
        assert_eq!(answer[8], 2, "expected an error response");
        assert!(text.contains("exceed maximum message size"), "{text}");
    }

    // The agent still serves everyone else and is still alive.
    assert_eq!(call(&addr, "Check", "{}").unwrap()["status"], "SERVING");
    assert!(agent.child.try_wait().unwrap().is_none());
}

#[test]
fn destroy_sandbox_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let mut agent = AgentProcess::start_unix(&sock);
    let addr = format!("unix://{}", sock.display());

    call(&addr, "DestroySandbox", "{}").unwrap();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "socket left behind");
    assert!(
        agent.seen.iter().any(|l| l.contains("server stopped")),
        "{:?}",
        agent.seen
    );
}

#[test]
fn sigterm_stops_a_plain_process() {
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let mut agent = AgentProcess::start_unix(&sock);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn bad_configuration_is_a_clear_startup_error() {
    let out = std::process::Command::new(common::AGENT)
        .env("KATA_AGENT_SERVER_ADDR", "tcp://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KATA_AGENT_SERVER_ADDR"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "hotplug_timeout = \"soon\"\n").unwrap();
    let out = std::process::Command::new(common::AGENT)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hotplug_timeout"), "{stderr}");
}

#[test]
fn logs_are_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let agent = AgentProcess::start_unix(&sock);
    let line = agent
        .seen
        .iter()
        .find(|l| l.contains("listening on"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(
        v["message"],
        format!("listening on unix://{}", sock.display())
    );
}
