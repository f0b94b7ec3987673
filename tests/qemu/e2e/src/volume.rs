//! A direct-assigned block volume grown online (ResizeVolume and GetVolumeStats in the
//! guest, where the agent is PID 1 with CAP_SYS_RESOURCE; the native test cannot grow
//! ext4). The host makes a small ext4 image, QEMU gives it to the guest as a virtio-blk
//! disk at a fixed PCI slot, and a container's `blk` storage names that slot as the
//! runtime does for a direct-assigned volume. Then, as the kubelet's expansion flow goes:
//! GetVolumeStats, QMP `block_resize` of the disk (the host grows the device), ResizeVolume
//! (the guest grows the filesystem), GetVolumeStats again.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::procs::run;
use crate::qmp::Qmp;
use crate::scenario::{self, Client};

/// The QEMU drive's id (QMP `block_resize` names it).
const DRIVE_ID: &str = "vol1";
/// The disk's slot on q35's root bus (free: the other devices take the lowest slots), as
/// a PCI path the agent resolves under `/sys/devices/pci0000:00`.
const PCI_ADDR: &str = "0x6";
const PCI_PATH: &str = "06";
/// Where the storage is mounted (a pod storage, under the agent's run directory).
pub const MOUNT_POINT: &str = "/run/kata-containers/sandbox/storage/e2e-vol";
const CID: &str = "app-vol";
const START_BYTES: u64 = 64 << 20;
const GROWN_BYTES: u64 = 128 << 20;
/// How long the guest may take to see the new capacity (a virtio config interrupt).
const SEE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the guest showed.
pub struct Report {
    pub total: (u64, u64),
    pub resized: Duration,
}

/// Makes the ext4 image the guest gets.
pub fn make_image(path: &Path) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(START_BYTES)?;
    drop(f);
    run(std::process::Command::new("mkfs.ext4")
        .args(["-F", "-q", "-L", "e2e-vol"])
        .arg(path))
    .context("mkfs.ext4 (e2fsprogs)")?;
    Ok(())
}

/// QEMU's arguments for the disk.
pub fn qemu_args(path: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file={},if=none,id={DRIVE_ID},format=raw,cache=unsafe",
            path.display()
        ),
        "-device".into(),
        format!("virtio-blk-pci,drive={DRIVE_ID},id=blk-{DRIVE_ID},addr={PCI_ADDR}"),
    ]
}

/// Bytes in the filesystem, from GetVolumeStats (`usage` with unit BYTES; protobuf JSON
/// may print a u64 as a string).
async fn total_bytes(client: &Client) -> Result<u64> {
    let r = client
        .call("GetVolumeStats", &json!({"volume_guest_path": MOUNT_POINT}))
        .await?;
    let num = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    r["usage"]
        .as_array()
        .and_then(|u| {
            u.iter()
                .find(|x| x["unit"].as_str().is_none_or(|s| s == "BYTES"))
                .and_then(|x| num(&x["total"]))
        })
        .with_context(|| format!("GetVolumeStats: no byte usage in {r}"))
}

/// The whole step: mount through a container's storage, grow, check, remove.
pub async fn grow(client: &Client, qmp_sock: &Path, image: &str) -> Result<Report> {
    let mut req = scenario::create_request(CID, image, &[], &[]);
    if let Some(list) = req["storages"].as_array_mut() {
        list.push(
            json!({"driver": "blk", "source": PCI_PATH, "fstype": "ext4",
                         "options": [], "mount_point": MOUNT_POINT}),
        );
    }
    client
        .call_timeout("CreateContainer", &req, scenario::PULL_TIMEOUT_PUB)
        .await
        .context("CreateContainer with the block volume")?;
    let before = total_bytes(client).await?;
    ensure!(
        before > 0 && before <= START_BYTES,
        "GetVolumeStats before the resize: {before} bytes in a {START_BYTES}-byte disk"
    );

    // The host has not grown the device yet: asking for more is refused.
    let early = client
        .fails(
            "ResizeVolume",
            &json!({"volume_guest_path": MOUNT_POINT, "size": GROWN_BYTES}),
            Duration::from_secs(20),
        )
        .await?;
    ensure!(
        early.contains("FAILED_PRECONDITION") && early.contains("has not grown the device"),
        "ResizeVolume before block_resize: unexpected answer: {early}"
    );

    let mut qmp = Qmp::connect(qmp_sock).await?;
    qmp.execute(
        "block_resize",
        json!({"device": DRIVE_ID, "size": GROWN_BYTES}),
    )
    .await?;
    // Until the guest sees the new capacity the agent refuses, as above.
    let t = Instant::now();
    let after = loop {
        let r = client
            .call(
                "ResizeVolume",
                &json!({"volume_guest_path": MOUNT_POINT, "size": 0}),
            )
            .await;
        let grown = total_bytes(client).await?;
        if r.is_ok() && grown > before {
            break grown;
        }
        ensure!(
            t.elapsed() < SEE_TIMEOUT,
            "the filesystem did not grow within {SEE_TIMEOUT:?} of block_resize \
             (last ResizeVolume: {r:?}, {grown} bytes)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let resized = t.elapsed();
    let grew = after.saturating_sub(before);
    ensure!(
        grew >= (GROWN_BYTES - START_BYTES) * 3 / 4,
        "the filesystem grew by {grew} bytes after the disk grew by {} bytes",
        GROWN_BYTES - START_BYTES
    );
    client
        .call("RemoveContainer", &json!({"container_id": CID}))
        .await
        .context("RemoveContainer of the volume's container")?;
    Ok(Report {
        total: (before, after),
        resized,
    })
}

impl Report {
    pub fn summary(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1 << 20));
        format!(
            "  volume resize      ext4 on virtio-blk ({PCI_PATH}), block_resize {} -> {}, ResizeVolume in {:.0} ms: GetVolumeStats {} -> {}\n",
            mib(START_BYTES),
            mib(GROWN_BYTES),
            self.resized.as_secs_f64() * 1e3,
            mib(self.total.0),
            mib(self.total.1),
        )
    }
}
