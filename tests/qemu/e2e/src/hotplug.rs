//! CPU and memory hotplug as the Kata runtime does it with QEMU: QMP `device_add` of a
//! vCPU (driver and properties from `query-hotpluggable-cpus`), then OnlineCPUMem with
//! `nb_cpus` = the CPUs that must be online (upstream's semantics: a total, not a
//! delta); `object-add memory-backend-memfd` (fd-backed and shared: vhost-user-vsock maps
//! guest memory) + `device_add pc-dimm`, then OnlineCPUMem with `cpu_only=false`. What the
//! guest has is read through the agent (GetMetrics: one `kata_guest_cpu_time{cpu="N"}`
//! per online CPU, `/proc/stat` lists only those; `kata_guest_meminfo{item="mem_total"}`).
//!
//! Before each agent call the harness waits for QEMU's `ACPI_DEVICE_OST` event: the guest
//! kernel evaluates `_OST` when it has added the device, so the call does not race the
//! guest's ACPI work (the agent retries CPUs for `agent.hotplug_timeout`, but onlines the
//! memory blocks it finds once, as upstream does).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::qmp::Qmp;
use crate::scenario::Client;

const CPU_ID: &str = "hp-cpu1";
const MEM_ID: &str = "hp-mem1";
const DIMM_ID: &str = "hp-dimm1";
/// One x86 memory block (the guest's `block_size_bytes` below 64 GiB of RAM).
pub const DIMM_BYTES: u64 = 128 << 20;
/// How long the guest may take to add a device (ACPI under TCG: about a second).
const ADD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the guest showed.
pub struct Report {
    pub cpu_type: String,
    pub cpus: (usize, usize),
    pub cpu_added: Duration,
    pub cpu_onlined: Duration,
    pub mem_total: (u64, u64),
    pub mem_added: Duration,
    pub mem_onlined: Duration,
    /// The whole step, GetMetrics and QMP included.
    pub total: Duration,
}

/// The guest's online CPUs and MemTotal (bytes), from GetMetrics.
struct Guest {
    cpus: usize,
    mem_total: u64,
}

async fn guest(client: &Client) -> Result<Guest> {
    let m = client.call("GetMetrics", &json!({})).await?;
    let text = m["metrics"]
        .as_str()
        .context("GetMetrics: no metrics text")?;
    let mut cpus: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("kata_guest_cpu_time{cpu=\""))
        .filter_map(|l| l.split('"').next())
        .filter(|c| *c != "total")
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    let mem_total = text
        .lines()
        .find_map(|l| l.strip_prefix("kata_guest_meminfo{item=\"mem_total\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("GetMetrics: no kata_guest_meminfo mem_total")?;
    ensure!(
        !cpus.is_empty(),
        "GetMetrics: no per-CPU kata_guest_cpu_time"
    );
    Ok(Guest {
        cpus: cpus.len(),
        mem_total: mem_total as u64,
    })
}

async fn online(client: &Client, nb_cpus: usize, cpu_only: bool) -> Result<Duration> {
    let t = Instant::now();
    client
        .call(
            "OnlineCPUMem",
            &json!({"wait": true, "nb_cpus": nb_cpus, "cpu_only": cpu_only}),
        )
        .await
        .with_context(|| format!("OnlineCPUMem nb_cpus={nb_cpus} cpu_only={cpu_only}"))?;
    Ok(t.elapsed())
}

/// Waits for the guest's `_OST` answer for device `id`; fails if it reports a failure.
async fn added(qmp: &mut Qmp, id: &str) -> Result<()> {
    let ev = qmp
        .wait_event(&format!("ACPI_DEVICE_OST for {id}"), ADD_TIMEOUT, |v| {
            v["event"] == "ACPI_DEVICE_OST" && v["data"]["info"]["device"] == id
        })
        .await
        .with_context(|| format!("the guest did not add {id}"))?;
    let status = ev["data"]["info"]["status"].as_u64();
    ensure!(
        status == Some(0),
        "the guest could not add {id}: _OST {}",
        ev["data"]["info"]
    );
    Ok(())
}

pub async fn cpu_and_memory(client: &Client, qmp_sock: &Path) -> Result<Report> {
    let start = Instant::now();
    let mut qmp = Qmp::connect(qmp_sock).await?;
    let before = guest(client).await?;
    ensure!(
        before.cpus == 1,
        "want 1 CPU online at boot, GetMetrics shows {}",
        before.cpus
    );
    // nb_cpus is how many must be online: with that many online already, nothing to do.
    online(client, before.cpus, true).await?;

    // A vCPU, as QEMU offers it (`-cpu max`: max-x86_64-cpu, socket/core/thread ids).
    let slots = qmp.execute("query-hotpluggable-cpus", json!({})).await?;
    let free = slots
        .as_array()
        .and_then(|a| a.iter().find(|s| s.get("qom-path").is_none()))
        .with_context(|| format!("no free hotpluggable CPU slot: {slots}"))?;
    let cpu_type = free["type"].as_str().context("CPU slot without a type")?;
    let mut args = free["props"].clone();
    args["driver"] = json!(cpu_type);
    args["id"] = json!(CPU_ID);
    let t = Instant::now();
    qmp.execute("device_add", args).await?;
    added(&mut qmp, CPU_ID).await?;
    let cpu_added = t.elapsed();
    // Linux does not online a hot-added CPU by itself: OnlineCPUMem must.
    let offline = guest(client).await?.cpus;
    ensure!(
        offline == before.cpus,
        "the hot-added CPU is online before OnlineCPUMem ({offline} CPUs)"
    );
    let cpu_onlined = online(client, before.cpus + 1, true).await?;
    let mid = guest(client).await?;
    ensure!(
        mid.cpus == before.cpus + 1,
        "after device_add and OnlineCPUMem: {} CPUs online, want {}",
        mid.cpus,
        before.cpus + 1
    );

    // Memory: fd-backed and shared, or vhost-user could not map it.
    let t = Instant::now();
    qmp.execute(
        "object-add",
        json!({"qom-type": "memory-backend-memfd", "id": MEM_ID, "size": DIMM_BYTES,
               "share": true}),
    )
    .await?;
    qmp.execute(
        "device_add",
        json!({"driver": "pc-dimm", "id": DIMM_ID, "memdev": MEM_ID}),
    )
    .await?;
    added(&mut qmp, DIMM_ID).await?;
    let mem_added = t.elapsed();
    // memhp_default_state=offline (main.rs): the block waits for OnlineCPUMem.
    let mem_added_total = guest(client).await?.mem_total;
    ensure!(
        mem_added_total == before.mem_total,
        "MemTotal changed before OnlineCPUMem ({} -> {mem_added_total} bytes): the guest \
         kernel onlined the DIMM by itself",
        before.mem_total
    );
    let mem_onlined = online(client, 0, false).await?;
    let after = guest(client).await?;
    let grew = after.mem_total.saturating_sub(before.mem_total);
    ensure!(
        grew >= DIMM_BYTES * 3 / 4,
        "MemTotal grew by {grew} bytes after adding a {DIMM_BYTES}-byte DIMM and OnlineCPUMem"
    );
    ensure!(
        after.cpus == mid.cpus,
        "{} CPUs online after the memory, were {}",
        after.cpus,
        mid.cpus
    );
    // Once more, with nothing offline (what a guest that onlines by itself sees).
    online(client, after.cpus, false).await?;

    Ok(Report {
        cpu_type: cpu_type.to_owned(),
        cpus: (before.cpus, mid.cpus),
        cpu_added,
        cpu_onlined,
        mem_total: (before.mem_total, after.mem_total),
        mem_added,
        mem_onlined,
        total: start.elapsed(),
    })
}

impl Report {
    /// Two summary lines.
    pub fn summary(&self) -> String {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1 << 20));
        format!(
            "  CPU hotplug        device_add {} (guest added it in {}, offline), OnlineCPUMem {}: {} -> {} CPUs online\n\
             \x20 memory hotplug     pc-dimm {} memfd (guest added it in {}, offline), OnlineCPUMem {}: MemTotal {} -> {}; {} in all\n",
            self.cpu_type,
            ms(self.cpu_added),
            ms(self.cpu_onlined),
            self.cpus.0,
            self.cpus.1,
            mib(DIMM_BYTES),
            ms(self.mem_added),
            ms(self.mem_onlined),
            mib(self.mem_total.0),
            mib(self.mem_total.1),
            ms(self.total),
        )
    }
}
