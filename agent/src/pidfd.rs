//! Processes named by a pidfd rather than a pid.
//!
//! A pid is only a number: once its process has been reaped the kernel may hand it to
//! another process, and a `kill(pid)` then reaches a stranger (another container's
//! process, or the agent's own helpers). A pidfd names one process for as long as the
//! descriptor is open: after that process is reaped, `pidfd_send_signal` fails with
//! `ESRCH` whoever got the number since. The agent opens one for each process it starts
//! while the reaper is held off ([`crate::reaper::Reaper::exclusive`]), so the process
//! cannot have been reaped yet, and keeps it until the process is forgotten.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// A process, held by a pidfd.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// A pidfd for `pid`. Call it while `pid` cannot have been reaped (the agent's child,
    /// with the reaper held off), or it may name whoever has the number now.
    pub fn open(pid: i32) -> nix::Result<PidFd> {
        if pid <= 0 {
            return Err(Errno::EINVAL);
        }
        // SAFETY: pidfd_open takes a pid and a flags word, no pointers; it returns a new
        // descriptor or -1 with errno.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(Errno::result(fd)?).map_err(|_| Errno::EBADF)?;
        // SAFETY: the kernel just returned this descriptor (close-on-exec); nothing else
        // owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PidFd { fd, pid })
    }

    /// The pid the process had when the pidfd was opened (for logs and `/proc`).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to the process; `ESRCH` once it has exited.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        self.send(signal as libc::c_int)
    }

    /// Whether the process is still there (not yet exited and reaped; a zombie counts).
    /// A `/proc/<pid>` read followed by a `true` here was about this process.
    pub fn is_alive(&self) -> bool {
        self.send(0).is_ok()
    }

    fn send(&self, signal: libc::c_int) -> nix::Result<()> {
        // SAFETY: pidfd_send_signal takes our open pidfd, a signal number, a null siginfo
        // (the kernel then fills one in as for kill(2)) and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        Errno::result(r).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn signals_reach_the_live_process() {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pidfd = PidFd::open(i32::try_from(child.id()).unwrap()).unwrap();
        assert!(pidfd.is_alive());
        pidfd.signal(Signal::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn after_reaping_a_signal_reaches_no_one() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pidfd = PidFd::open(pid).unwrap();
        // Exited but not reaped: a zombie is still this process.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(pidfd.is_alive());
        assert!(child.wait().unwrap().success());
        // Reaped: the pid is free for anyone, the pidfd still names the dead process.
        assert!(!pidfd.is_alive());
        assert_eq!(pidfd.signal(Signal::SIGKILL), Err(Errno::ESRCH));
        assert_eq!(pidfd.signal(Signal::SIGTERM), Err(Errno::ESRCH));
    }

    #[test]
    fn no_pid_opens_nothing() {
        assert_eq!(PidFd::open(0).unwrap_err(), Errno::EINVAL);
        assert_eq!(PidFd::open(-1).unwrap_err(), Errno::EINVAL);
    }

    /// Every signal the agent sends to one process goes through a pidfd: no raw
    /// `kill(pid)` is left in the agent's sources.
    #[test]
    fn no_raw_kill_in_the_agent() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if [
                        concat!("signal::", "kill("),
                        concat!("libc::", "kill("),
                        concat!("kill", "pg("),
                    ]
                    .iter()
                    .any(|k| code.contains(k))
                    {
                        offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "raw kills: {offenders:#?}");
    }
}
