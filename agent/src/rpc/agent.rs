//! `grpc.AgentService`: every one of the 42 methods, each checked by the policy first.
//! (A method left out would answer `UNIMPLEMENTED` with its name: the generated
//! default, see `cocoon-protocols`' build script.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use cocoon_protocols::agent::{
    AddARPNeighborsRequest, Interfaces, ListInterfacesRequest, ListRoutesRequest, Routes,
    UpdateInterfaceRequest, UpdateRoutesRequest,
};
use cocoon_protocols::agent::{
    AddSwapPathRequest, AddSwapRequest, GetDiagnosticDataRequest, GetDiagnosticDataResponse,
    GetIPTablesRequest, GetIPTablesResponse, MemAgentCompactConfig, MemAgentMemcgConfig,
    MemHotplugByProbeRequest, OnlineCPUMemRequest, RemoveStaleVirtiofsShareMountsRequest,
    ReseedRandomDevRequest, ResizeVolumeRequest, SetGuestDateTimeRequest, SetIPTablesRequest,
    SetIPTablesResponse, SetPolicyRequest, UpdateEphemeralMountsRequest, VolumeStatsRequest,
};
use cocoon_protocols::agent::{
    AgentDetails, CloseStdinRequest, CopyFileRequest, CreateContainerRequest, CreateSandboxRequest,
    DestroySandboxRequest, ExecProcessRequest, GetMetricsRequest, GetOOMEventRequest,
    GuestDetailsRequest, GuestDetailsResponse, Metrics, OOMEvent, PauseContainerRequest,
    ReadStreamRequest, ReadStreamResponse, RemoveContainerRequest, ResumeContainerRequest,
    SignalProcessRequest, StartContainerRequest, StatsContainerRequest, StatsContainerResponse,
    TtyWinResizeRequest, UpdateContainerRequest, WaitProcessRequest, WaitProcessResponse,
    WriteStreamRequest, WriteStreamResponse,
};
use cocoon_protocols::agent_ttrpc::AgentService;
use cocoon_protocols::types::Interface;
use protobuf::well_known_types::empty::Empty;
use tokio::sync::Notify;
use ttrpc::r#async::TtrpcContext;

use crate::container::Container;
use crate::create::CreateRequest;
use crate::error::{AgentError, Result};
use crate::kbs::Kbs;
use crate::paths::check_id;
use crate::policy::Policy;
use crate::sandbox::{Sandbox, SandboxRequest};
use crate::streams::set_winsize;

/// How long DestroySandbox waits for each container to stop.
pub const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often GetOOMEvent looks at the containers' OOM counters.
const OOM_POLL: Duration = Duration::from_millis(100);
/// RemoveContainer's wait when the request gives no timeout.
const REMOVE_DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// sysfs files GetGuestDetails reads.
const MEM_BLOCK_SIZE: &str = "/sys/devices/system/memory/block_size_bytes";
const MEM_HOTPLUG_PROBE: &str = "/sys/devices/system/memory/probe";

/// What the agent knows about itself, reported by GetGuestDetails.
#[derive(Clone, Debug, Default)]
pub struct GuestInfo {
    pub init_daemon: bool,
    pub extra_features: Vec<String>,
}

pub struct AgentRpc {
    info: GuestInfo,
    /// The agent policy: every request is checked by it before it acts.
    policy: Arc<Policy>,
    /// Notified when DestroySandbox asks the agent to end.
    shutdown: Arc<Notify>,
    sandbox: Arc<Sandbox>,
    kbs: Kbs,
}

impl AgentRpc {
    pub fn new(
        info: GuestInfo,
        policy: Arc<Policy>,
        shutdown: Arc<Notify>,
        sandbox: Arc<Sandbox>,
        kbs: Kbs,
    ) -> Self {
        AgentRpc {
            info,
            policy,
            shutdown,
            sandbox,
            kbs,
        }
    }

    async fn do_create_sandbox(&self, req: CreateSandboxRequest) -> Result<()> {
        let req = SandboxRequest {
            id: req.sandbox_id,
            hostname: req.hostname,
            dns: req.dns,
            storages: req.storages,
            sandbox_pidns: req.sandbox_pidns,
        };
        self.sandbox.create_sandbox(req).await
    }

    async fn do_create_container(&self, req: CreateContainerRequest) -> Result<()> {
        let req = CreateRequest::from_wire(req)?;
        self.sandbox.create_container(req).await
    }

    async fn do_remove_container(&self, req: RemoveContainerRequest) -> Result<()> {
        let timeout = if req.timeout == 0 {
            REMOVE_DEFAULT_TIMEOUT
        } else {
            Duration::from_secs(req.timeout.into())
        };
        self.sandbox
            .remove_container(&req.container_id, timeout)
            .await
    }

    async fn do_destroy_sandbox(&self) -> Result<()> {
        self.sandbox.destroy_all(DESTROY_TIMEOUT).await
    }

    /// The process `exec_id` names: an empty id or the container's id is its init
    /// process (upstream's `find_container_process`), for every call.
    fn process(
        &self,
        cid: &str,
        exec_id: &str,
    ) -> Result<(Arc<Container>, Arc<crate::process::Process>)> {
        let c = self.sandbox.container(cid)?;
        let p = c.process(exec_id)?;
        Ok((c, p))
    }

    async fn read_stream(
        &self,
        req: ReadStreamRequest,
        stderr: bool,
    ) -> Result<ReadStreamResponse> {
        let (c, p) = self.process(&req.container_id, &req.exec_id)?;
        let stream = if stderr { p.stderr() } else { p.stdout() };
        let data = match stream {
            Some(stream) => stream
                .read(req.len as usize)
                .await
                .map_err(|e| AgentError::internal("reading the stream", e))?,
            None => Vec::new(),
        };
        // The end of the stream is OK with empty data, as upstream answers it.
        if data.is_empty() {
            p.mark_eof(stderr);
            forget_if_done(&c, &req.exec_id, &p);
        }
        Ok(ReadStreamResponse {
            data,
            ..Default::default()
        })
    }
}

impl AgentRpc {
    /// ReadStdout/ReadStderr: checked first; a denied read still drains the stream (so
    /// EOF and the process's end reach the runtime as usual) but answers empty data, as
    /// upstream redacts it.
    async fn checked_read(
        &self,
        req: ReadStreamRequest,
        stderr: bool,
    ) -> ttrpc::Result<ReadStreamResponse> {
        let allowed = self.policy.allows_stream_read(&req);
        let mut resp = self.read_stream(req, stderr).await?;
        if !allowed {
            resp.data.clear();
        }
        Ok(resp)
    }
}

/// An exec is forgotten once waited for and its output read to EOF; the init process
/// stays until RemoveContainer.
fn forget_if_done(c: &Container, exec_id: &str, p: &crate::process::Process) {
    let init = exec_id.is_empty() || exec_id == c.id;
    if !init && p.finished() {
        c.forget_exec(exec_id);
    }
}

fn empty(r: Result<()>) -> ttrpc::Result<Empty> {
    r.map(|()| Empty::new()).map_err(Into::into)
}

/// After CPUs came online, each container's cpuset (from its spec) is written again, as
/// upstream does: cgroup v1 leaves out CPUs that were offline when it was set. A failure
/// is logged; the CPUs are online either way.
fn reapply_cpusets(containers: &[(String, String, std::path::PathBuf)]) {
    for (id, cgroup, config) in containers {
        let Ok(spec) = oci_spec::runtime::Spec::load(config) else {
            continue;
        };
        let Some(cpus) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.cpu().as_ref())
            .and_then(|c| c.cpus().clone())
        else {
            continue;
        };
        let resources = serde_json::from_value::<oci_spec::runtime::LinuxResources>(
            serde_json::json!({"cpu": {"cpus": cpus}}),
        );
        let r = resources
            .map_err(|e| AgentError::internal("cpuset", e))
            .and_then(|res| crate::cgroups::update(cgroup, id, &res));
        match r {
            Ok(()) => tracing::info!(container = %id, %cpus, "OnlineCPUMem: cpuset applied again"),
            Err(e) => {
                tracing::warn!(container = %id, %cpus, error = %e, "OnlineCPUMem: cpuset not applied again")
            }
        }
    }
}

/// sysfs prints the memory block size in hex without a prefix (`8000000`).
fn read_mem_block_size(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

#[async_trait]
impl AgentService for AgentRpc {
    async fn get_guest_details(
        &self,
        _ctx: &TtrpcContext,
        req: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        self.policy.check(&req)?;
        let mut resp = GuestDetailsResponse::new();
        if req.mem_block_size {
            resp.mem_block_size_bytes = read_mem_block_size(Path::new(MEM_BLOCK_SIZE));
        }
        if req.mem_hotplug_probe {
            resp.support_mem_hotplug_probe = Path::new(MEM_HOTPLUG_PROBE).exists();
        }
        let details = AgentDetails {
            version: crate::VERSION.to_string(),
            init_daemon: self.info.init_daemon,
            extra_features: self.info.extra_features.clone(),
            storage_handlers: crate::storage::DRIVERS
                .iter()
                .map(|d| d.to_string())
                .collect(),
            // Devices passed in CreateContainer's `devices`: block devices only.
            device_handlers: vec![
                crate::storage::DRIVER_BLK.to_string(),
                crate::storage::DRIVER_VIRTIO_BLK.to_string(),
            ],
            ..Default::default()
        };
        resp.agent_details = Some(details).into();
        Ok(resp)
    }

    async fn destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = self.do_destroy_sandbox().await;
        tracing::info!("DestroySandbox: shutting down");
        self.shutdown.notify_one();
        empty(r)
    }

    async fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        empty(self.do_create_sandbox(req).await)
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        // genpolicy's rules take milliseconds here: off the runtime's only thread.
        let (policy, copy) = (self.policy.clone(), req.clone());
        tokio::task::spawn_blocking(move || policy.check(&copy))
            .await
            .map_err(|e| AgentError::internal("policy", e))??;
        empty(self.do_create_container(req).await)
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = async {
            let c = self.sandbox.container(&req.container_id)?;
            c.start(&self.sandbox.reaper).await
        };
        empty(r.await)
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        empty(self.do_remove_container(req).await)
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = async {
            let c = self.sandbox.container(&req.container_id)?;
            check_id("exec_id", &req.exec_id)?;
            let process = req
                .process
                .as_ref()
                .ok_or_else(|| AgentError::invalid("process", "missing"))?;
            if let Some(profile) = crate::oci::unapplied_apparmor_profile(process) {
                tracing::info!(
                    container = req.container_id,
                    exec = req.exec_id,
                    "AppArmor profile {profile} not applied: the guest loads no host profiles (as kata-agent)"
                );
            }
            let mut json = crate::oci::process_json(process)?;
            let string_user = req.string_user.as_ref();
            if string_user.is_some_and(|s| !s.uid.is_empty()) || !process.User.Username.is_empty() {
                json = exec_with_names(json, &c.bundle.join("rootfs"), string_user)?;
            }
            c.exec(&self.sandbox.reaper, &req.exec_id, json).await
        };
        empty(r.await)
    }

    async fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = async {
            let c = self.sandbox.container(&req.container_id)?;
            let sig =
                i32::try_from(req.signal).map_err(|_| AgentError::invalid("signal", req.signal))?;
            c.signal(&self.sandbox.reaper, &req.exec_id, sig).await
        };
        empty(r.await)
    }

    async fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        self.policy.check(&req)?;
        let (c, p) = self.process(&req.container_id, &req.exec_id)?;
        let status = p.wait().await;
        p.mark_waited();
        // (The shim may still be draining its output now.)
        forget_if_done(&c, &req.exec_id, &p);
        Ok(WaitProcessResponse {
            status,
            ..Default::default()
        })
    }

    async fn write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: WriteStreamRequest,
    ) -> ttrpc::Result<WriteStreamResponse> {
        self.policy.check(&req)?;
        let (_c, p) = self.process(&req.container_id, &req.exec_id)?;
        // Empty data is the end of stdin (runtime-rs closes stdin this way, not with
        // CloseStdin), as upstream's `do_write_stream` takes it.
        if req.data.is_empty() {
            p.close_stdin();
            return Ok(WriteStreamResponse::new());
        }
        let stdin = p
            .stdin()
            .ok_or_else(|| AgentError::FailedPrecondition("stdin is closed".into()))?;
        let len = stdin
            .write_all(&req.data)
            .await
            .map_err(|e| AgentError::internal("writing stdin", e))?;
        Ok(WriteStreamResponse {
            len: u32::try_from(len).unwrap_or(u32::MAX),
            ..Default::default()
        })
    }

    async fn read_stdout(
        &self,
        _ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.checked_read(req, false).await
    }

    async fn read_stderr(
        &self,
        _ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.checked_read(req, true).await
    }

    async fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let (_c, p) = self.process(&req.container_id, &req.exec_id)?;
        p.close_stdin();
        Ok(Empty::new())
    }

    async fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = (|| {
            let (_c, p) = self.process(&req.container_id, &req.exec_id)?;
            // Upstream's status and text.
            let tty = p
                .tty()
                .ok_or_else(|| AgentError::Unavailable("no tty".into()))?;
            let n = |v: u32, f: &str| u16::try_from(v).map_err(|_| AgentError::invalid(f, v));
            set_winsize(tty.raw_fd(), n(req.row, "row")?, n(req.column, "column")?)
        })();
        empty(r)
    }

    async fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: PauseContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = async {
            let c = self.sandbox.container(&req.container_id)?;
            c.pause(&self.sandbox.reaper).await
        };
        empty(r.await)
    }

    async fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ResumeContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = async {
            let c = self.sandbox.container(&req.container_id)?;
            c.resume(&self.sandbox.reaper).await
        };
        empty(r.await)
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        self.policy.check(&req)?;
        let c = self.sandbox.container(&req.container_id)?;
        let (path, id) = (c.cgroup_path.clone(), c.id.clone());
        let stats = tokio::task::spawn_blocking(move || crate::cgroups::stats(&path, &id))
            .await
            .map_err(|e| AgentError::internal("stats", e))??;
        Ok(StatsContainerResponse {
            cgroup_stats: Some(stats).into(),
            ..Default::default()
        })
    }

    async fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = async {
            let c = self.sandbox.container(&req.container_id)?;
            let wire = req
                .resources
                .as_ref()
                .ok_or_else(|| AgentError::invalid("resources", "missing"))?;
            let resources: oci_spec::runtime::LinuxResources =
                serde_json::from_value(crate::oci::resources_json(wire))
                    .map_err(|e| AgentError::invalid("resources", e))?;
            let (path, id) = (c.cgroup_path.clone(), c.id.clone());
            tokio::task::spawn_blocking(move || crate::cgroups::update(&path, &id, &resources))
                .await
                .map_err(|e| AgentError::internal("update", e))?
        };
        empty(r.await)
    }

    async fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        req: GetOOMEventRequest,
    ) -> ttrpc::Result<OOMEvent> {
        self.policy.check(&req)?;
        use std::sync::atomic::Ordering;
        loop {
            for c in self.sandbox.all() {
                let Some(kills) = crate::cgroups::oom_kills(&c.cgroup_path) else {
                    continue;
                };
                let seen = c.oom_reported.load(Ordering::SeqCst);
                if kills > seen
                    && c.oom_reported
                        .compare_exchange(seen, seen + 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    return Ok(OOMEvent {
                        container_id: c.id.clone(),
                        ..Default::default()
                    });
                }
            }
            tokio::time::sleep(OOM_POLL).await;
        }
    }

    async fn update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateInterfaceRequest,
    ) -> ttrpc::Result<Interface> {
        self.policy.check(&req)?;
        let iface = req
            .interface
            .as_ref()
            .ok_or_else(|| AgentError::invalid("interface", "missing"))?;
        Ok(crate::network::update_interface(iface).await?)
    }

    async fn update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        self.policy.check(&req)?;
        // No `routes` at all is refused, as upstream does ("empty update routes request"):
        // it must not mean "delete every route". An empty list does.
        let list = req
            .routes
            .as_ref()
            .map(|r| r.Routes.clone())
            .ok_or_else(|| AgentError::invalid("routes", "missing"))?;
        let routes = crate::network::update_routes(&list).await?;
        Ok(Routes {
            Routes: routes,
            ..Default::default()
        })
    }

    async fn list_interfaces(
        &self,
        _ctx: &TtrpcContext,
        req: ListInterfacesRequest,
    ) -> ttrpc::Result<Interfaces> {
        self.policy.check(&req)?;
        Ok(Interfaces {
            Interfaces: crate::network::list_interfaces().await?,
            ..Default::default()
        })
    }

    async fn list_routes(
        &self,
        _ctx: &TtrpcContext,
        req: ListRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        self.policy.check(&req)?;
        Ok(Routes {
            Routes: crate::network::list_routes().await?,
            ..Default::default()
        })
    }

    async fn add_arp_neighbors(
        &self,
        _ctx: &TtrpcContext,
        req: AddARPNeighborsRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let list = req
            .neighbors
            .as_ref()
            .map(|n| n.ARPNeighbors.clone())
            .unwrap_or_default();
        empty(crate::network::add_arp_neighbors(&list).await)
    }

    async fn get_metrics(
        &self,
        _ctx: &TtrpcContext,
        req: GetMetricsRequest,
    ) -> ttrpc::Result<Metrics> {
        self.policy.check(&req)?;
        let kbs = self.kbs.metrics();
        let metrics = tokio::task::spawn_blocking(move || {
            crate::metrics::render(&crate::metrics::Sources::default(), &kbs)
        })
        .await
        .map_err(|e| AgentError::internal("metrics", e))?;
        Ok(Metrics {
            metrics,
            ..Default::default()
        })
    }

    async fn copy_file(&self, _ctx: &TtrpcContext, req: CopyFileRequest) -> ttrpc::Result<Empty> {
        // Upstream's PolicyCopyFileRequest shape: the type from the mode, no data.
        self.policy.check_copy_file(&req)?;
        let root = self.sandbox.paths.shared_dir();
        let r = tokio::task::spawn_blocking(move || crate::copy_file::copy_file(&root, &req))
            .await
            .map_err(|e| AgentError::internal("copy", e))
            .and_then(|r| r);
        empty(r)
    }

    async fn set_policy(&self, _ctx: &TtrpcContext, req: SetPolicyRequest) -> ttrpc::Result<Empty> {
        // Checked by the policy in force; replaces it only once the new one loaded.
        self.policy.set_policy(&req)?;
        Ok(Empty::new())
    }

    async fn update_ephemeral_mounts(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateEphemeralMountsRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let root = self.sandbox.paths.ephemeral_dir();
        let r = tokio::task::spawn_blocking(move || crate::ephemeral::update(&root, &req.storages))
            .await
            .map_err(|e| AgentError::internal("ephemeral mounts", e))
            .and_then(|r| r);
        empty(r)
    }

    async fn remove_stale_virtiofs_share_mounts(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveStaleVirtiofsShareMountsRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let shared = self.sandbox.paths.shared_dir();
        let r = tokio::task::spawn_blocking(move || {
            crate::ephemeral::stat_share_mounts(Path::new(crate::volume::MOUNTINFO), &shared)
        })
        .await
        .map_err(|e| AgentError::internal("share mounts", e))
        .and_then(|r| r);
        empty(r.map(|_| ()))
    }

    async fn get_diagnostic_data(
        &self,
        _ctx: &TtrpcContext,
        req: GetDiagnosticDataRequest,
    ) -> ttrpc::Result<GetDiagnosticDataResponse> {
        self.policy.check(&req)?;
        if req.log_type != crate::diagnostic::TERMINATION_LOG {
            return Err(AgentError::invalid(
                "log_type",
                format!("unsupported diagnostic log_type: {:?}", req.log_type),
            )
            .into());
        }
        let c = self.sandbox.container(&req.container_id)?;
        let (config, shared) = (
            c.bundle.join("config.json"),
            self.sandbox.paths.shared_dir(),
        );
        let data = tokio::task::spawn_blocking(move || {
            let spec = oci_spec::runtime::Spec::load(&config)
                .map_err(|e| AgentError::internal("the container's config.json", e))?;
            crate::diagnostic::termination_log(&spec, &shared)
        })
        .await
        .map_err(|e| AgentError::internal("diagnostic data", e))??;
        Ok(GetDiagnosticDataResponse {
            data,
            ..Default::default()
        })
    }

    async fn get_ip_tables(
        &self,
        _ctx: &TtrpcContext,
        req: GetIPTablesRequest,
    ) -> ttrpc::Result<GetIPTablesResponse> {
        self.policy.check(&req)?;
        let data = crate::iptables::get(&self.sandbox.reaper, req.is_ipv6).await?;
        Ok(GetIPTablesResponse {
            data,
            ..Default::default()
        })
    }

    async fn set_ip_tables(
        &self,
        _ctx: &TtrpcContext,
        req: SetIPTablesRequest,
    ) -> ttrpc::Result<SetIPTablesResponse> {
        self.policy.check(&req)?;
        let data = crate::iptables::set(&self.sandbox.reaper, req.is_ipv6, req.data).await?;
        Ok(SetIPTablesResponse {
            data,
            ..Default::default()
        })
    }

    async fn mem_agent_memcg_set(
        &self,
        _ctx: &TtrpcContext,
        req: MemAgentMemcgConfig,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        crate::mem_agent::memcg_set(&req);
        Ok(Empty::new())
    }

    async fn mem_agent_compact_set(
        &self,
        _ctx: &TtrpcContext,
        req: MemAgentCompactConfig,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let knob = Path::new(crate::mem_agent::COMPACTION_PROACTIVENESS);
        empty(crate::mem_agent::compact_set(&req, knob).map(|_| ()))
    }

    async fn online_cpu_mem(
        &self,
        _ctx: &TtrpcContext,
        req: OnlineCPUMemRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let hotplug = self.sandbox.hotplug_timeout;
        let containers: Vec<(String, String, std::path::PathBuf)> = self
            .sandbox
            .all()
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    c.cgroup_path.clone(),
                    c.bundle.join("config.json"),
                )
            })
            .collect();
        let r = tokio::task::spawn_blocking(move || {
            let sysfs = Path::new(crate::hotplug::SYSFS);
            if req.nb_cpus > 0 {
                crate::hotplug::online_cpus_until(sysfs, req.nb_cpus as usize, hotplug)?;
            }
            if !req.cpu_only {
                crate::hotplug::online_memory(sysfs)?;
            }
            if req.nb_cpus > 0 {
                reapply_cpusets(&containers);
            }
            Ok(())
        })
        .await
        .map_err(|e| AgentError::internal("online", e))
        .and_then(|r| r);
        empty(r)
    }

    async fn reseed_random_dev(
        &self,
        _ctx: &TtrpcContext,
        req: ReseedRandomDevRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = tokio::task::spawn_blocking(move || {
            crate::host_input::reseed(Path::new(crate::host_input::RNG_DEV), &req.data)
        })
        .await
        .map_err(|e| AgentError::internal("reseed", e))
        .and_then(|r| r);
        empty(r)
    }

    async fn mem_hotplug_by_probe(
        &self,
        _ctx: &TtrpcContext,
        req: MemHotplugByProbeRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = tokio::task::spawn_blocking(move || {
            crate::hotplug::probe_memory(Path::new(crate::hotplug::SYSFS), &req.memHotplugProbeAddr)
        })
        .await
        .map_err(|e| AgentError::internal("probe", e))
        .and_then(|r| r);
        empty(r)
    }

    async fn set_guest_date_time(
        &self,
        _ctx: &TtrpcContext,
        req: SetGuestDateTimeRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        empty(crate::host_input::set_date_time(req.Sec, req.Usec))
    }

    async fn add_swap(&self, _ctx: &TtrpcContext, req: AddSwapRequest) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let hotplug = self.sandbox.hotplug_timeout;
        let r = tokio::task::spawn_blocking(move || crate::swap::add_swap(&req.PCIPath, hotplug))
            .await
            .map_err(|e| AgentError::internal("swap", e))
            .and_then(|r| r);
        empty(r)
    }

    async fn add_swap_path(
        &self,
        _ctx: &TtrpcContext,
        req: AddSwapPathRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        let r = tokio::task::spawn_blocking(move || crate::swap::add_swap_path(&req.path))
            .await
            .map_err(|e| AgentError::internal("swap", e))
            .and_then(|r| r);
        empty(r)
    }

    async fn get_volume_stats(
        &self,
        _ctx: &TtrpcContext,
        req: VolumeStatsRequest,
    ) -> ttrpc::Result<cocoon_protocols::csi::VolumeStatsResponse> {
        self.policy.check(&req)?;
        let path = req.volume_guest_path;
        Ok(
            tokio::task::spawn_blocking(move || crate::volume::stats(&path))
                .await
                .map_err(|e| AgentError::internal("volume stats", e))??,
        )
    }

    async fn resize_volume(
        &self,
        _ctx: &TtrpcContext,
        req: ResizeVolumeRequest,
    ) -> ttrpc::Result<Empty> {
        self.policy.check(&req)?;
        empty(crate::volume::resize(&self.sandbox.reaper, &req.volume_guest_path, req.size).await)
    }
}

/// An exec's process with `string_user` / `User.Username` resolved in the container's
/// root, as for CreateContainer.
fn exec_with_names(
    json: serde_json::Value,
    rootfs: &std::path::Path,
    string_user: Option<&cocoon_protocols::agent::StringUser>,
) -> std::result::Result<serde_json::Value, AgentError> {
    let mut process: oci_spec::runtime::Process = serde_json::from_value(json)
        .map_err(|e| AgentError::invalid("process", format!("not a valid OCI process: {e}")))?;
    crate::users::apply_names_to_process(&mut process, rootfs, string_user)?;
    serde_json::to_value(&process).map_err(|e| AgentError::internal("the exec's process", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_block_size_is_hex() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("block_size_bytes");
        std::fs::write(&f, "8000000\n").unwrap();
        assert_eq!(read_mem_block_size(&f), 0x800_0000);
        assert_eq!(read_mem_block_size(&dir.path().join("none")), 0);
        std::fs::write(&f, "zz\n").unwrap();
        assert_eq!(read_mem_block_size(&f), 0);
    }
}
