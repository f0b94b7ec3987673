//! The pod: its state (containers, shared namespaces, storages) and its lifecycle.
//!
//! The sandbox owns every operation that changes the pod: CreateSandbox, CreateContainer
//! (the stage pipeline in [`crate::create`]), RemoveContainer and DestroySandbox. What a
//! container holds beyond its libcontainer state — its bundle directory, its storages,
//! its secrets tmpfs — is recorded as [`Held`] resources, released in reverse order when
//! a create fails half-way or the container is removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cocoon_protocols::agent::Storage;

use crate::container::Container;
use crate::error::{AgentError, Result};
use crate::namespaces::SharedNamespaces;
use crate::paths::{check_id, Paths};
use crate::reaper::Reaper;
use crate::secrets::Secrets;
use crate::storage::Storages;

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

/// The longest RemoveContainer waits for a killed container to go (the request's
/// timeout is a `u32` of seconds chosen by the host).
pub const MAX_REMOVE_TIMEOUT: Duration = Duration::from_secs(300);

/// RemoveContainer's `timeout`, at most [`MAX_REMOVE_TIMEOUT`] (with a warning).
fn bounded_remove_timeout(cid: &str, timeout: Duration) -> Duration {
    if timeout <= MAX_REMOVE_TIMEOUT {
        return timeout;
    }
    tracing::warn!(
        container = cid,
        requested_s = timeout.as_secs(),
        max_s = MAX_REMOVE_TIMEOUT.as_secs(),
        "RemoveContainer timeout above the maximum; clamped"
    );
    MAX_REMOVE_TIMEOUT
}

/// CreateSandbox, checked and typed.
pub struct SandboxRequest {
    pub id: String,
    pub hostname: String,
    pub dns: Vec<String>,
    pub storages: Vec<Storage>,
    pub sandbox_pidns: bool,
}

/// Something a container holds outside libcontainer, released when it goes.
#[derive(Debug)]
pub enum Held {
    /// `/run/kata-containers/<cid>`: removed (never recursing into a mounted rootfs).
    Bundle(PathBuf),
    /// References to storage mount points.
    Storages(Vec<PathBuf>),
    /// The container's dedicated secrets tmpfs: unmounted, its directory removed.
    SecretsTmpfs(PathBuf),
    /// A guest-pulled image's overlay (or the pause bundle) on the bundle's rootfs.
    ImageRootfs(crate::image::ImageRootfs),
}

/// A registered container and what it holds.
struct Registered {
    container: Arc<Container>,
    held: Vec<Held>,
}

/// Everything the agent knows about the pod.
pub struct Sandbox {
    pub paths: Paths,
    pub reaper: Reaper,
    pub hotplug_timeout: Duration,
    containers: Mutex<HashMap<String, Registered>>,
    info: Mutex<SandboxInfo>,
    pub storages: Storages,
    /// Unsealing of sealed secrets (env values and secret volumes).
    pub secrets: Secrets,
    /// Guest image pull (`image_guest_pull` storages).
    pub images: crate::image::Images,
    /// Serialises container creation and removal (lookups do not wait for it).
    pub lifecycle: tokio::sync::Mutex<()>,
}

impl Sandbox {
    pub fn new(
        paths: Paths,
        reaper: Reaper,
        hotplug_timeout: Duration,
        secrets: Secrets,
        images: crate::image::Images,
    ) -> Sandbox {
        Sandbox {
            paths,
            reaper,
            hotplug_timeout,
            containers: Mutex::new(HashMap::new()),
            info: Mutex::new(SandboxInfo::default()),
            storages: Storages::default(),
            secrets,
            images,
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    fn lock_containers(&self) -> MutexGuard<'_, HashMap<String, Registered>> {
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
            .map(|r| r.container.clone())
            .ok_or_else(|| AgentError::not_found("container", cid))
    }

    pub fn contains(&self, cid: &str) -> bool {
        self.lock_containers().contains_key(cid)
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        self.lock_containers()
            .values()
            .map(|r| r.container.clone())
            .collect()
    }

    /// Records a created container with what it holds (the last stage of create).
    pub(crate) fn register(&self, c: Arc<Container>, held: Vec<Held>) {
        self.lock_containers()
            .insert(c.id.clone(), Registered { container: c, held });
    }

    /// Releases held resources, last acquired first.
    pub(crate) fn release(&self, held: Vec<Held>) {
        for h in held.into_iter().rev() {
            match h {
                Held::Bundle(dir) => crate::mounts::remove_bundle(&dir),
                Held::Storages(mps) => self.storages.release(&mps),
                Held::SecretsTmpfs(dir) => crate::secrets::unmount(&dir),
                Held::ImageRootfs(rootfs) => crate::image::release(&rootfs),
            }
        }
    }

    /// Sets storages up on a blocking thread (a block device may take
    /// `agent.hotplug_timeout` to appear). Returns their mount points.
    pub(crate) async fn add_storages(self: &Arc<Self>, list: Vec<Storage>) -> Result<Vec<PathBuf>> {
        if list.is_empty() {
            return Ok(Vec::new());
        }
        let sb = self.clone();
        tokio::task::spawn_blocking(move || {
            sb.storages
                .add(&list, &sb.paths.run_dir, sb.hotplug_timeout)
        })
        .await
        .map_err(|e| AgentError::internal("storages", e))?
    }

    /// CreateSandbox: the pod's storages, its shared UTS/IPC namespaces, its DNS.
    pub async fn create_sandbox(self: &Arc<Self>, req: SandboxRequest) -> Result<()> {
        if !req.id.is_empty() {
            check_id("sandbox_id", &req.id)?;
        }
        if req.hostname.len() > 64 {
            return Err(AgentError::invalid("hostname", "longer than 64 bytes"));
        }
        let _life = self.lifecycle.lock().await;
        if self.info().namespaces.is_some() {
            return Err(AgentError::AlreadyExists {
                what: "sandbox",
                id: self.info().id.clone(),
            });
        }
        let storages = self.add_storages(req.storages).await?;
        let hostname = req.hostname.clone();
        let ns = tokio::task::spawn_blocking(move || SharedNamespaces::create(&hostname))
            .await
            .map_err(|e| AgentError::internal("namespaces", e))?;
        let ns = match ns.and_then(|ns| self.setup_dns(&req.dns).map(|_| ns)) {
            Ok(ns) => ns,
            Err(e) => {
                self.storages.release(&storages);
                return Err(e);
            }
        };
        let mut info = self.info();
        info.id = req.id;
        info.hostname = req.hostname;
        info.namespaces = Some(Arc::new(ns));
        info.sandbox_pidns = req.sandbox_pidns;
        Ok(())
    }

    /// RemoveContainer: stops the container (within `timeout`), then releases what it
    /// held. A container that does not stop in time stays registered.
    /// The wait is bounded by [`MAX_REMOVE_TIMEOUT`]: the request's `timeout` is the
    /// host's, and the wait holds the pod's lifecycle lock.
    pub async fn remove_container(&self, cid: &str, timeout: Duration) -> Result<()> {
        let timeout = bounded_remove_timeout(cid, timeout);
        let _life = self.lifecycle.lock().await;
        self.remove_locked(cid, timeout).await
    }

    async fn remove_locked(&self, cid: &str, timeout: Duration) -> Result<()> {
        let c = self.container(cid)?;
        c.destroy(&self.reaper, timeout).await?;
        if let Some(r) = self.lock_containers().remove(cid) {
            self.release(r.held);
        }
        Ok(())
    }

    /// Kills and removes every container, releases every storage and the pod's
    /// namespaces (DestroySandbox, and the agent's exit).
    pub async fn destroy_all(&self, timeout: Duration) -> Result<()> {
        let _life = self.lifecycle.lock().await;
        let mut first_error = None;
        for c in self.all() {
            if let Err(e) = self.remove_locked(&c.id, timeout).await {
                tracing::error!(container = %c.id, error = %e, "destroying a container");
                first_error.get_or_insert(e);
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
            crate::mounts::bind_mount(&file, target)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_timeouts_are_bounded() {
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(bounded_remove_timeout("c", secs(10)), secs(10));
        assert_eq!(
            bounded_remove_timeout("c", MAX_REMOVE_TIMEOUT),
            MAX_REMOVE_TIMEOUT
        );
        // The wire's u32::MAX seconds (136 years of holding the lifecycle lock).
        assert_eq!(
            bounded_remove_timeout("c", secs(u32::MAX.into())),
            MAX_REMOVE_TIMEOUT
        );
    }
}
