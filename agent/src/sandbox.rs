//! The pod: where its files live, its containers, and the UTS and IPC namespaces its
//! containers share.
//!
//! Paths follow upstream Kata: bundles under `/run/kata-containers/<cid>/`, files copied
//! by the runtime under `/run/kata-containers/shared/containers/`, sandbox storage under
//! `/run/kata-containers/sandbox/`. `COCOON_RUN_DIR` moves the whole tree (tests run the
//! agent as a plain process on a host), and `COCOON_CGROUP_PARENT` the cgroup subtree.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::fcntl::{open, OFlag};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;

use crate::container::Container;
use crate::error::{AgentError, Result};
use crate::reaper::Reaper;
use crate::storage::Storages;

/// Environment variable that moves `/run/kata-containers` (tests only).
pub const ENV_RUN_DIR: &str = "COCOON_RUN_DIR";
/// Environment variable naming the cgroup subtree for containers (tests only).
pub const ENV_CGROUP_PARENT: &str = "COCOON_CGROUP_PARENT";

const DEFAULT_RUN_DIR: &str = cocoon_protocols::wire::KATA_RUN_DIR;
const DEFAULT_CGROUP_PARENT: &str = "kata_agent";

/// Where the agent keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/run/kata-containers`: one bundle directory per container.
    pub run_dir: PathBuf,
    /// The cgroup directory containers are created under (relative to the hierarchy).
    pub cgroup_parent: String,
    /// `COCOON_CGROUP_PARENT` was given: always use it (tests keep to their subtree).
    pub cgroup_parent_forced: bool,
    /// True when the agent is PID 1 of the guest (DNS goes to /etc/resolv.conf then).
    pub is_init: bool,
}

impl Paths {
    /// From the environment (tests) or upstream's defaults.
    pub fn from_env(is_init: bool) -> Paths {
        let run_dir = std::env::var_os(ENV_RUN_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
        let forced = std::env::var(ENV_CGROUP_PARENT)
            .ok()
            .filter(|p| !p.is_empty());
        Paths {
            run_dir,
            cgroup_parent_forced: forced.is_some(),
            cgroup_parent: forced
                .unwrap_or_else(|| DEFAULT_CGROUP_PARENT.to_string())
                .trim_matches('/')
                .to_string(),
            is_init,
        }
    }

    /// The cgroup of container `cid`: the spec's `cgroupsPath` when it is a plain
    /// absolute path without `..` (the runtime's cgroupfs layout), else
    /// `/<cgroup parent>/<cid>` (also for systemd-style `slice:prefix:name` paths, as
    /// the guest has no systemd).
    pub fn cgroup_path(&self, cid: &str, spec_path: Option<&Path>) -> String {
        let usable = spec_path.and_then(|p| p.to_str()).filter(|p| {
            !self.cgroup_parent_forced
                && p.starts_with('/')
                && p.len() > 1
                && !p.contains(':')
                && !p.split('/').any(|c| c == ".." || c == ".")
        });
        match usable {
            Some(p) => p.trim_end_matches('/').to_string(),
            None => format!("/{}/{cid}", self.cgroup_parent),
        }
    }

    /// `/run/kata-containers/shared/containers`: CopyFile's only destination.
    pub fn shared_dir(&self) -> PathBuf {
        self.run_dir.join("shared").join("containers")
    }

    /// `/run/kata-containers/sandbox`: the pod's own storage.
    pub fn sandbox_dir(&self) -> PathBuf {
        self.run_dir.join("sandbox")
    }

    /// libcontainer's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.run_dir.join(".state")
    }

    /// Console sockets (short paths: a unix socket path has 108 bytes at most).
    pub fn console_dir(&self) -> PathBuf {
        self.run_dir.join(".console")
    }

    pub fn bundle(&self, cid: &str) -> PathBuf {
        self.run_dir.join(cid)
    }
}

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
        std::thread::spawn(move || -> Result<SharedNamespaces> {
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
        .join()
        .map_err(|_| AgentError::Internal("namespace thread panicked".into()))?
    }

    /// A path through which a container's init joins namespace `fd`.
    pub fn path_of(fd: &OwnedFd) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        let mut p = Paths {
            run_dir: PathBuf::from("/run/kata-containers"),
            cgroup_parent: "kata_agent".into(),
            cgroup_parent_forced: false,
            is_init: true,
        };
        let path = |p: &Paths, s: Option<&str>| p.cgroup_path("c1", s.map(Path::new));
        assert_eq!(path(&p, None), "/kata_agent/c1");
        assert_eq!(path(&p, Some("/kubepods/pod1/c1")), "/kubepods/pod1/c1");
        assert_eq!(path(&p, Some("kubepods.slice:cri:c1")), "/kata_agent/c1");
        assert_eq!(path(&p, Some("/a/../../etc")), "/kata_agent/c1");
        assert_eq!(path(&p, Some("relative")), "/kata_agent/c1");
        p.cgroup_parent_forced = true;
        assert_eq!(path(&p, Some("/kubepods/pod1/c1")), "/kata_agent/c1");
    }
}

#[derive(Default)]
pub struct SandboxInfo {
    pub id: String,
    pub hostname: String,
    pub namespaces: Option<Arc<SharedNamespaces>>,
    /// CreateSandbox's `sandbox_pidns`: containers share the first one's PID namespace.
    pub sandbox_pidns: bool,
    /// The container whose PID namespace the others join.
    pub pidns_container: Option<String>,
}

/// Everything the agent knows about the pod.
pub struct Sandbox {
    pub paths: Paths,
    pub reaper: Reaper,
    pub hotplug_timeout: std::time::Duration,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    info: Mutex<SandboxInfo>,
    pub storages: Storages,
    /// Serialises container creation and removal (lookups do not wait for it).
    pub lifecycle: tokio::sync::Mutex<()>,
}

impl Sandbox {
    pub fn new(paths: Paths, reaper: Reaper, hotplug_timeout: std::time::Duration) -> Sandbox {
        Sandbox {
            paths,
            reaper,
            hotplug_timeout,
            containers: Mutex::new(HashMap::new()),
            info: Mutex::new(SandboxInfo::default()),
            storages: Storages::default(),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    fn lock_containers(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn info(&self) -> MutexGuard<'_, SandboxInfo> {
        self.info.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn container(&self, cid: &str) -> Result<Arc<Container>> {
        self.lock_containers()
            .get(cid)
            .cloned()
            .ok_or_else(|| AgentError::not_found("container", cid))
    }

    pub fn contains(&self, cid: &str) -> bool {
        self.lock_containers().contains_key(cid)
    }

    pub fn insert(&self, c: Arc<Container>) {
        self.lock_containers().insert(c.id.clone(), c);
    }

    pub fn remove(&self, cid: &str) -> Option<Arc<Container>> {
        self.lock_containers().remove(cid)
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        self.lock_containers().values().cloned().collect()
    }

    /// Kills and removes every container, releases every storage and the pod's
    /// namespaces (DestroySandbox, and the agent's exit).
    pub async fn destroy_all(&self, timeout: std::time::Duration) -> Result<()> {
        let _life = self.lifecycle.lock().await;
        let mut first_error = None;
        for c in self.all() {
            match c.destroy(&self.reaper, timeout).await {
                Ok(()) => {
                    self.storages.release(&c.storages);
                    crate::container::remove_bundle(&c.bundle);
                    self.remove(&c.id);
                }
                Err(e) => {
                    tracing::error!(container = %c.id, error = %e, "destroying a container");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.storages.release(&self.storages.all());
        *self.info() = SandboxInfo::default();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes the pod's DNS servers to `<sandbox>/resolv.conf` and, in the guest,
    /// bind-mounts it on `/etc/resolv.conf` (as upstream does).
    pub fn setup_dns(&self, dns: &[String]) -> Result<()> {
        if dns.is_empty() {
            return Ok(());
        }
        let dir = self.paths.sandbox_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::internal("creating the sandbox dir", e))?;
        let file = dir.join("resolv.conf");
        let mut text = String::new();
        for line in dns {
            if line.contains('\n') {
                return Err(AgentError::invalid("dns", "an entry holds a newline"));
            }
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&file, text).map_err(|e| AgentError::internal("writing resolv.conf", e))?;
        if self.paths.is_init {
            let target = Path::new("/etc/resolv.conf");
            if std::fs::symlink_metadata(target).is_err() {
                // An initramfs may have none: make the mount point.
                std::fs::create_dir_all("/etc")
                    .and_then(|_| std::fs::write(target, ""))
                    .map_err(|e| AgentError::internal("creating /etc/resolv.conf", e))?;
            }
            bind_mount(&file, target)?;
        }
        Ok(())
    }
}

/// A private bind mount of `src` on `dst`.
pub fn bind_mount(src: &Path, dst: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
        AgentError::internal(
            &format!("bind-mounting {} on {}", src.display(), dst.display()),
            e,
        )
    })?;
    let _ = mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    Ok(())
}
