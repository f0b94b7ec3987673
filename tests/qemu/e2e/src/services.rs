//! What the guest talks to, on host loopback: Debian's `docker-registry` and the test KBS
//! (`cocoon-test-kbs`, a faithful double of Trustee's KBS, which cannot run here).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::procs::{free_port, wait_tcp, Proc};

pub struct Registry {
    pub addr: String,
    pub root: PathBuf,
    _proc: Proc,
}

impl Registry {
    pub fn start(dir: &Path) -> Result<Registry> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let root = dir.join("registry-data");
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            root.display()
        );
        let cfg_path = dir.join("registry.yml");
        std::fs::write(&cfg_path, cfg)?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&cfg_path);
        let proc = Proc::spawn("docker-registry", cmd, &dir.join("registry.log"))?;
        wait_tcp(&addr, Duration::from_secs(20), "docker-registry")?;
        Ok(Registry {
            addr,
            root,
            _proc: proc,
        })
    }
}

pub struct Kbs {
    pub addr: String,
    proc: Proc,
}

impl Kbs {
    /// Starts the test KBS with `resources` (`repo/type/tag` → bytes) and `policy`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        resources: &[(&str, Vec<u8>)],
        policy: &serde_json::Value,
        accept_evidence: &str,
    ) -> Result<Kbs> {
        let res = dir.join("kbs-resources");
        for (path, data) in resources {
            let file = res.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(file, data)?;
        }
        let policy_file = dir.join("kbs-policy.json");
        std::fs::write(&policy_file, policy.to_string())?;
        let log = std::fs::File::create(dir.join("kbs.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--resources")
            .arg(&res)
            .arg("--policy")
            .arg(&policy_file)
            .args(["--accept-evidence", accept_evidence])
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut proc = Proc::spawn_raw("cocoon-test-kbs", cmd)?;
        let stdout = proc.stdout().context("test KBS stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("the test KBS said {line:?}"))?;
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        Ok(Kbs { addr, proc })
    }

    /// `GET /test/stats` (handshakes, releases, ...).
    pub fn stats(&self) -> Result<serde_json::Value> {
        let body = http_get(&self.addr, "/test/stats")?;
        Ok(serde_json::from_str(&body)?)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A minimal HTTP/1.1 GET on loopback (no client library for two test endpoints).
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("GET {path}: no HTTP response: {text:?}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}
