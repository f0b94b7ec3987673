//! A process the agent started in a container (its init or an exec): its pidfd (signals
//! go through it, never through the bare pid), its streams, and its exit status (from
//! the [`Reaper`](crate::reaper::Reaper)).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::error::{AgentError, Result};
use crate::pidfd::PidFd;
use crate::reaper::{Adopted, ExitCode};
use crate::streams::{FdStream, StdioPipes};

/// The agent's side of a process's standard streams.
pub enum AgentStdio {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal: one pty master for input and output.
    Tty(OwnedFd),
}

impl AgentStdio {
    pub fn from_pipes(p: StdioPipes) -> (AgentStdio, [OwnedFd; 3]) {
        (
            AgentStdio::Pipes {
                stdin: p.stdin,
                stdout: p.stdout,
                stderr: p.stderr,
            },
            [p.child_stdin, p.child_stdout, p.child_stderr],
        )
    }
}

pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    /// Opened before the process could be reaped, kept until it is forgotten.
    pidfd: PidFd,
    stdin: Mutex<Option<Arc<FdStream>>>,
    stdout: Option<Arc<FdStream>>,
    stderr: Option<Arc<FdStream>>,
    tty: Option<Arc<FdStream>>,
    exit: watch::Receiver<Option<ExitCode>>,
    /// WaitProcess answered, stdout and stderr read to EOF: an exec can be forgotten.
    waited: AtomicBool,
    stdout_eof: AtomicBool,
    stderr_eof: AtomicBool,
}

impl Process {
    /// Wraps a started process, adopted from the reaper ([`Reaper::adopt_watched`]): held
    /// by its pidfd, its exit status from the reaper. Must run inside the tokio runtime.
    pub fn new(exec_id: &str, child: Adopted, stdio: AgentStdio) -> Result<Process> {
        let Adopted { pidfd, status } = child;
        let pid = pidfd.pid();
        let stream = |fd| {
            FdStream::new(fd)
                .map(Arc::new)
                .map_err(|e| AgentError::internal("registering a process stream", e))
        };
        let (stdin, stdout, stderr, tty) = match stdio {
            AgentStdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                Some(stream(stdin)?),
                Some(stream(stdout)?),
                Some(stream(stderr)?),
                None,
            ),
            AgentStdio::Tty(master) => {
                let master = stream(master)?;
                (
                    Some(master.clone()),
                    Some(master.clone()),
                    None,
                    Some(master),
                )
            }
        };
        let (no_stdout, no_stderr) = (stdout.is_none(), stderr.is_none());
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            // A dropped sender means the reaper is gone: report a kill.
            let code = status.await.unwrap_or(128 + libc::SIGKILL);
            let _ = tx.send(Some(code));
        });
        Ok(Process {
            exec_id: exec_id.to_string(),
            pid,
            pidfd,
            stdin: Mutex::new(stdin),
            stdout,
            stderr,
            waited: AtomicBool::new(false),
            stdout_eof: AtomicBool::new(no_stdout),
            stderr_eof: AtomicBool::new(no_stderr),
            tty,
            exit,
        })
    }

    /// Sends `signal` through the pidfd: `ESRCH` once the process has exited and been
    /// reaped, whoever has its pid now.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> nix::Result<()> {
        self.pidfd.signal(signal)
    }

    /// The pidfd, to check a `/proc/<pid>` read was about this process.
    pub fn pidfd(&self) -> &PidFd {
        &self.pidfd
    }

    pub fn mark_waited(&self) {
        self.waited.store(true, Ordering::SeqCst);
    }

    pub fn mark_eof(&self, stderr: bool) {
        let flag = if stderr {
            &self.stderr_eof
        } else {
            &self.stdout_eof
        };
        flag.store(true, Ordering::SeqCst);
    }

    /// Waited for, and all its output delivered: nothing more to ask about it.
    pub fn finished(&self) -> bool {
        self.waited.load(Ordering::SeqCst)
            && self.stdout_eof.load(Ordering::SeqCst)
            && self.stderr_eof.load(Ordering::SeqCst)
    }

    /// The exit status, once the process has exited.
    pub fn exit_code(&self) -> Option<ExitCode> {
        *self.exit.borrow()
    }

    /// Waits for the process to exit; its exit code, or 128 + signal.
    pub async fn wait(&self) -> ExitCode {
        let mut rx = self.exit.clone();
        let code = rx.wait_for(Option::is_some).await.map(|c| *c);
        code.ok().flatten().unwrap_or(128 + libc::SIGKILL)
    }

    pub fn stdin(&self) -> Option<Arc<FdStream>> {
        self.stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops our write end (a pipe then reads EOF in the process).
    pub fn close_stdin(&self) {
        self.stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    pub fn stdout(&self) -> Option<Arc<FdStream>> {
        self.stdout.clone()
    }

    pub fn stderr(&self) -> Option<Arc<FdStream>> {
        self.stderr.clone()
    }

    pub fn tty(&self) -> Option<Arc<FdStream>> {
        self.tty.clone()
    }
}
