//! The pod's shared UTS and IPC namespaces, made once by CreateSandbox and joined by
//! every container.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;

use crate::error::{AgentError, Result};

/// The pod's shared namespaces, kept alive by open descriptors.
pub struct SharedNamespaces {
    pub uts: OwnedFd,
    pub ipc: OwnedFd,
}

impl SharedNamespaces {
    /// New UTS and IPC namespaces with `hostname`, made in a short-lived thread so the
    /// agent's own namespaces (the host's, in tests) are untouched.
    pub fn create(hostname: &str) -> Result<SharedNamespaces> {
        let hostname = hostname.to_string();
        std::thread::Builder::new()
            .name("pod-namespaces".into())
            .spawn(move || -> Result<SharedNamespaces> {
                let err = |step: &str, e: nix::Error| AgentError::internal(step, e);
                unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
                    .map_err(|e| err("unsharing UTS and IPC namespaces", e))?;
                if !hostname.is_empty() {
                    nix::unistd::sethostname(&hostname).map_err(|e| err("sethostname", e))?;
                }
                let ns = |name: &str| {
                    open(
                        format!("/proc/thread-self/ns/{name}").as_str(),
                        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map(|fd| {
                        // SAFETY: `open` just returned this descriptor; we are its only owner.
                        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
                    })
                    .map_err(|e| err("opening a namespace", e))
                };
                Ok(SharedNamespaces {
                    uts: ns("uts")?,
                    ipc: ns("ipc")?,
                })
            })
            .map_err(|e| AgentError::internal("starting the namespace thread", e))?
            .join()
            .map_err(|_| AgentError::Internal("namespace thread panicked".into()))?
    }

    /// A path through which a container's init joins namespace `fd`.
    pub fn path_of(fd: &OwnedFd) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
    }
}
