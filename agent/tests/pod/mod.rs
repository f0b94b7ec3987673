//! A pod for container tests: a busybox rootfs, the agent on a unix socket with its
//! run directory and cgroup subtree moved into the test's own places, and clean-up of
//! everything (processes, mounts, cgroups) on drop, even when the test failed.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{call, AgentProcess, AGENT};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// containerd's default capability set (genpolicy's `DEFAULT_UNIX_CAPS` lists the same
/// 14): what a Kubernetes container without `securityContext.capabilities` gets.
pub const CONTAINERD_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Why container tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("container tests need root".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("container tests need /bin/busybox (apt-get install busybox-static)".into());
    }
    None
}

macro_rules! require_pod {
    () => {
        if let Some(reason) = crate::pod::skip_reason() {
            crate::common::skip_or_fail(&reason);
            return;
        }
    };
}
pub(crate) use require_pod;

pub struct Pod {
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub rootfs: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_parent: String,
    pub agent: Option<AgentProcess>,
}

/// Makes a busybox root filesystem in `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
    rootfs
}

impl Pod {
    pub fn new() -> Pod {
        Pod::with_wrapper(&[])
    }

    /// The agent in a private mount namespace where the host's cgroup2 hierarchy
    /// (`/sys/fs/cgroup/unified` on a hybrid host) is bind-mounted on /sys/fs/cgroup:
    /// pure cgroup v2, as in the guest. None if this host has no cgroup2 mount there.
    pub fn new_v2() -> Option<Pod> {
        if !Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
            return None;
        }
        Some(Pod::with_wrapper(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && exec \"$0\"",
        ]))
    }

    /// The agent started with `--config <file holding config_toml>`.
    pub fn with_config(config_toml: &str) -> Pod {
        Pod::start(&[], Some(config_toml), &[])
    }

    /// The same, with extra environment variables for the agent.
    pub fn with_config_env(config_toml: &str, env: &[(&str, &Path)]) -> Pod {
        Pod::start(&[], Some(config_toml), env)
    }

    fn with_wrapper(wrapper: &[&str]) -> Pod {
        Pod::start(wrapper, None, &[])
    }

    fn start(wrapper: &[&str], config_toml: Option<&str>, env: &[(&str, &Path)]) -> Pod {
        let dir = tempfile::Builder::new()
            .prefix("cocoon-pod")
            .tempdir()
            .unwrap();
        let rootfs = busybox_rootfs(dir.path());
        let run_dir = dir.path().join("run");
        let sock = dir.path().join("agent.sock");
        let cgroup_parent = format!(
            "cocoon-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(AGENT);
                c
            }
            None => Command::new(AGENT),
        };
        if let Some(text) = config_toml {
            let file = dir.path().join("agent.toml");
            std::fs::write(&file, text).unwrap();
            command.arg("--config").arg(file);
        }
        command
            .env(
                "KATA_AGENT_SERVER_ADDR",
                format!("unix://{}", sock.display()),
            )
            .env("COCOON_RUN_DIR", &run_dir)
            .env("COCOON_CGROUP_PARENT", &cgroup_parent);
        for (k, v) in env {
            command.env(k, v);
        }
        let agent = AgentProcess::start(command);
        Pod {
            addr: format!("unix://{}", sock.display()),
            dir,
            rootfs,
            run_dir,
            cgroup_parent,
            agent: Some(agent),
        }
    }

    pub fn call(&self, method: &str, req: Value) -> Result<Value, String> {
        call(&self.addr, method, &req.to_string())
    }

    pub fn ok(&self, method: &str, req: Value) -> Value {
        self.call(method, req.clone())
            .unwrap_or_else(|e| panic!("{method} {req}: {e}\n{}", self.agent_log()))
    }

    pub fn agent_log(&self) -> String {
        match &self.agent {
            Some(a) => {
                let mut seen = a.seen.clone();
                while let Ok(l) = a.lines.try_recv() {
                    seen.push(l);
                }
                seen.join("\n")
            }
            None => String::new(),
        }
    }

    /// A grpc.Spec (proto JSON) running `args` in the busybox rootfs.
    pub fn spec(&self, args: &[&str]) -> Value {
        json!({
            "Version": "1.0.2",
            "Process": {
                "Terminal": false,
                "User": {"UID": 0, "GID": 0},
                "Args": args,
                "Env": ["PATH=/bin", "HOME=/root"],
                "Cwd": "/",
                "NoNewPrivileges": true
            },
            "Root": {"Path": self.rootfs.display().to_string(), "Readonly": false},
            "Mounts": [
                {"destination": "/proc", "source": "proc", "type": "proc"},
                {"destination": "/dev", "source": "tmpfs", "type": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "source": "devpts", "type": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/tmp", "source": "tmpfs", "type": "tmpfs", "options": ["nosuid", "nodev"]}
            ],
            "Linux": {
                "Namespaces": [{"Type": "pid"}, {"Type": "mount"}, {"Type": "ipc"},
                               {"Type": "uts"}, {"Type": "network"}],
                "MaskedPaths": ["/proc/kcore"],
                "ReadonlyPaths": ["/proc/sys"]
            }
        })
    }

    pub fn create(&self, cid: &str, spec: Value) {
        self.ok(
            "CreateContainer",
            json!({"container_id": cid, "exec_id": cid, "OCI": spec}),
        );
    }

    pub fn run(&self, cid: &str, args: &[&str]) {
        self.create(cid, self.spec(args));
        self.ok("StartContainer", json!({"container_id": cid}));
    }

    /// Reads a stream until EOF: OK with no data, as upstream answers it (an error
    /// here is a failure).
    pub fn read_all(&self, cid: &str, exec: &str, stderr: bool) -> String {
        let method = if stderr { "ReadStderr" } else { "ReadStdout" };
        let mut out = Vec::new();
        loop {
            let req = json!({"container_id": cid, "exec_id": exec, "len": 4096});
            let chunk = decode(&self.ok(method, req)["data"]);
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Reads until `needle` was seen (or panics after 20 s).
    pub fn read_until(&self, cid: &str, exec: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while !String::from_utf8_lossy(&out).contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "never saw {needle:?}: {:?}",
                String::from_utf8_lossy(&out)
            );
            let v = self
                .call(
                    "ReadStdout",
                    json!({"container_id": cid, "exec_id": exec, "len": 4096}),
                )
                .unwrap_or_else(|e| {
                    panic!(
                        "waiting for {needle:?} in {:?}: {e}",
                        String::from_utf8_lossy(&out)
                    )
                });
            out.extend(decode(&v["data"]));
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn wait(&self, cid: &str, exec: &str) -> i64 {
        let v = self.ok("WaitProcess", json!({"container_id": cid, "exec_id": exec}));
        v["status"].as_i64().unwrap_or(0)
    }

    pub fn write_stdin(&self, cid: &str, exec: &str, data: &[u8]) {
        let data = base64::engine::general_purpose::STANDARD.encode(data);
        self.ok(
            "WriteStdin",
            json!({"container_id": cid, "exec_id": exec, "data": data}),
        );
    }

    /// Mounts below the test's directory, as seen in our mount namespace.
    pub fn mounts(&self) -> Vec<String> {
        let needle = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Cgroup directories of this pod that still exist.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let p = Path::new(base).join(&self.cgroup_parent);
            if p.exists() {
                found.push(p);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in dir.flatten() {
                let p = e.path().join(&self.cgroup_parent);
                if p.exists() && !found.contains(&p) {
                    found.push(p);
                }
            }
        }
        found
    }

    /// Waits for the agent to exit (after DestroySandbox).
    pub fn wait_agent_exit(&mut self) -> std::process::ExitStatus {
        self.agent
            .as_mut()
            .unwrap()
            .wait_exit(Duration::from_secs(30))
    }
}

pub fn decode(v: &Value) -> Vec<u8> {
    match v.as_str() {
        Some(s) => base64::engine::general_purpose::STANDARD.decode(s).unwrap(),
        None => Vec::new(),
    }
}

/// Pids whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(marker)
            {
                pids.push(pid);
            }
        }
    }
    pids
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The agent first (its containers' processes are then orphans in our cgroups).
        drop(self.agent.take());
        for dir in self.cgroup_dirs() {
            remove_cgroup_tree(&dir);
        }
        // Innermost mounts first.
        let mut mounts: Vec<String> = self
            .mounts()
            .iter()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Waits (up to 10 s) until `n` processes' command lines contain `marker`; they are
/// started asynchronously after StartContainer/ExecProcess answer.
pub fn wait_pids(marker: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = pids_with(marker).len();
        if found == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{found} processes with {marker:?}, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
