//! GetIPTables / SetIPTables: the guest's iptables rules through `iptables-save` and
//! `iptables-restore` (`ip6tables-*` for IPv6), found where upstream looks for them
//! (`/usr/sbin`, then `/sbin`). Cocoon's initrd ships no iptables: then both answer
//! FAILED_PRECONDITION naming the program and the places looked in.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{AgentError, Result};
use crate::reaper::Reaper;

/// Where upstream looks (`src/agent/src/rpc.rs` `USR_IPTABLES_SAVE`, `IPTABLES_SAVE`, ...).
const DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];
/// `iptables-restore --wait` seconds (upstream's `IPTABLES_RESTORE_WAIT_SEC`).
const RESTORE_WAIT_SECS: u64 = 5;
/// How long the agent waits for either program, beyond the lock wait.
const RUN_TIMEOUT: Duration = Duration::from_secs(RESTORE_WAIT_SECS + 10);

fn program(name: &str) -> Result<PathBuf> {
    DIRS.iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let looked: Vec<String> = DIRS.iter().map(|d| format!("{d}/{name}")).collect();
            AgentError::FailedPrecondition(format!(
                "{name} is not in the guest (looked for {}): the guest image has no iptables",
                looked.join(", ")
            ))
        })
}

fn name(ipv6: bool, what: &str) -> String {
    format!("{}-{what}", if ipv6 { "ip6tables" } else { "iptables" })
}

/// Runs `cmd` with `input` on its stdin; answers its stdout. The exit status comes from
/// the agent's [`Reaper`] (it collects every child; nobody else may wait).
pub(crate) async fn run(
    reaper: &Reaper,
    mut cmd: Command,
    input: Option<Vec<u8>>,
) -> Result<Vec<u8>> {
    let shown = format!("{:?}", cmd.get_program());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // Spawned and its pidfd opened with the reaper held off: the child cannot be reaped
    // (and its pid reused) before the pidfd names it.
    let held = reaper.clone();
    let what = shown.clone();
    let spawned = tokio::task::spawn_blocking(move || {
        let _exclusive = held.exclusive();
        let mut child = cmd
            .spawn()
            .map_err(|e| AgentError::internal(&format!("running {what}"), e))?;
        let adopted = i32::try_from(child.id())
            .map_err(|e| AgentError::internal("pid", e))
            .and_then(|pid| {
                held.adopt_watched(pid)
                    .map_err(|e| AgentError::internal("pidfd_open", e))
            });
        match adopted {
            Ok(adopted) => Ok((child, adopted)),
            Err(e) => {
                // Still unreaped (the reaper is held off): the pid is the child's.
                let _ = child.kill();
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| AgentError::internal("iptables", e))?;
    let (mut child, adopted) = spawned?;
    let crate::reaper::Adopted { pidfd, status } = adopted;
    let io = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        use std::io::{Read, Write};
        let stdin = child.stdin.take();
        let writer = std::thread::Builder::new()
            .name("iptables-stdin".into())
            .spawn(move || match (stdin, input) {
                (Some(mut s), Some(data)) => s.write_all(&data),
                _ => Ok(()),
            })?;
        let mut err = Vec::new();
        let stderr = child.stderr.take();
        let err_reader = std::thread::Builder::new()
            .name("iptables-stderr".into())
            .spawn(move || {
                if let Some(mut e) = stderr {
                    let _ = e.read_to_end(&mut err);
                }
                err
            })?;
        let mut out = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_end(&mut out)?;
        }
        let err = err_reader.join().unwrap_or_default();
        // A program that exits without reading all its input is judged by its status.
        let _ = writer.join();
        Ok((out, err))
    });
    let waited = tokio::time::timeout(RUN_TIMEOUT, async {
        let (out, err) = io
            .await
            .map_err(|e| AgentError::internal("iptables", e))?
            .map_err(|e| AgentError::internal(&format!("reading from {shown}"), e))?;
        let code = status
            .await
            .map_err(|e| AgentError::internal(&format!("waiting for {shown}"), e))?;
        Ok::<_, AgentError>((out, err, code))
    })
    .await;
    let (out, err, code) = match waited {
        Ok(r) => r?,
        Err(_) => {
            let _ = pidfd.signal(nix::sys::signal::Signal::SIGKILL);
            return Err(AgentError::DeadlineExceeded(format!(
                "{shown} did not finish within {RUN_TIMEOUT:?}"
            )));
        }
    };
    if code != 0 {
        return Err(AgentError::Internal(format!(
            "{shown} failed (status {code}): {}",
            String::from_utf8_lossy(&err).trim()
        )));
    }
    Ok(out)
}

/// The rules, as `iptables-save` prints them.
pub async fn get(reaper: &Reaper, ipv6: bool) -> Result<Vec<u8>> {
    let prog = program(&name(ipv6, "save"))?;
    run(reaper, Command::new(prog), None).await
}

/// Replaces the rules with `data` (`iptables-restore` input); answers its output.
pub async fn set(reaper: &Reaper, ipv6: bool, data: Vec<u8>) -> Result<Vec<u8>> {
    let prog = program(&name(ipv6, "restore"))?;
    let mut cmd = Command::new(prog);
    cmd.arg("--wait").arg(RESTORE_WAIT_SECS.to_string());
    tracing::info!(ipv6, bytes = data.len(), "SetIPTables: restoring rules");
    run(reaper, cmd, Some(data)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_are_named() {
        let e = program("cocoon-no-such-iptables-save").unwrap_err();
        let text = e.to_string();
        assert_eq!(e.code(), ttrpc::Code::FAILED_PRECONDITION);
        assert!(
            text.contains("/usr/sbin/cocoon-no-such-iptables-save")
                && text.contains("/sbin/cocoon-no-such-iptables-save"),
            "{text}"
        );
        assert_eq!(name(true, "restore"), "ip6tables-restore");
        assert_eq!(name(false, "save"), "iptables-save");
    }
}
