//! A container's cgroup after creation: statistics (StatsContainer), resource updates
//! (UpdateContainer) and OOM kills (GetOOMEvent), through youki's `libcgroups`, which
//! handles both the guest's cgroup v2 and a v1/hybrid host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cocoon_protocols::agent::{
    BlkioStats, BlkioStatsEntry, CgroupStats, CpuStats, CpuUsage, HugetlbStats, MemoryData,
    MemoryStats, PidsStats, ThrottlingData,
};
use libcgroups::common::{
    create_cgroup_manager, get_cgroup_setup, CgroupConfig, CgroupManager, CgroupSetup,
    ControllerOpt,
};
use libcgroups::stats::{BlkioDeviceStat, Stats};
use oci_spec::runtime::LinuxResources;

use crate::error::{AgentError, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn manager(cgroup_path: &str, id: &str) -> Result<libcgroups::common::AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup_path),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| AgentError::internal("opening the container's cgroup", e))
}

fn memory_data(m: &libcgroups::stats::MemoryData) -> MemoryData {
    MemoryData {
        usage: m.usage,
        max_usage: m.max_usage,
        failcnt: m.fail_count,
        limit: m.limit,
        ..Default::default()
    }
}

fn blkio(list: &[BlkioDeviceStat]) -> Vec<BlkioStatsEntry> {
    list.iter()
        .map(|d| BlkioStatsEntry {
            major: d.major,
            minor: d.minor,
            op: d.op_type.clone().unwrap_or_default(),
            value: d.value,
            ..Default::default()
        })
        .collect()
}

/// libcgroups' statistics in the wire form.
pub fn to_wire(s: &Stats) -> CgroupStats {
    let cpu = CpuStats {
        cpu_usage: Some(CpuUsage {
            total_usage: s.cpu.usage.usage_total,
            percpu_usage: s.cpu.usage.per_core_usage_total.clone(),
            usage_in_kernelmode: s.cpu.usage.usage_kernel,
            usage_in_usermode: s.cpu.usage.usage_user,
            ..Default::default()
        })
        .into(),
        throttling_data: Some(ThrottlingData {
            periods: s.cpu.throttling.periods,
            throttled_periods: s.cpu.throttling.throttled_periods,
            throttled_time: s.cpu.throttling.throttled_time,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let memory = MemoryStats {
        cache: s.memory.cache,
        usage: Some(memory_data(&s.memory.memory)).into(),
        swap_usage: Some(memory_data(&s.memory.memswap)).into(),
        kernel_usage: Some(memory_data(&s.memory.kernel)).into(),
        use_hierarchy: s.memory.hierarchy,
        stats: s.memory.stats.clone().into_iter().collect(),
        ..Default::default()
    };
    let b = &s.blkio;
    let blkio_stats = BlkioStats {
        io_service_bytes_recursive: blkio(&b.service_bytes),
        io_serviced_recursive: blkio(&b.serviced),
        io_queued_recursive: blkio(&b.queued),
        io_service_time_recursive: blkio(&b.service_time),
        io_wait_time_recursive: blkio(&b.wait_time),
        io_merged_recursive: blkio(&b.merged),
        io_time_recursive: blkio(&b.time),
        sectors_recursive: blkio(&b.sectors),
        ..Default::default()
    };
    let hugetlb: HashMap<String, HugetlbStats> = s
        .hugetlb
        .iter()
        .map(|(k, h)| {
            (
                k.clone(),
                HugetlbStats {
                    usage: h.usage,
                    max_usage: h.max_usage,
                    failcnt: h.fail_count,
                    ..Default::default()
                },
            )
        })
        .collect();
    CgroupStats {
        cpu_stats: Some(cpu).into(),
        memory_stats: Some(memory).into(),
        pids_stats: Some(PidsStats {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        })
        .into(),
        blkio_stats: Some(blkio_stats).into(),
        hugetlb_stats: hugetlb.into_iter().collect(),
        ..Default::default()
    }
}

/// The container's cgroup statistics.
pub fn stats(cgroup_path: &str, id: &str) -> Result<CgroupStats> {
    let m = manager(cgroup_path, id)?;
    match m.stats() {
        Ok(s) => Ok(to_wire(&s)),
        // libcgroups wants every v2 controller enabled; with some missing, report what
        // the cgroup's files do say.
        Err(e) if matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified)) => {
            tracing::debug!(error = %e, "full cgroup v2 statistics unavailable; reading what exists");
            Ok(to_wire(&v2_partial(
                &Path::new(CGROUP_ROOT).join(cgroup_path.trim_start_matches('/')),
            )))
        }
        Err(e) => Err(AgentError::internal("reading cgroup statistics", e)),
    }
}

/// `key value` lines of a cgroup v2 file.
fn flat_keyed(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn single(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What a cgroup v2 directory tells without every controller: CPU time (always in
/// `cpu.stat`), and memory and pids when their controllers are on.
fn v2_partial(dir: &Path) -> Stats {
    let mut s = Stats::default();
    let cpu = flat_keyed(&dir.join("cpu.stat"));
    let usec = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
    s.cpu.usage.usage_total = usec("usage_usec");
    s.cpu.usage.usage_user = usec("user_usec");
    s.cpu.usage.usage_kernel = usec("system_usec");
    s.cpu.throttling.periods = cpu.get("nr_periods").copied().unwrap_or(0);
    s.cpu.throttling.throttled_periods = cpu.get("nr_throttled").copied().unwrap_or(0);
    s.cpu.throttling.throttled_time = usec("throttled_usec");
    s.memory.memory.usage = single(&dir.join("memory.current")).unwrap_or(0);
    s.memory.memory.max_usage = single(&dir.join("memory.peak")).unwrap_or(0);
    s.memory.memory.limit = single(&dir.join("memory.max")).unwrap_or(u64::MAX);
    s.memory.stats = flat_keyed(&dir.join("memory.stat"));
    s.pids.current = single(&dir.join("pids.current")).unwrap_or_else(|| {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|p| p.lines().count() as u64)
            .unwrap_or(0)
    });
    s.pids.limit = single(&dir.join("pids.max")).unwrap_or(0);
    s
}

/// Applies new resource limits to the container's cgroup.
pub fn update(cgroup_path: &str, id: &str, resources: &LinuxResources) -> Result<()> {
    let m = manager(cgroup_path, id)?;
    let disable_oom_killer = resources
        .memory()
        .as_ref()
        .and_then(|m| m.disable_oom_killer())
        .unwrap_or(false);
    m.apply(&ControllerOpt {
        resources,
        disable_oom_killer,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| AgentError::FailedPrecondition(format!("updating cgroup resources: {e}")))
}

/// How many times the kernel OOM-killed a process in the container's cgroup
/// (`oom_kill` of cgroup v2 `memory.events`, or of v1 `memory.oom_control`).
pub fn oom_kills(cgroup_path: &str) -> Option<u64> {
    let rel = cgroup_path.trim_start_matches('/');
    let file: PathBuf = match get_cgroup_setup().ok()? {
        CgroupSetup::Unified => Path::new(CGROUP_ROOT).join(rel).join("memory.events"),
        _ => Path::new(CGROUP_ROOT)
            .join("memory")
            .join(rel)
            .join("memory.oom_control"),
    };
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}
