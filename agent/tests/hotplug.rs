//! OnlineCPUMem and MemHotplugByProbe through the real binary, on a fake sysfs: the
//! agent runs in a private mount namespace where directories of a temporary tree are
//! bind-mounted over `/sys/devices/system/cpu` and `/sys/devices/system/memory`, so the
//! host's CPUs and memory are never touched. A thread plays the kernel: it lists in
//! `cpu/online` the CPUs whose `cpuN/online` the agent set to 1.
//!
//! Real hot-plug (QEMU `-smp 1,maxcpus=2` + `device_add`, memory DIMMs) is for the QEMU
//! guest and not run here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use common::{call, AgentProcess};

const CPUS: usize = 4;

struct Fake {
    _dir: tempfile::TempDir,
    cpu: PathBuf,
    memory: PathBuf,
    addr: String,
    agent: AgentProcess,
    stop: Arc<AtomicBool>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn fake_sysfs(with_probe: bool) -> Option<Fake> {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip_or_fail("needs root (mount namespaces)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let cpu = dir.path().join("cpu");
    let memory = dir.path().join("memory");
    for n in 0..CPUS {
        std::fs::create_dir_all(cpu.join(format!("cpu{n}"))).unwrap();
        if n > 0 {
            std::fs::write(cpu.join(format!("cpu{n}/online")), "0\n").unwrap();
        }
    }
    std::fs::write(cpu.join("online"), "0\n").unwrap();
    for (n, state) in [(0, "1\n"), (1, "0\n"), (2, "0\n")] {
        std::fs::create_dir_all(memory.join(format!("memory{n}"))).unwrap();
        std::fs::write(memory.join(format!("memory{n}/online")), state).unwrap();
    }
    if with_probe {
        nix::unistd::mkfifo(
            &memory.join("probe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    // The kernel double: cpu/online follows the cpuN/online files.
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (cpu.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            let mut online = vec!["0".to_string()];
            for n in 1..CPUS {
                if std::fs::read_to_string(c.join(format!("cpu{n}/online")))
                    .is_ok_and(|v| v.trim() == "1")
                {
                    online.push(n.to_string());
                }
            }
            let _ = std::fs::write(c.join("online.new"), online.join(",") + "\n");
            let _ = std::fs::rename(c.join("online.new"), c.join("online"));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "hotplug_timeout = 1\n").unwrap();
    let sock = dir.path().join("agent.sock");
    let addr = format!("unix://{}", sock.display());
    let setup = format!(
        "mount --bind {} /sys/devices/system/cpu && mount --bind {} /sys/devices/system/memory",
        cpu.display(),
        memory.display(),
    );
    let mut cmd = common::agent_in_private_mounts(&setup, &["--config", config.to_str().unwrap()]);
    cmd.env("KATA_AGENT_SERVER_ADDR", &addr)
        .env("COCOON_RUN_DIR", dir.path().join("run"))
        .env_remove("COCOON_POLICY_CONFIDENTIAL");
    let agent = AgentProcess::start(cmd);
    Some(Fake {
        _dir: dir,
        cpu,
        memory,
        addr,
        agent,
        stop,
    })
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn online_cpu_mem_onlines_cpus_and_memory_within_the_hotplug_timeout() {
    let Some(mut f) = fake_sysfs(false) else {
        return;
    };
    // CPUs only: 3 of 4 online, memory left alone.
    call(
        &f.addr,
        "OnlineCPUMem",
        &json!({"wait": true, "nb_cpus": 3, "cpu_only": true}).to_string(),
    )
    .unwrap();
    assert_eq!(read(&f.cpu.join("cpu1/online")), "1");
    assert_eq!(read(&f.cpu.join("cpu2/online")), "1");
    assert_eq!(read(&f.cpu.join("cpu3/online")), "0");
    assert_eq!(read(&f.memory.join("memory1/online")), "0");
    f.agent
        .wait_for_line("CPUs online", Duration::from_secs(10));
    // More than there are: DEADLINE_EXCEEDED after agent.hotplug_timeout (1 s).
    let start = Instant::now();
    let err = call(
        &f.addr,
        "OnlineCPUMem",
        &json!({"nb_cpus": 8, "cpu_only": true}).to_string(),
    )
    .unwrap_err();
    assert!(
        err.contains("DEADLINE_EXCEEDED") && err.contains("4 of 8 CPUs"),
        "{err}"
    );
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(start.elapsed() < Duration::from_secs(5));
    // Memory: every offline block.
    call(&f.addr, "OnlineCPUMem", &json!({"nb_cpus": 0}).to_string()).unwrap();
    assert_eq!(read(&f.memory.join("memory1/online")), "1");
    assert_eq!(read(&f.memory.join("memory2/online")), "1");
    assert_eq!(read(&f.memory.join("memory0/online")), "1");
}

#[test]
fn mem_hotplug_by_probe_writes_each_address() {
    let Some(f) = fake_sysfs(true) else {
        return;
    };
    let probe = f.memory.join("probe");
    // The fifo gets the agent's writes. Held open read-write (never blocks, never sees
    // EOF between the agent's open/write/close of each address) and read without
    // blocking until both arrived or the deadline passed.
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&probe)
        .unwrap();
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&fifo),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let reader = std::thread::spawn(move || {
        let mut fifo = fifo;
        let mut all = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all.contains("0x148100000") && Instant::now() < deadline {
            let mut buf = [0u8; 256];
            match fifo.read(&mut buf) {
                Ok(n) => all.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("reading the probe fifo: {e}"),
            }
        }
        all
    });
    call(
        &f.addr,
        "MemHotplugByProbe",
        &json!({"memHotplugProbeAddr": ["4294967296", "5503975424"]}).to_string(),
    )
    .unwrap();
    let written = reader.join().unwrap();
    assert_eq!(written, "0x1000000000x148100000");
}

#[test]
fn mem_hotplug_by_probe_without_the_interface_is_a_failed_precondition() {
    let Some(f) = fake_sysfs(false) else {
        return;
    };
    let err = call(
        &f.addr,
        "MemHotplugByProbe",
        &json!({"memHotplugProbeAddr": ["4294967296"]}).to_string(),
    )
    .unwrap_err();
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("probe"),
        "{err}"
    );
}
