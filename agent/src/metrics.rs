//! GetMetrics: the agent's process and the guest's metrics in Prometheus text, under
//! upstream kata-agent's names (`src/agent/src/metrics.rs`: `kata_agent_*`,
//! `kata_guest_*`, the same `item`/`cpu`/`disk`/`interface`/`mount`/`device` labels and
//! units), read from `/proc`, then the KBS session's counters. kata-monitor scrapes it.
//!
//! - `kata_agent_scrape_count` (counter), `kata_agent_threads`, `kata_agent_total_time`
//!   (seconds), `kata_agent_total_vm` / `kata_agent_total_rss` (bytes),
//!   `kata_agent_proc_status{item}` (`/proc/self/status`, kB as the kernel prints),
//!   `kata_agent_io_stat{item}` (`/proc/self/io`), `kata_agent_proc_stat{item}`
//!   (utime, stime, cutime, cstime in ticks);
//! - `kata_guest_load{item}` (load1/5/15), `kata_guest_tasks{item}` (cur, max),
//!   `kata_guest_cpu_time{cpu,item}` (ms; `cpu="total"` and per CPU),
//!   `kata_guest_vm_stat{item}`, `kata_guest_netdev_stat{interface,item}`,
//!   `kata_guest_diskstat{disk,item}`, `kata_guest_meminfo{item}` (bytes; page counts as
//!   counts), `kata_guest_filesystem_bytes{mount,device,item}` and
//!   `kata_guest_filesystem_inodes{...}` (writable ext4/xfs/btrfs/vfat/overlay, one per
//!   device).
//!
//! A source that cannot be read is left out (logged at debug), as upstream does.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const AGENT: &str = "kata_agent";
const GUEST: &str = "kata_guest";

/// Filesystems whose usage is reported (upstream's `REAL_FS_TYPES`).
const REAL_FS_TYPES: &[&str] = &["ext4", "xfs", "btrfs", "vfat", "overlay"];

static SCRAPES: AtomicU64 = AtomicU64::new(0);

/// Where the metrics are read: `/proc` (a seam for tests).
#[derive(Clone, Debug)]
pub struct Sources {
    pub proc: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            proc: PathBuf::from("/proc"),
        }
    }
}

/// One metric family, rendered as Prometheus text.
struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: String, help: &str, kind: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(&self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn read(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "metrics: cannot read");
            None
        }
    }
}

fn num(s: &str) -> f64 {
    s.parse::<f64>().unwrap_or(0.0)
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .map_or(4096.0, |t| t as f64)
}

/// Upstream's label for a `/proc/meminfo` key (procfs' field names).
pub fn meminfo_item(key: &str) -> String {
    match key {
        "HugePages_Total" => "hugepages_total".into(),
        "HugePages_Free" => "hugepages_free".into(),
        "HugePages_Rsvd" => "hugepages_rsvd".into(),
        "HugePages_Surp" => "hugepages_surp".into(),
        "Hugepagesize" => "hugepagesize".into(),
        "Hugetlb" => "hugetlb".into(),
        "AnonHugePages" => "anon_hugepages".into(),
        "ShmemHugePages" => "shmem_hugepages".into(),
        "ShmemPmdMapped" => "shmem_pmd_mapped".into(),
        "FileHugePages" => "file_hugepages".into(),
        "FilePmdMapped" => "file_pmd_mapped".into(),
        "NFS_Unstable" => "nfs_unstable".into(),
        "MmapCopy" => "mmap_copy".into(),
        "Percpu" => "per_cpu".into(),
        "DirectMap4k" => "direct_map_4k".into(),
        "DirectMap4M" => "direct_map_4M".into(),
        "DirectMap2M" => "direct_map_2M".into(),
        "DirectMap1G" => "direct_map_1G".into(),
        "SReclaimable" => "s_reclaimable".into(),
        "SUnreclaim" => "s_unreclaim".into(),
        "KReclaimable" => "k_reclaimable".into(),
        "Committed_AS" => "committed_as".into(),
        _ => {
            // CamelCase and `Active(anon)` → snake_case: mem_total, active_anon.
            let mut out = String::new();
            let mut prev_lower = false;
            for c in key.chars() {
                if c.is_ascii_uppercase() {
                    if prev_lower {
                        out.push('_');
                    }
                    out.push(c.to_ascii_lowercase());
                    prev_lower = false;
                } else if c.is_ascii_alphanumeric() {
                    out.push(c);
                    prev_lower = true;
                } else if !out.ends_with('_') && !out.is_empty() {
                    out.push('_');
                    prev_lower = false;
                }
            }
            out.trim_end_matches('_').to_string()
        }
    }
}

/// `/proc/meminfo` → (upstream item, value: bytes for `kB` lines).
pub fn parse_meminfo(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut parts = v.split_whitespace();
            let n = num(parts.next()?);
            let n = if parts.next() == Some("kB") {
                n * 1024.0
            } else {
                n
            };
            Some((meminfo_item(k.trim()), n))
        })
        .collect()
}

const CPU_ITEMS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// `/proc/stat` cpu lines → (cpu label, item, ms).
pub fn parse_cpu_times(text: &str, tps: f64) -> Vec<(String, &'static str, f64)> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some(name) = f.next().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        let cpu = if name.is_empty() { "total" } else { name };
        for (item, v) in CPU_ITEMS.iter().zip(f) {
            out.push((cpu.to_string(), *item, num(v) * 1000.0 / tps));
        }
    }
    out
}

const DISK_ITEMS: [&str; 17] = [
    "reads",
    "merged",
    "sectors_read",
    "time_reading",
    "writes",
    "writes_merged",
    "sectors_written",
    "time_writing",
    "in_progress",
    "time_in_progress",
    "weighted_time_in_progress",
    "discards",
    "discards_merged",
    "sectors_discarded",
    "time_discarding",
    "flushes",
    "time_flushing",
];

/// `/proc/diskstats` → (disk, item, value).
pub fn parse_diskstats(text: &str) -> Vec<(String, &'static str, f64)> {
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(name) = f.get(2) else { continue };
        for (item, v) in DISK_ITEMS.iter().zip(f.iter().skip(3)) {
            out.push((name.to_string(), *item, num(v)));
        }
    }
    out
}

const NETDEV_ITEMS: [&str; 16] = [
    "recv_bytes",
    "recv_packets",
    "recv_errs",
    "recv_drop",
    "recv_fifo",
    "recv_frame",
    "recv_compressed",
    "recv_multicast",
    "sent_bytes",
    "sent_packets",
    "sent_errs",
    "sent_drop",
    "sent_fifo",
    "sent_colls",
    "sent_carrier",
    "sent_compressed",
];

/// `/proc/net/dev` → (interface, item, value).
pub fn parse_netdev(text: &str) -> Vec<(String, &'static str, f64)> {
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.contains('|') || name.is_empty() {
            continue;
        }
        for (item, v) in NETDEV_ITEMS.iter().zip(rest.split_whitespace()) {
            out.push((name.to_string(), *item, num(v)));
        }
    }
    out
}

/// `key value` lines (`/proc/vmstat`, `/proc/self/io`), or `Key: value [kB]` lines
/// (`/proc/self/status`, numeric ones only) → (key, value).
fn pairs(text: &str, lower: bool) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':').or_else(|| l.split_once(' '))?;
            let v = v.split_whitespace().next()?;
            let n = v.parse::<f64>().ok()?;
            let k = k.trim();
            Some((
                if lower {
                    k.to_ascii_lowercase()
                } else {
                    k.into()
                },
                n,
            ))
        })
        .collect()
}

/// Items of `/proc/self/status` upstream reports.
const STATUS_ITEMS: &[&str] = &[
    "fdsize",
    "vmpeak",
    "vmsize",
    "vmlck",
    "vmpin",
    "vmhwm",
    "vmrss",
    "rssanon",
    "rssfile",
    "rssshmem",
    "vmdata",
    "vmstk",
    "vmexe",
    "vmlib",
    "vmpte",
    "vmswap",
    "hugetlbpages",
    "voluntary_ctxt_switches",
    "nonvoluntary_ctxt_switches",
];

fn agent_metrics(out: &mut String, proc: &Path) {
    let scrapes = SCRAPES.fetch_add(1, Ordering::Relaxed) + 1;
    Family::new(
        out,
        format!("{AGENT}_scrape_count"),
        "Metrics scrape count",
        "counter",
    )
    .sample(&[], scrapes as f64);
    let me = proc.join("self");
    if let Some(stat) = read(&me.join("stat")) {
        // Fields after the `(comm)`, which may hold spaces: state is field 3.
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = after.split_whitespace().collect();
        // proc(5) numbering: f[0] is field 3 (state).
        let field = |n: usize| f.get(n - 3).map_or(0.0, |v| num(v));
        let tps = ticks_per_second();
        Family::new(
            out,
            format!("{AGENT}_threads"),
            "Agent process threads",
            "gauge",
        )
        .sample(&[], field(20));
        Family::new(
            out,
            format!("{AGENT}_total_time"),
            "Agent process total time",
            "gauge",
        )
        .sample(&[], (field(14) + field(15)) / tps);
        Family::new(
            out,
            format!("{AGENT}_total_vm"),
            "Agent process total VM size",
            "gauge",
        )
        .sample(&[], field(23));
        Family::new(
            out,
            format!("{AGENT}_total_rss"),
            "Agent process total RSS size",
            "gauge",
        )
        .sample(&[], field(24) * page_size());
        let mut fam = Family::new(
            out,
            format!("{AGENT}_proc_stat"),
            "Agent process statistics.",
            "gauge",
        );
        for (item, n) in [("utime", 14), ("stime", 15), ("cutime", 16), ("cstime", 17)] {
            fam.sample(&[("item", item)], field(n));
        }
    }
    if let Some(status) = read(&me.join("status")) {
        let mut fam = Family::new(
            out,
            format!("{AGENT}_proc_status"),
            "Agent process status.",
            "gauge",
        );
        for (k, v) in pairs(&status, true) {
            if STATUS_ITEMS.contains(&k.as_str()) {
                fam.sample(&[("item", &k)], v);
            }
        }
    }
    if let Some(io) = read(&me.join("io")) {
        let mut fam = Family::new(
            out,
            format!("{AGENT}_io_stat"),
            "Agent process IO statistics.",
            "gauge",
        );
        for (k, v) in pairs(&io, true) {
            fam.sample(&[("item", &k)], v);
        }
    }
}

fn guest_metrics(out: &mut String, proc: &Path) {
    if let Some(load) = read(&proc.join("loadavg")) {
        let f: Vec<&str> = load.split_whitespace().collect();
        let mut fam = Family::new(out, format!("{GUEST}_load"), "Guest system load.", "gauge");
        for (i, item) in ["load1", "load5", "load15"].iter().enumerate() {
            fam.sample(&[("item", item)], f.get(i).map_or(0.0, |v| num(v)));
        }
        if let Some((cur, max)) = f.get(3).and_then(|t| t.split_once('/')) {
            let mut fam = Family::new(out, format!("{GUEST}_tasks"), "Guest system load.", "gauge");
            fam.sample(&[("item", "cur")], num(cur));
            fam.sample(&[("item", "max")], num(max));
        }
    }
    if let Some(stats) = read(&proc.join("diskstats")) {
        let mut fam = Family::new(
            out,
            format!("{GUEST}_diskstat"),
            "Disks statistics in system.",
            "gauge",
        );
        for (disk, item, v) in parse_diskstats(&stats) {
            fam.sample(&[("disk", &disk), ("item", item)], v);
        }
    }
    if let Some(vmstat) = read(&proc.join("vmstat")) {
        let mut fam = Family::new(
            out,
            format!("{GUEST}_vm_stat"),
            "Guest virtual memory statistics.",
            "gauge",
        );
        for (k, v) in pairs(&vmstat, false) {
            fam.sample(&[("item", &k)], v);
        }
    }
    if let Some(stat) = read(&proc.join("stat")) {
        let mut fam = Family::new(
            out,
            format!("{GUEST}_cpu_time"),
            "Guest CPU statistics.",
            "gauge",
        );
        for (cpu, item, v) in parse_cpu_times(&stat, ticks_per_second()) {
            fam.sample(&[("cpu", &cpu), ("item", item)], v);
        }
    }
    if let Some(dev) = read(&proc.join("net/dev")) {
        let mut fam = Family::new(
            out,
            format!("{GUEST}_netdev_stat"),
            "Guest net devices statistics.",
            "gauge",
        );
        for (iface, item, v) in parse_netdev(&dev) {
            fam.sample(&[("interface", &iface), ("item", item)], v);
        }
    }
    if let Some(mem) = read(&proc.join("meminfo")) {
        let mut fam = Family::new(
            out,
            format!("{GUEST}_meminfo"),
            "Statistics about memory usage in the system.",
            "gauge",
        );
        for (item, v) in parse_meminfo(&mem) {
            fam.sample(&[("item", &item)], v);
        }
    }
    filesystem_metrics(out, proc);
}

fn filesystem_metrics(out: &mut String, proc: &Path) {
    let Some(text) = read(&proc.join("self/mountinfo")) else {
        return;
    };
    let mut bytes = Vec::new();
    let mut inodes = Vec::new();
    let mut seen = HashSet::new();
    for line in text.lines() {
        let Some(m) = crate::volume::parse_mountinfo(line).pop() else {
            continue;
        };
        let super_ro = line
            .rsplit(' ')
            .next()
            .is_some_and(|o| o.split(',').any(|o| o == "ro"));
        if !REAL_FS_TYPES.contains(&m.fstype.as_str()) || super_ro {
            continue;
        }
        if !seen.insert((m.major, m.minor)) {
            continue;
        }
        let device = m
            .source
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("{}:{}", m.major, m.minor), str::to_string);
        let Ok(st) = nix::sys::statfs::statfs(&m.mount_point) else {
            continue;
        };
        #[allow(clippy::unnecessary_cast)]
        let (bsize, blocks, bfree, files, ffree) = (
            st.block_size() as u64,
            st.blocks() as u64,
            st.blocks_free() as u64,
            st.files() as u64,
            st.files_free() as u64,
        );
        let mp = m.mount_point.display().to_string();
        let total = blocks.saturating_mul(bsize);
        let avail = bfree.saturating_mul(bsize);
        bytes.push((mp.clone(), device.clone(), total, avail));
        inodes.push((mp, device, files, ffree));
    }
    for (name, help, rows) in [
        (
            "filesystem_bytes",
            "Guest filesystem space usage in bytes.",
            bytes,
        ),
        ("filesystem_inodes", "Guest filesystem inode usage.", inodes),
    ] {
        let mut fam = Family::new(out, format!("{GUEST}_{name}"), help, "gauge");
        for (mp, dev, total, avail) in rows {
            for (item, v) in [
                ("total", total),
                ("used", total.saturating_sub(avail)),
                ("available", avail),
            ] {
                fam.sample(
                    &[("mount", &mp), ("device", &dev), ("item", item)],
                    v as f64,
                );
            }
        }
    }
}

/// The whole GetMetrics text: agent, guest, then `extra` (the KBS session's counters).
pub fn render(sources: &Sources, extra: &str) -> String {
    let mut out = String::new();
    agent_metrics(&mut out, &sources.proc);
    guest_metrics(&mut out, &sources.proc);
    out.push_str(extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_names_are_upstreams() {
        let m = parse_meminfo(
            "MemTotal:       16318588 kB\nActive(anon):     123 kB\nHugePages_Total:       2\nDirectMap2M:  4 kB\nSReclaimable: 1 kB\n",
        );
        assert_eq!(m[0], ("mem_total".to_string(), 16318588.0 * 1024.0));
        assert_eq!(m[1].0, "active_anon");
        assert_eq!(m[2], ("hugepages_total".to_string(), 2.0));
        assert_eq!(m[3].0, "direct_map_2M");
        assert_eq!(m[4].0, "s_reclaimable");
        assert_eq!(meminfo_item("MemAvailable"), "mem_available");
        assert_eq!(meminfo_item("SwapCached"), "swap_cached");
        assert_eq!(meminfo_item("Inactive(file)"), "inactive_file");
        assert_eq!(meminfo_item("KernelStack"), "kernel_stack");
    }

    #[test]
    fn proc_files_parse() {
        let cpu = parse_cpu_times(
            "cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 100 0 50 1000 0 0 0 0 0 0\nintr 5\n",
            100.0,
        );
        assert_eq!(cpu.len(), 20);
        assert_eq!(cpu[0], ("total".to_string(), "user", 1000.0));
        assert_eq!(cpu[12], ("0".to_string(), "system", 500.0));
        let disk = parse_diskstats("   7       0 loop0 5 0 10 1 0 0 0 0 0 4 1 0 0 0 0 0 0\n");
        assert_eq!(disk[0], ("loop0".to_string(), "reads", 5.0));
        assert_eq!(disk[2].2, 10.0);
        assert_eq!(disk.len(), 17);
        let net = parse_netdev(
            "Inter-|   Receive\n face |bytes\n    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n",
        );
        assert_eq!(net.len(), 16);
        assert_eq!(net[0], ("lo".to_string(), "recv_bytes", 100.0));
        assert_eq!(net[9], ("lo".to_string(), "sent_packets", 2.0));
    }

    #[test]
    fn rendering_and_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("self")).unwrap();
        std::fs::create_dir_all(p.join("net")).unwrap();
        std::fs::write(p.join("loadavg"), "0.50 0.25 0.10 2/345 999\n").unwrap();
        std::fs::write(p.join("meminfo"), "MemTotal: 2048 kB\n").unwrap();
        std::fs::write(
            p.join("self/stat"),
            "42 (cocoon agent) S 1 42 42 0 -1 0 0 0 0 0 300 200 0 0 20 0 7 0 100 8192 3\n",
        )
        .unwrap();
        let text = render(
            &Sources {
                proc: p.to_path_buf(),
            },
            "kbs_x 1\n",
        );
        assert!(
            text.contains("kata_guest_load{item=\"load5\"} 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("kata_guest_tasks{item=\"max\"} 345\n"),
            "{text}"
        );
        assert!(
            text.contains("kata_guest_meminfo{item=\"mem_total\"} 2097152\n"),
            "{text}"
        );
        assert!(text.contains("kata_agent_threads 7\n"), "{text}");
        assert!(text.contains("kata_agent_total_vm 8192\n"), "{text}");
        assert!(
            text.contains("kata_agent_proc_stat{item=\"stime\"} 200\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kata_agent_scrape_count counter\n"),
            "{text}"
        );
        assert!(text.ends_with("kbs_x 1\n"));
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
