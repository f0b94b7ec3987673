//! The debug console (`agent.debug_console`): a shell for developers on vsock port
//! `agent.debug_console_vport`, as upstream's (`src/agent/src/console.rs`): each
//! connection gets the first of `/bin/bash`, `/bin/sh` that exists, on a new pty, in a
//! new session, with the agent's privileges; bytes are copied both ways until either
//! side ends (the shell is sent SIGHUP when the connection goes).
//!
//! Differences from upstream:
//! - `agent.debug_console_vport=0` (the default) means the wire's port 1026
//!   ([`cocoon_protocols::wire::DEBUG_CONSOLE_VSOCK_PORT`]): upstream then runs the shell
//!   on the serial console, which the host reads too. The Go runtime passes 1026.
//! - **When a TEE was detected** (or the confidential mode is forced), a connection is
//!   refused — a line saying so is written, the connection closed, the refusal logged —
//!   unless the policy in force allows `DebugConsoleRequest` (an agent-policy rule of
//!   ours, input `{}`; the confidential default has none, so it is denied). It is asked
//!   per connection, so a SetPolicy can open or close it later.
//! - `COCOON_DEBUG_CONSOLE_ADDR` (tests only, like `COCOON_RUN_DIR`) replaces the vsock
//!   port with any address the server accepts (`unix:///path`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::socket::{self, Shutdown, SockFlag};

use crate::config::ServerAddr;
use crate::policy::Policy;
use crate::reaper::Reaper;

/// Test-only: where the console listens instead of the vsock port.
pub const ENV_ADDR: &str = "COCOON_DEBUG_CONSOLE_ADDR";
/// The policy rule that lets a confidential guest open the console.
pub const POLICY_RULE: &str = "DebugConsoleRequest";
/// Upstream's shells, in its order (without its devkit extension's).
pub const SHELLS: [&str; 2] = ["/bin/bash", "/bin/sh"];
/// What a refused connection reads.
pub const REFUSED: &str =
    "debug console refused: a TEE was detected and the agent policy does not allow DebugConsoleRequest\n";

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("no shell for the debug console (looked for {0})")]
    NoShell(String),
    #[error("{ENV_ADDR}: {0}")]
    Addr(String),
    #[error("debug console: cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("debug console: {0}")]
    Thread(std::io::Error),
}

struct Console {
    shell: PathBuf,
    tee: bool,
    policy: Arc<Policy>,
    reaper: Reaper,
}

/// The address: `COCOON_DEBUG_CONSOLE_ADDR`, else vsock port `vport` (0: 1026).
pub fn address(vport: u32) -> Result<ServerAddr, ConsoleError> {
    if let Some(a) = std::env::var_os(ENV_ADDR) {
        return a
            .to_string_lossy()
            .parse::<ServerAddr>()
            .map_err(|e| ConsoleError::Addr(e.to_string()));
    }
    let port = if vport == 0 {
        cocoon_protocols::wire::DEBUG_CONSOLE_VSOCK_PORT
    } else {
        vport
    };
    Ok(ServerAddr::Vsock { cid: None, port })
}

/// The console's socket, bound and listening the way the ttrpc server's is.
fn listen(addr: &ServerAddr) -> Result<OwnedFd, ConsoleError> {
    crate::server::listen(addr)
        .map(crate::server::Listening::into_fd)
        .map_err(|e| ConsoleError::Listen {
            addr: addr.uri(),
            reason: e.to_string(),
        })
}

/// [`start`] from the agent's configuration and attestation probe; a console that
/// cannot start is logged, never fatal.
pub fn start_from(
    config: &crate::config::AgentConfig,
    probe: &cocoon_attester::Probe,
    policy: &Arc<Policy>,
    reaper: &Reaper,
) {
    let tee = crate::policy::is_confidential(probe, crate::policy::forced_confidential());
    let started = start(
        config.debug_console,
        config.debug_console_vport,
        tee,
        policy.clone(),
        reaper.clone(),
    );
    if let Err(e) = started {
        tracing::error!(error = %e, "debug console not started");
    }
}

/// Starts the console when `agent.debug_console` is set: binds, then accepts on a
/// thread of its own. `tee`: a TEE was detected (or the confidential mode forced).
pub fn start(
    enabled: bool,
    vport: u32,
    tee: bool,
    policy: Arc<Policy>,
    reaper: Reaper,
) -> Result<(), ConsoleError> {
    if !enabled {
        return Ok(());
    }
    let shell = SHELLS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| ConsoleError::NoShell(SHELLS.join(", ")))?;
    let addr = address(vport)?;
    let fd = listen(&addr)?;
    if tee {
        tracing::warn!(addr = %addr.uri(), "debug console listening in a TEE: each connection is refused unless the agent policy allows {POLICY_RULE}");
    } else {
        tracing::info!(addr = %addr.uri(), shell = %shell.display(), "debug console listening");
    }
    let console = Arc::new(Console {
        shell,
        tee,
        policy,
        reaper,
    });
    std::thread::Builder::new()
        .name("debug-console".into())
        .spawn(move || accept_loop(&console, &fd))
        .map_err(ConsoleError::Thread)?;
    Ok(())
}

fn accept_loop(console: &Arc<Console>, listener: &OwnedFd) {
    loop {
        let conn = match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
            Err(e) => {
                tracing::error!(error = %e, "debug console: accept failed; the console stops");
                return;
            }
        };
        if console.tee {
            if let Err(denied) = console
                .policy
                .check_input(POLICY_RULE, serde_json::json!({}))
            {
                tracing::warn!(reason = %denied, "debug console connection refused: a TEE was detected and the policy does not allow {POLICY_RULE}");
                let mut f = File::from(conn);
                let _ = f.write_all(REFUSED.as_bytes());
                continue;
            }
            tracing::warn!("debug console opened in a TEE: the agent policy allows {POLICY_RULE}");
        }
        let c = console.clone();
        let spawned = std::thread::Builder::new()
            .name("debug-console-session".into())
            .spawn(move || {
                if let Err(e) = session(&c, conn) {
                    tracing::warn!(error = %e, "debug console session failed");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "debug console: no thread for the session");
        }
    }
}

fn cloexec(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(|_| ())
}

/// One shell on a new pty, copied to and from the connection.
fn session(console: &Console, conn: OwnedFd) -> std::io::Result<()> {
    let pty = nix::pty::openpty(None, None)?;
    cloexec(&pty.master)?;
    cloexec(&pty.slave)?;
    let (shell, pidfd) = spawn_shell(console, &console.shell, &pty.slave)?;
    drop(pty.slave);
    tracing::info!(pid = pidfd.pid(), shell = %shell.display(), "debug console session started");
    let exited = console.reaper.watch(pidfd.pid());
    let mut from_master = File::from(pty.master);
    let mut to_master = from_master.try_clone()?;
    let mut sock_in = File::from(conn);
    let mut sock_out = sock_in.try_clone()?;
    let sock_fd = sock_in.try_clone()?;
    // Shell → connection, until the shell side closes (EIO once every slave is gone).
    let out = std::thread::Builder::new()
        .name("debug-console-out".into())
        .spawn(move || {
            let _ = copy(&mut from_master, &mut sock_out);
            // Wake the reader below: the connection is done.
            let _ = socket::shutdown(sock_fd.as_raw_fd(), Shutdown::Both);
        })?;
    // Connection → shell, until the client goes.
    let _ = copy(&mut sock_in, &mut to_master);
    // The client went (or the shell did): hang the shell up. Through the pidfd: never
    // another process that got the pid.
    let _ = pidfd.signal(nix::sys::signal::Signal::SIGHUP);
    let _ = pidfd.signal(nix::sys::signal::Signal::SIGKILL);
    drop(to_master);
    let _ = out.join();
    let code = exited.blocking_recv().ok();
    tracing::info!(pid = pidfd.pid(), code, "debug console session ended");
    Ok(())
}

fn copy(from: &mut File, to: &mut File) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The pty master reads EIO once the shell side is closed.
            Err(e) => return Err(e),
        };
        to.write_all(buf.get(..n).unwrap_or_default())?;
    }
}

fn spawn_shell(
    console: &Console,
    shell: &Path,
    slave: &OwnedFd,
) -> std::io::Result<(PathBuf, crate::pidfd::PidFd)> {
    let stdio = || slave.try_clone().map(Stdio::from);
    let mut cmd = Command::new(shell);
    cmd.arg("-i")
        .stdin(stdio()?)
        .stdout(stdio()?)
        .stderr(stdio()?)
        .env("TERM", "vt100");
    // SAFETY: between fork and exec only async-signal-safe calls: setsid(2) and
    // ioctl(2) on the child's own stdin (the pty slave), no allocation.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Spawned and its pidfd taken with the reaper held off: the pid is the shell's.
    let _exclusive = console.reaper.exclusive();
    let mut child = cmd.spawn()?;
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    match console.reaper.adopt(pid) {
        Ok(pidfd) => Ok((shell.to_path_buf(), pidfd)),
        Err(e) => {
            let _ = child.kill();
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_the_wires_port() {
        if std::env::var_os(ENV_ADDR).is_some() {
            return;
        }
        assert_eq!(
            address(0).unwrap(),
            ServerAddr::Vsock {
                cid: None,
                port: 1026
            }
        );
        assert_eq!(
            address(2000).unwrap(),
            ServerAddr::Vsock {
                cid: None,
                port: 2000
            }
        );
    }
}
