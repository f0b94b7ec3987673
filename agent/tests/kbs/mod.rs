//! The test KBS (`cocoon-test-kbs`, tests/kbs) as a process for agent tests, and sealing
//! of secrets with `cocoon-ctl secret`'s library functions.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use serde_json::{json, Value};

/// `cocoon-test-kbs`, built next to the agent (cargo builds another package's binaries
/// only for that package: build it when this test runs alone).
pub fn test_kbs_binary() -> PathBuf {
    let agent = Path::new(crate::common::AGENT);
    let bin = agent.with_file_name("cocoon-test-kbs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "cocoon-test-kbs",
            "--bin",
            "cocoon-test-kbs",
        ])
        .status()
        .expect("running cargo build -p cocoon-test-kbs");
    assert!(status.success(), "cargo build -p cocoon-test-kbs failed");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

pub struct TestKbs {
    pub dir: tempfile::TempDir,
    pub url: String,
    child: Child,
}

impl TestKbs {
    /// Serves `resources` (`repo/type/tag` → bytes), with an optional policy JSON.
    pub fn start(resources: &[(&str, &[u8])], policy: Option<Value>, args: &[&str]) -> TestKbs {
        let dir = tempfile::tempdir().unwrap();
        let res = dir.path().join("resources");
        for (path, data) in resources {
            let file = res.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, data).unwrap();
        }
        std::fs::create_dir_all(&res).unwrap();
        let mut cmd = Command::new(test_kbs_binary());
        cmd.arg("--resources").arg(&res).args(args);
        if let Some(p) = policy {
            let f = dir.path().join("policy.json");
            std::fs::write(&f, p.to_string()).unwrap();
            cmd.arg("--policy").arg(f);
        }
        let mut child = cmd
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("test KBS said {line:?}"))
            .to_string();
        TestKbs { dir, url, child }
    }

    pub fn stats(&self) -> Value {
        let text = ureq::get(&format!("{}/test/stats", self.url))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn handshakes(&self) -> u64 {
        self.stats()["handshakes"].as_u64().unwrap()
    }

    pub fn fault(&self, mode: &str, slow_ms: u64) {
        ureq::post(&format!("{}/test/fault", self.url))
            .send_string(&json!({"mode": mode, "slow_ms": slow_ms}).to_string())
            .unwrap();
    }
}

impl Drop for TestKbs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fixed P-256 signing key for sealed secrets (the tenant's, in real use).
pub fn signing_key(seed: u8) -> p256::ecdsa::SigningKey {
    let d = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([seed; 32]);
    let jwk = json!({"kty": "EC", "crv": "P-256", "d": d}).to_string();
    cocoon_ctl::secret::signing_key_from_jwk(&jwk).unwrap()
}

/// The public JWK of `signing_key(seed)`, as the KBS holds it.
pub fn public_jwk(seed: u8) -> Vec<u8> {
    cocoon_ctl::secret::public_jwk(&signing_key(seed), "")
        .to_string()
        .into_bytes()
}

/// `sealed.…` naming KBS resource `resource`, signed with key `seed`, kid `kid`.
pub fn seal(resource: &str, kid: &str, seed: u8) -> String {
    let empty = serde_json::Map::new();
    let payload = cocoon_ctl::secret::vault_payload(resource, "kbs", &empty, &empty);
    cocoon_ctl::secret::seal(&payload, &signing_key(seed), kid)
}

/// A sealed secret with a hand-written payload (wrong versions, envelope…).
pub fn seal_payload(payload: &Value, kid: &str, seed: u8) -> String {
    cocoon_ctl::secret::seal(&payload.to_string(), &signing_key(seed), kid)
}
