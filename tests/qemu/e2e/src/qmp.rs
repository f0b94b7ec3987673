//! A small QMP client: JSON lines over QEMU's `-qmp unix:...` socket. It reads the
//! greeting, negotiates with `qmp_capabilities`, then runs one command at a time; events
//! that arrive meanwhile are kept, so a caller can wait for one that came early.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long one command may take (device_add under TCG answers in milliseconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events read while waiting for a command's answer, oldest first.
    events: Vec<Value>,
}

impl Qmp {
    /// Connects to QEMU's QMP socket and leaves capabilities negotiation mode.
    pub async fn connect(path: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to QMP at {}", path.display()))?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            events: Vec::new(),
        };
        let greeting = tokio::time::timeout(COMMAND_TIMEOUT, qmp.read())
            .await
            .context("no QMP greeting")??;
        if greeting.get("QMP").is_none() {
            bail!("not a QMP greeting: {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            bail!("QMP: QEMU closed the socket");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP: not JSON: {line:?}"))
    }

    /// Runs `command` with `arguments` (an object); its `return` value, or its error.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("QMP: sending {command}"))?;
        let answer = async {
            loop {
                let v = self.read().await?;
                if v.get("event").is_some() {
                    self.events.push(v);
                    continue;
                }
                return Ok::<_, anyhow::Error>(v);
            }
        };
        let v = tokio::time::timeout(COMMAND_TIMEOUT, answer)
            .await
            .with_context(|| format!("QMP: no answer to {command} in {COMMAND_TIMEOUT:?}"))??;
        if let Some(e) = v.get("error") {
            bail!(
                "QMP {command}: {} ({})",
                e["desc"].as_str().unwrap_or("?"),
                e["class"].as_str().unwrap_or("?")
            );
        }
        v.get("return")
            .cloned()
            .with_context(|| format!("QMP {command}: neither return nor error: {v}"))
    }

    /// The first event (kept or new) for which `want` holds, within `timeout`.
    pub async fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        if let Some(i) = self.events.iter().position(&want) {
            return Ok(self.events.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match tokio::time::timeout(left, self.read()).await {
                Ok(v) => v?,
                Err(_) => bail!("QMP: no {what} event in {timeout:?}"),
            };
            if want(&v) {
                return Ok(v);
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }
}
