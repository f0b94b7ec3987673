//! Support for tests that run the real agent binary.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const AGENT: &str = env!("CARGO_BIN_EXE_cocoon-agent");

#[path = "../support/skip.rs"]
mod skip;
// Not every test binary uses all three (as with the rest of this module).
#[allow(unused_imports)]
pub use skip::{genpolicy_dir, skip_or_fail, skips_fail};

/// The agent running as a child process; killed on drop.
pub struct AgentProcess {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl AgentProcess {
    /// Starts `command` (the agent, possibly wrapped) and waits until it serves requests
    /// (as PID 1 it says `listening on` before the rest of its start-up).
    pub fn start(mut command: Command) -> AgentProcess {
        command
            .env_remove("KATA_AGENT_LOG_LEVEL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning the agent");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut agent = AgentProcess {
            child,
            lines,
            seen: Vec::new(),
        };
        agent.wait_for_line("listening on", Duration::from_secs(20));
        agent.wait_for_line("serving requests on", Duration::from_secs(20));
        agent
    }

    /// The plain agent on a unix socket.
    pub fn start_unix(socket: &Path) -> AgentProcess {
        let mut command = Command::new(AGENT);
        command.env(
            "KATA_AGENT_SERVER_ADDR",
            format!("unix://{}", socket.display()),
        );
        AgentProcess::start(command)
    }

    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "agent never printed {needle:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to end; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Collect what it printed last, until its pipes close.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent did not exit; output:\n{}",
                self.seen.join("\n")
            );
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_socket(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("agent.sock")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Calls `method` over a fresh connection; returns the JSON response or the error text.
pub fn call(addr: &str, method: &str, json: &str) -> Result<serde_json::Value, String> {
    runtime().block_on(async {
        let addr: cocoon_ctl::Address = addr.parse().map_err(|e| format!("{e}"))?;
        let client = cocoon_ctl::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        let text = cocoon_ctl::call_json(&client, method, json, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        Ok(serde_json::from_str(&text).unwrap())
    })
}

/// A loop device (`losetup --find --show`), detached on drop (one still in use is
/// detached by the kernel at its last close).
pub struct LoopDevice(pub String);

impl LoopDevice {
    /// Attaches `image`, or `None` through [`skip_or_fail`] when this machine has no
    /// free loop device or no losetup.
    pub fn attach(image: &Path) -> Option<LoopDevice> {
        match Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
        {
            Ok(out) if out.status.success() => Some(LoopDevice(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )),
            Ok(out) => {
                skip_or_fail(&format!(
                    "no loop device: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
                None
            }
            Err(e) => {
                skip_or_fail(&format!("losetup: {e} (apt-get install util-linux)"));
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// The agent in a private mount namespace of its own, after the shell commands `setup`
/// (mounts the test needs, gone with the namespace), with `args`.
pub fn agent_in_private_mounts(setup: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!("{setup} && exec \"$0\" \"$@\""))
        .arg(AGENT)
        .args(args);
    cmd
}
