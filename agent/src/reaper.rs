//! Reaps every child the agent inherits or starts, and hands exit statuses to whoever
//! waits for them.
//!
//! As PID 1 every orphan in the guest becomes our child; outside a VM the agent makes
//! itself a child subreaper so container processes still come back to it. On each
//! `SIGCHLD` the reaper collects all zombies with `waitpid(-1, WNOHANG)`. A caller that
//! wants a process's status registers with [`Reaper::watch`]; a status that arrives
//! before anyone asked is kept (bounded) for a later `watch`.
//!
//! Because the reaper collects *any* child, code that must `waitpid` a specific child
//! itself (a runtime library's intermediate process, say) holds [`Reaper::exclusive`]
//! meanwhile, and nobody in the agent uses `tokio::process` child waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How many unclaimed exit statuses are remembered.
const UNCLAIMED_LIMIT: usize = 4096;

/// Exit status as upstream reports it: the exit code, or 128 + signal number.
pub type ExitCode = i32;

#[derive(Default)]
struct State {
    waiters: HashMap<i32, oneshot::Sender<ExitCode>>,
    unclaimed: HashMap<i32, ExitCode>,
    unclaimed_order: VecDeque<i32>,
}

/// A child the agent started: held by its pidfd, its exit status to come.
pub struct Adopted {
    pub pidfd: crate::pidfd::PidFd,
    pub status: oneshot::Receiver<ExitCode>,
}

/// Shared handle to the agent's reaper.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
    exclusive: Arc<Mutex<()>>,
}

impl Reaper {
    /// Starts reaping on `SIGCHLD` in a task of the current tokio runtime. Outside PID 1
    /// also marks the agent as a child subreaper.
    pub fn start(is_init: bool) -> std::io::Result<Reaper> {
        if !is_init {
            // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper::default();
        // Children that exited before the handler was installed (a PID 1 inherits
        // orphans): reaped here, at once. Nothing can hold `exclusive` yet, so this does
        // not wait, and start-up creates no thread for it.
        reaper.reap_all();
        let task = reaper.clone();
        // Reaping may wait for `exclusive` (a container create holds it for milliseconds):
        // do it on a blocking thread so the runtime keeps answering RPCs meanwhile.
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                let reaper = task.clone();
                let _ = tokio::task::spawn_blocking(move || reaper.reap_all()).await;
            }
        });
        Ok(reaper)
    }

    /// A receiver for `pid`'s exit status.
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<ExitCode> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock_state();
        if let Some(code) = state.unclaimed.remove(&pid) {
            state.unclaimed_order.retain(|p| *p != pid);
            let _ = tx.send(code);
        } else {
            state.waiters.insert(pid, tx);
        }
        rx
    }

    /// A pidfd for `pid`, a child just started, and any exit status remembered for an
    /// earlier process that had the same pid dropped (it would otherwise be handed to
    /// this process's [`watch`](Self::watch), reporting it dead while it runs). Call it
    /// with [`exclusive`](Self::exclusive) held, so `pid` cannot have been reaped yet.
    pub fn adopt(&self, pid: i32) -> nix::Result<crate::pidfd::PidFd> {
        let pidfd = crate::pidfd::PidFd::open(pid)?;
        let mut state = self.lock_state();
        if state.unclaimed.remove(&pid).is_some() {
            state.unclaimed_order.retain(|p| *p != pid);
            tracing::debug!(
                pid,
                "dropped a stale exit status of an earlier holder of the pid"
            );
        }
        Ok(pidfd)
    }

    /// [`adopt`](Self::adopt), and `pid`'s exit status watched in the same step (with
    /// [`exclusive`](Self::exclusive) held): the status that comes is this process's,
    /// even if it exits at once and its pid is reused before the caller looks.
    pub fn adopt_watched(&self, pid: i32) -> nix::Result<Adopted> {
        let pidfd = self.adopt(pid)?;
        let status = self.watch(pid);
        Ok(Adopted { pidfd, status })
    }

    /// Holds off the reaper while the caller waits for a specific child itself.
    pub fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.exclusive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Collects every zombie child. Returns how many were reaped.
    pub fn reap_all(&self) -> usize {
        let _exclusive = self.exclusive();
        let mut reaped = 0;
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return reaped;
                }
            };
            reaped += 1;
            tracing::debug!(pid = pid.as_raw(), code, "reaped");
            self.deliver(pid.as_raw(), code);
        }
    }

    fn deliver(&self, pid: i32, code: ExitCode) {
        let mut state = self.lock_state();
        if let Some(tx) = state.waiters.remove(&pid) {
            let _ = tx.send(code);
            return;
        }
        if state.unclaimed_order.len() >= UNCLAIMED_LIMIT {
            if let Some(old) = state.unclaimed_order.pop_front() {
                state.unclaimed.remove(&old);
            }
        }
        state.unclaimed.insert(pid, code);
        state.unclaimed_order.push_back(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// An orphan with pid P exited and nobody claimed its status; later a process the
    /// agent starts gets P. Its watch must wait for its own exit, not get the old status.
    #[test]
    fn a_stale_status_of_the_pid_is_not_the_new_process_s() {
        let reaper = Reaper::default();
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        reaper.deliver(pid, 42); // the earlier holder of the pid
        let pidfd = {
            let _x = reaper.exclusive();
            reaper.adopt(pid).unwrap()
        };
        let mut status = reaper.watch(pid);
        assert!(status.try_recv().is_err(), "the stale status was delivered");
        pidfd.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
        let _ = child.wait();
        reaper.deliver(pid, 128 + 9);
        assert_eq!(status.try_recv().unwrap(), 128 + 9);
    }

    /// The status watched at adoption is the process's own, even when it exits at once
    /// and a later holder of its pid exits before the caller looks.
    #[test]
    fn an_adopted_child_gets_its_own_status() {
        let reaper = Reaper::default();
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let Adopted { pidfd, mut status } = {
            let _x = reaper.exclusive();
            reaper.adopt_watched(pid).unwrap()
        };
        pidfd.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
        let _ = child.wait();
        reaper.deliver(pid, 128 + 9);
        reaper.deliver(pid, 3); // the pid's next holder
        assert_eq!(status.try_recv().unwrap(), 128 + 9);
    }
}
