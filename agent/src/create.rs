//! CreateContainer as one pipeline owned by the sandbox:
//!
//! validate → policy → image → storages → devices → secrets → create → register
//!
//! Each stage that acquires something records it as a [`Held`] in an [`Undo`]; when a
//! later stage fails the undo releases everything in reverse order, so a failed create
//! leaves no bundle, mount, storage reference or secret behind. On success the same list
//! becomes what the container holds, released by RemoveContainer. The RPC handler only
//! turns the wire request into a [`CreateRequest`].

use std::path::PathBuf;
use std::sync::Arc;

use cocoon_protocols::agent::{CreateContainerRequest, Device, Storage};
use oci_spec::runtime::Spec;

use crate::container::{Container, CreateParams};
use crate::error::{AgentError, Result};
use crate::paths::check_id;
use crate::sandbox::{Held, Sandbox};

/// CreateContainer, checked and typed.
pub struct CreateRequest {
    pub id: String,
    pub spec: Spec,
    pub storages: Vec<Storage>,
    pub devices: Vec<Device>,
    pub sandbox_pidns: bool,
    /// The user by name (uid/gid strings), resolved in the container's rootfs.
    pub string_user: Option<cocoon_protocols::agent::StringUser>,
}

impl CreateRequest {
    /// From the wire: the id's alphabet, and the OCI spec converted to `oci-spec`.
    pub fn from_wire(req: CreateContainerRequest) -> Result<CreateRequest> {
        check_id("container_id", &req.container_id)?;
        let wire = req
            .OCI
            .as_ref()
            .ok_or_else(|| AgentError::invalid("OCI", "missing"))?;
        if let Some(profile) = wire
            .Process
            .as_ref()
            .and_then(crate::oci::unapplied_apparmor_profile)
        {
            tracing::info!(
                container = req.container_id,
                "AppArmor profile {profile} not applied: the guest loads no host profiles (as kata-agent)"
            );
        }
        let guest_pull = req
            .storages
            .iter()
            .any(|s| s.driver == cocoon_protocols::wire::DRIVER_IMAGE_GUEST_PULL);
        Ok(CreateRequest {
            spec: crate::oci::to_oci_with(wire, guest_pull)?,
            id: req.container_id,
            storages: req.storages,
            devices: req.devices,
            sandbox_pidns: req.sandbox_pidns,
            string_user: req.string_user.into_option(),
        })
    }
}

/// What the stages so far acquired; released in reverse unless the create succeeds.
struct Undo<'a> {
    sandbox: &'a Sandbox,
    held: Vec<Held>,
}

impl Undo<'_> {
    fn push(&mut self, h: Held) {
        self.held.push(h);
    }

    /// The create succeeded: the container holds these now.
    fn keep(mut self) -> Vec<Held> {
        std::mem::take(&mut self.held)
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.held.is_empty() {
            self.sandbox.release(std::mem::take(&mut self.held));
        }
    }
}

impl Sandbox {
    /// Runs the CreateContainer pipeline.
    pub async fn create_container(self: &Arc<Self>, req: CreateRequest) -> Result<()> {
        let CreateRequest {
            id,
            mut spec,
            storages,
            devices,
            sandbox_pidns,
            string_user,
        } = req;
        let _life = self.lifecycle.lock().await;

        // validate
        if self.contains(&id) {
            return Err(AgentError::AlreadyExists {
                what: "container",
                id,
            });
        }
        let bundle = self.paths.bundle(&id);
        let mut undo = Undo {
            sandbox: self,
            held: vec![Held::Bundle(bundle.clone())],
        };

        // policy: the agent policy stage plugs in here.

        // image: a guest-pulled image (or the pause bundle) becomes the rootfs
        let mut storages = storages;
        if let Some(image) = crate::image::Images::take_storage(&mut storages)? {
            let rootfs = self.images.prepare(&id, &bundle, &image, &mut spec).await?;
            undo.push(Held::ImageRootfs(rootfs));
        }

        // storages
        let mount_points = self.add_storages(storages).await?;
        undo.push(Held::Storages(mount_points));

        // bind sources in the agent's directory: no symlink on the way
        crate::safe_path::check_bind_sources(&spec, &self.paths.run_dir)?;

        // users by name, in the container's own /etc/passwd and /etc/group
        crate::users::apply_names(&mut spec, &bundle, string_user.as_ref())?;

        // devices
        if !devices.is_empty() {
            let timeout = self.hotplug_timeout;
            spec = tokio::task::spawn_blocking(move || {
                crate::devices::apply(&mut spec, &devices, timeout).map(|()| spec)
            })
            .await
            .map_err(|e| AgentError::internal("devices", e))??;
        }

        // secrets
        if self.secrets.needed(&spec, &self.paths.shared_dir()) {
            let sb = self.clone();
            let dir = bundle.join(crate::secrets::TMPFS_DIR);
            let (s, tmpfs) = tokio::task::spawn_blocking(move || {
                let mut spec = spec;
                let tmpfs = sb.secrets.inject(&mut spec, &sb.paths.shared_dir(), &dir)?;
                Ok::<_, AgentError>((spec, tmpfs))
            })
            .await
            .map_err(|e| AgentError::internal("secrets", e))??;
            spec = s;
            if let Some(dir) = tmpfs {
                undo.push(Held::SecretsTmpfs(dir));
            }
        }

        // create
        let (shared_ns, share_pidns, owner) = {
            let info = self.info();
            (
                info.namespaces.clone(),
                info.sandbox_pidns || sandbox_pidns,
                info.pidns_container.clone(),
            )
        };
        // The first container's PID namespace, held open: a `/proc/<pid>/ns/pid` path
        // would be resolved later, when the pid may be another process's.
        let pid_ns_fd = match owner.and_then(|id| self.container(&id).ok()) {
            Some(first) if share_pidns && first.init.exit_code().is_none() => {
                pid_namespace_of(&first.init)
            }
            _ => None,
        };
        let params = CreateParams {
            id,
            spec,
            shared_ns,
            pid_ns: pid_ns_fd
                .as_ref()
                .map(|fd| PathBuf::from(crate::namespaces::SharedNamespaces::path_of(fd))),
        };
        let c = Container::create(&self.paths, &self.reaper, params).await;
        drop(pid_ns_fd);
        let c = c?;

        // register
        if share_pidns {
            let mut info = self.info();
            if info.pidns_container.is_none() {
                info.pidns_container = Some(c.id.clone());
            }
        }
        self.register(Arc::new(c), undo.keep());
        Ok(())
    }
}

/// An open descriptor of `p`'s PID namespace, if `p` is still there: the pidfd, checked
/// after the open, tells the namespace was `p`'s and not a newer holder of its pid.
fn pid_namespace_of(p: &crate::process::Process) -> Option<std::os::fd::OwnedFd> {
    let file = std::fs::File::open(format!("/proc/{}/ns/pid", p.pid)).ok()?;
    p.pidfd()
        .is_alive()
        .then(|| std::os::fd::OwnedFd::from(file))
}
