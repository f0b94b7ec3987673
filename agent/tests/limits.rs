//! Host-chosen numbers that must not take PID 1 down: a huge timeout through the real
//! agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod;

use serde_json::json;

use pod::{require_pod, Pod};

/// `hotplug_timeout` near `u64::MAX` seconds (the TOML maximum, i64::MAX; the cmdline
/// takes u64::MAX) plus a block storage: the deadline `Instant::now() + timeout`
/// overflowed and panicked (in the guest's panic=abort build, PID 1 died and the VM went
/// down). Now the value is clamped with a warning and the storage is an ordinary error.
#[test]
fn a_huge_hotplug_timeout_is_clamped_and_the_agent_answers() {
    require_pod!();
    let pod = Pod::with_config(&format!("hotplug_timeout = {}\n", i64::MAX));
    let mp = pod.run_dir.join("sandbox/blk/vol");
    let err = pod
        .call(
            "CreateSandbox",
            json!({"hostname": "h", "storages": [
                {"driver": "blk", "source": "/dev/null", "fstype": "ext4",
                 "mount_point": mp.display().to_string()}]}),
        )
        .unwrap_err();
    // A status from the handler (the mount of a non-block device fails), not a
    // connection the panicking handler dropped.
    assert!(err.contains("mounting /dev/null"), "{err}");
    pod.ok("Check", json!({}));
    let log = pod.agent_log();
    assert!(
        log.contains("agent.hotplug_timeout=9223372036854775807s is above the maximum"),
        "{log}"
    );
}

/// The host's log reader connects (`agent.log_vport`; here a unix socket through the
/// test-only `COCOON_LOG_ADDR`) and never reads. Every request that logs used to block
/// once the socket buffer was full, and with it the RPC runtime. Now requests keep being
/// answered in time, the lines that do not fit are dropped, and when the reader reads
/// again it is told how many.
#[test]
fn a_log_reader_that_stops_reading_never_stalls_the_agent() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    require_pod!(); // ReseedRandomDev's ioctl needs CAP_SYS_ADMIN
    let dir = tempfile::tempdir().unwrap();
    let log_sock = dir.path().join("log.sock");
    let pod = Pod::with_config_env("log_vport = 1025\n", &[("COCOON_LOG_ADDR", &log_sock)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reader = loop {
        match UnixStream::connect(&log_sock) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "no log listener: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    std::thread::sleep(Duration::from_millis(200)); // the agent accepts it

    // Each ReseedRandomDev logs a warning (~200 bytes): 8000 of them are more than the
    // socket buffer and the agent's queue (1 MiB) together.
    let data = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([0x5a_u8; 1])
    };
    let req = json!({ "data": data }).to_string();
    let addr: cocoon_ctl::Address = pod.addr.parse().unwrap();
    let start = Instant::now();
    common::runtime().block_on(async {
        let client = cocoon_ctl::connect(&addr).await.unwrap();
        for i in 0..8000 {
            let call =
                cocoon_ctl::call_json(&client, "ReseedRandomDev", &req, Duration::from_secs(5));
            tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .unwrap_or_else(|_| panic!("request {i} stalled behind the log reader"))
                .unwrap();
        }
    });
    let took = start.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");

    // The reader reads again: whole JSON lines, then the count of those dropped.
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut dropped = None;
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(n) = v["dropped"].as_u64() {
            assert_eq!(v["message"], format!("{n} log lines dropped"));
            dropped = Some(n);
            break;
        }
    }
    assert!(dropped.is_some_and(|n| n > 0), "no drop reported");
    pod.ok("Check", json!({}));
}
