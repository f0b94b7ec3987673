//! OnlineCPUMem and MemHotplugByProbe, as upstream's agent does them
//! (`src/agent/src/sandbox.rs` `online_cpu_memory`, `rpc.rs` `do_mem_hotplug_by_probe`),
//! on sysfs under a root that tests replace.
//!
//! OnlineCPUMem: with `nb_cpus > 0`, offline `cpuN` are onlined (`cpuN/online` ← `1`)
//! until `cpu/online` lists `nb_cpus` CPUs, retried every 50 ms within
//! `agent.hotplug_timeout` (upstream: 100 × 50 ms), else DEADLINE_EXCEEDED saying how many
//! came online; unless `cpu_only`, every offline `memoryN` block is onlined. Then the
//! cpusets of running containers are written again (cgroup v1 drops CPUs that were
//! offline when a cpuset was set; v2 widens by itself). `wait` is ignored, as upstream
//! does: the call always waits.
//!
//! MemHotplugByProbe: each address is written to `memory/probe` as `0x…` (upstream's
//! `{:#X}`); the runtime then sends OnlineCPUMem. A guest without the probe interface
//! answers FAILED_PRECONDITION.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{AgentError, Result};

/// Where the agent reads and writes sysfs.
pub const SYSFS: &str = "/sys";
const CPU_DIR: &str = "devices/system/cpu";
const MEMORY_DIR: &str = "devices/system/memory";
const ONLINE: &str = "online";
const PROBE: &str = "probe";
/// Between two attempts to online CPUs (upstream's `ONLINE_CPUMEM_WAIT_MILLIS`).
const RETRY: Duration = Duration::from_millis(50);

/// How many CPUs a kernel CPU list (`0-3,6`) names.
pub fn count_cpu_list(list: &str) -> Result<usize> {
    let mut n = 0usize;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || AgentError::Internal(format!("cpu list {list:?}: bad part {part:?}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a {
                    return Err(bad());
                }
                n += b - a + 1;
            }
            None => {
                part.parse::<usize>().map_err(|_| bad())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Onlines up to `max` (all with `None`) offline entries `<prefix>N` of `dir`.
fn online_entries(dir: &Path, prefix: &str, max: Option<usize>) -> Result<usize> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| AgentError::internal(&format!("reading {}", dir.display()), e))?;
    let mut names: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix(prefix)?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    names.sort();
    let mut count = 0;
    for (_, p) in names {
        if max.is_some_and(|m| count >= m) {
            break;
        }
        let f = p.join(ONLINE);
        let Ok(state) = std::fs::read_to_string(&f) else {
            // (cpu0 usually has no `online`: it cannot go offline.)
            continue;
        };
        if state.trim() == "0" {
            match std::fs::write(&f, "1") {
                Ok(()) => count += 1,
                Err(e) => tracing::warn!(path = %f.display(), error = %e, "onlining"),
            }
        }
    }
    Ok(count)
}

fn online_cpus(sysfs: &Path) -> Result<usize> {
    let f = sysfs.join(CPU_DIR).join(ONLINE);
    let text = std::fs::read_to_string(&f)
        .map_err(|e| AgentError::internal(&format!("reading {}", f.display()), e))?;
    count_cpu_list(&text)
}

/// Onlines CPUs until `want` are online, within `timeout`.
pub fn online_cpus_until(sysfs: &Path, want: usize, timeout: Duration) -> Result<usize> {
    let timeout = timeout.min(crate::config::MAX_TIMEOUT);
    let start = Instant::now();
    loop {
        let online = online_cpus(sysfs)?;
        if online >= want {
            tracing::info!(online, want, "OnlineCPUMem: CPUs online");
            return Ok(online);
        }
        online_entries(&sysfs.join(CPU_DIR), "cpu", Some(want - online))?;
        if start.elapsed() >= timeout {
            return Err(AgentError::DeadlineExceeded(format!(
                "{online} of {want} CPUs online after {timeout:?} (agent.hotplug_timeout)"
            )));
        }
        std::thread::sleep(RETRY);
    }
}

/// Onlines every offline memory block; answers how many.
pub fn online_memory(sysfs: &Path) -> Result<usize> {
    let n = online_entries(&sysfs.join(MEMORY_DIR), "memory", None)?;
    tracing::info!(blocks = n, "OnlineCPUMem: memory blocks onlined");
    Ok(n)
}

/// MemHotplugByProbe.
pub fn probe_memory(sysfs: &Path, addrs: &[u64]) -> Result<()> {
    let probe = sysfs.join(MEMORY_DIR).join(PROBE);
    if !probe.exists() {
        return Err(AgentError::FailedPrecondition(format!(
            "{} is absent: this guest kernel has no memory hotplug probe interface",
            probe.display()
        )));
    }
    for a in addrs {
        tracing::info!(addr = format!("{a:#X}"), "MemHotplugByProbe");
        std::fs::write(&probe, format!("{a:#X}")).map_err(|e| {
            AgentError::internal(&format!("writing {a:#X} to {}", probe.display()), e)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0\n").unwrap(), 1);
        assert_eq!(count_cpu_list("0-3,6,8-9\n").unwrap(), 7);
        assert_eq!(count_cpu_list("").unwrap(), 0);
        assert!(count_cpu_list("3-1").is_err());
        assert!(count_cpu_list("x").is_err());
    }

    #[test]
    fn online_and_probe_on_a_fake_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        let cpu = sys.join(CPU_DIR);
        for n in 0..4 {
            std::fs::create_dir_all(cpu.join(format!("cpu{n}"))).unwrap();
            if n > 0 {
                std::fs::write(cpu.join(format!("cpu{n}/online")), "0\n").unwrap();
            }
        }
        std::fs::write(cpu.join("online"), "0\n").unwrap();
        // Nobody updates cpu/online here: with no time to wait, one attempt onlines one
        // CPU and the call runs out. (A longer wait would online one more per retry, as
        // the fake never shows them online.)
        let e = online_cpus_until(sys, 2, Duration::ZERO).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::DEADLINE_EXCEEDED);
        assert!(e.to_string().contains("1 of 2 CPUs"), "{e}");
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu1/online")).unwrap(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu2/online")).unwrap(),
            "0\n"
        );
        std::fs::write(cpu.join("online"), "0-1\n").unwrap();
        assert_eq!(online_cpus_until(sys, 2, Duration::ZERO).unwrap(), 2);

        let mem = sys.join(MEMORY_DIR);
        for (n, state) in [(0, "1\n"), (1, "0\n"), (10, "0\n")] {
            std::fs::create_dir_all(mem.join(format!("memory{n}"))).unwrap();
            std::fs::write(mem.join(format!("memory{n}/online")), state).unwrap();
        }
        assert_eq!(online_memory(sys).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(mem.join("memory10/online")).unwrap(),
            "1"
        );

        let e = probe_memory(sys, &[0x1_0000_0000]).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::FAILED_PRECONDITION);
        std::fs::write(mem.join("probe"), "").unwrap();
        probe_memory(sys, &[0x1_0800_0000]).unwrap();
        assert_eq!(
            std::fs::read_to_string(mem.join("probe")).unwrap(),
            "0x108000000"
        );
    }
}
