//! The guest: QEMU (q35, OVMF, TCG, memfd-shared memory) with vhost-user-vsock served by
//! `vhost-device-vsock` (the hybrid-vsock `CONNECT <port>` socket Kata uses with Cloud
//! Hypervisor and Firecracker), and user networking with `restrict=on` whose only way out
//! is two `guestfwd` rules: the registry and the KBS on host loopback.
//!
//! A watcher thread timestamps every console line on the host as it appears, so boot
//! stages can be measured from QEMU's start.

use std::io::{BufRead, BufReader, Seek};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procs::Proc;

/// Where the guest sees the registry and the KBS (QEMU user net: 10.0.2.0/24).
pub const GUEST_REGISTRY: &str = "10.0.2.100:5000";
pub const GUEST_KBS: &str = "10.0.2.101:8080";
/// The guest's address, gateway and NIC MAC, as the runtime would send them.
pub const GUEST_IP: &str = "10.0.2.15";
pub const GUEST_GW: &str = "10.0.2.2";
pub const GUEST_MAC: &str = "52:54:00:c0:c0:01";
const GUEST_CID: u32 = 3;

/// What to boot.
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub memory: String,
    pub registry_port: u16,
    pub kbs_port: u16,
    /// Room for CPU and memory hotplug ([`HOTPLUG_MACHINE`]); off for the start-up
    /// benchmark, whose command line stays as it was.
    pub hotplug: bool,
    /// An ext4 image given to the guest as a virtio-blk disk (crate::volume).
    pub volume: Option<PathBuf>,
}

/// For CPU and memory hotplug: a QMP socket, one more possible vCPU, two DIMM slots, and
/// the guest told it runs on a hypervisor. The guest kernel (Debian 6.12.117: the x86
/// MADT "Enabled=0" rework that went to stable) counts QEMU's disabled LAPIC entries as
/// hot-pluggable CPUs only when it detects a hypervisor, and under TCG it detects none
/// (QEMU's `TCGTCGTCGTCG` CPUID signature is unknown to it): "Allowing 1 present CPUs
/// plus 0 hotplug CPUs", then on `device_add` "ACPI: Unable to map lapic to logical cpu
/// number". QEMU's VMware backdoor port (`vmport=on`), an SMBIOS serial starting with
/// `VMware` and no CPUID hypervisor bit make it detect VMware ("Hypervisor detected:
/// VMware"), as it detects KVM in a real deployment. TEST ONLY.
const HOTPLUG_MACHINE: &str = "vmport=on";
const HOTPLUG_CPU: &str = "max,-hypervisor";
const HOTPLUG_SMBIOS: &str = "type=1,serial=VMware-cocoon-e2e";
const HOTPLUG_SMP: &str = "1,maxcpus=2";
const HOTPLUG_MAXMEM: &str = "slots=2,maxmem=2G";

/// Console lines with the host time they were seen, relative to QEMU's start.
#[derive(Clone, Default)]
pub struct Console(Arc<Mutex<Vec<(Duration, String)>>>);

impl Console {
    fn push(&self, at: Duration, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((at, line));
    }

    /// When the first line containing `needle` appeared.
    pub fn seen(&self, needle: &str) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }
}

pub struct Vm {
    pub vsock: PathBuf,
    /// QEMU's QMP socket (server, no wait), with [`VmConfig::hotplug`].
    pub qmp: Option<PathBuf>,
    pub console: Console,
    pub started: Instant,
    qemu: Proc,
    _vhost: Proc,
}

impl Vm {
    /// Starts vhost-device-vsock and QEMU in `dir`.
    pub fn boot(dir: &Path, cfg: &VmConfig) -> Result<Vm> {
        let vhost_sock = dir.join("vhost.sock");
        let vsock = dir.join("vsock.sock");
        let qmp_sock = dir.join("qmp.sock");
        for p in [&vhost_sock, &vsock, &qmp_sock] {
            let _ = std::fs::remove_file(p);
        }
        let mut cmd = Command::new("vhost-device-vsock");
        cmd.arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&vhost_sock)
            .arg("--uds-path")
            .arg(&vsock);
        let vhost = Proc::spawn("vhost-device-vsock", cmd, &dir.join("vhost.log"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vhost_sock.exists() {
            if Instant::now() > deadline {
                bail!("vhost-device-vsock did not create {}", vhost_sock.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
            .context("OVMF (tests/qemu/setup.sh installs it)")?;
        let console_path = dir.join("console.log");
        let _ = std::fs::remove_file(&console_path);
        std::fs::write(&console_path, b"")?;
        // guestfwd: QEMU runs the command for every connection the guest opens.
        let fwd = |guest: &str, port: u16| {
            format!("guestfwd=tcp:{guest}-cmd:socat STDIO TCP:127.0.0.1:{port}")
        };
        let netdev = format!(
            "user,id=net0,restrict=on,{},{}",
            fwd(GUEST_REGISTRY, cfg.registry_port),
            fwd(GUEST_KBS, cfg.kbs_port)
        );
        let mem = &cfg.memory;
        let mut cmd = Command::new("qemu-system-x86_64");
        if cfg.hotplug {
            cmd.arg("-machine")
                .arg(format!(
                    "q35,accel=tcg,memory-backend=mem,{HOTPLUG_MACHINE}"
                ))
                .args(["-cpu", HOTPLUG_CPU, "-smbios", HOTPLUG_SMBIOS])
                .args(["-smp", HOTPLUG_SMP, "-m"])
                .arg(format!("{mem},{HOTPLUG_MAXMEM}"))
                .arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()));
        } else {
            cmd.args([
                "-machine",
                "q35,accel=tcg,memory-backend=mem",
                "-cpu",
                "max",
            ])
            .args(["-smp", "1", "-m", mem]);
        }
        cmd.arg("-object")
            .arg(format!("memory-backend-memfd,id=mem,size={mem},share=on"))
            .arg("-drive")
            .arg("if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE_4M.fd,readonly=on")
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&cfg.initrd)
            .arg("-append")
            .arg(&cfg.cmdline)
            .arg("-chardev")
            .arg(format!("socket,id=vsock0,path={}", vhost_sock.display()))
            .args(["-device", "vhost-user-vsock-pci,chardev=vsock0"])
            .arg("-netdev")
            .arg(netdev)
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=net0,mac={GUEST_MAC}"))
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console_path.display()));
        if let Some(image) = &cfg.volume {
            cmd.args(crate::volume::qemu_args(image));
        }
        let started = Instant::now();
        let qemu = Proc::spawn("qemu", cmd, &dir.join("qemu.log"))?;
        let console = Console::default();
        watch_console(console_path.clone(), console.clone(), started);
        Ok(Vm {
            vsock,
            qmp: cfg.hotplug.then_some(qmp_sock),
            console,
            started,
            qemu,
            _vhost: vhost,
        })
    }

    /// Waits for `needle` on the console; fails if QEMU exits or `timeout` passes.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.console.seen(needle) {
                return Ok(t);
            }
            if let Some(status) = self.qemu.exited() {
                bail!("QEMU exited ({status}) before the console said {needle:?}");
            }
            if Instant::now() >= deadline {
                bail!("no {needle:?} on the console after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for QEMU to exit (the guest powered off).
    pub fn wait_poweroff(&mut self, timeout: Duration) -> Result<()> {
        let status = self.qemu.wait_exit(timeout)?;
        if !status.success() {
            bail!("QEMU exited with {status}");
        }
        Ok(())
    }

    pub fn address(&self) -> cocoon_ctl::Address {
        cocoon_ctl::Address::HybridVsock {
            path: self.vsock.display().to_string(),
            port: AGENT_PORT,
        }
    }
}

/// The agent's ttrpc port (kata's `vsock://-1:1024`).
const AGENT_PORT: u32 = 1024;

/// Follows the console file, timestamping each complete line; the timed lines also go
/// to `console-timed.log` beside it (ms since QEMU's start).
fn watch_console(path: PathBuf, console: Console, started: Instant) {
    let spawned = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let Ok(file) = std::fs::File::open(&path) else {
                return;
            };
            let mut timed = path
                .parent()
                .and_then(|d| std::fs::File::create(d.join("console-timed.log")).ok());
            let mut reader = BufReader::new(file);
            let mut partial = String::new();
            loop {
                let mut buf = String::new();
                match reader.read_line(&mut buf) {
                    Ok(0) => {
                        // 2 ms: the timestamps measure start-up stages of ~100 ms.
                        std::thread::sleep(Duration::from_millis(2));
                        // Re-read from where we are (the file grows).
                        let _ = reader.stream_position();
                    }
                    Ok(_) => {
                        partial.push_str(&buf);
                        if partial.ends_with('\n') {
                            let at = started.elapsed();
                            let line = partial.trim_end().replace('\r', "");
                            if let Some(f) = timed.as_mut() {
                                use std::io::Write as _;
                                let _ = writeln!(f, "{:>9.1} {line}", at.as_secs_f64() * 1000.0);
                            }
                            console.push(at, line);
                            partial.clear();
                        }
                    }
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("e2e: cannot watch the console: {e}");
    }
}
