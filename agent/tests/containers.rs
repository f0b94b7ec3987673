//! Containers through the real agent: a busybox rootfs, libcontainer, the Kata RPCs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod;

use serde_json::json;

use pod::{require_pod, Pod};

#[test]
fn create_start_read_wait() {
    require_pod!();
    let pod = Pod::new();
    pod.run("c1", &["sh", "-c", "echo hello; echo oops >&2; exit 0"]);
    assert_eq!(pod.read_all("c1", "c1", false), "hello\n");
    assert_eq!(pod.read_all("c1", "c1", true), "oops\n");
    assert_eq!(pod.wait("c1", "c1"), 0);
    pod.ok("RemoveContainer", json!({"container_id": "c1"}));
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
}
