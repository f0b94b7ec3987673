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
