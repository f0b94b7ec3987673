//! Protocol constants of the Kata agent, in one place.
//!
//! Sources: kata-containers `src/libs/protocols/protos/agent.proto` and `health.proto`,
//! `src/agent/src/config.rs` (ports, defaults), and the ttrpc protocol
//! (<https://github.com/containerd/ttrpc/blob/main/PROTOCOL.md>).

/// ttrpc service name of the agent API.
pub const AGENT_SERVICE: &str = "grpc.AgentService";
/// ttrpc service name of the health API.
pub const HEALTH_SERVICE: &str = "grpc.Health";

/// vsock port the agent serves ttrpc on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// vsock port for the agent's log stream (`agent.log_vport`).
pub const LOG_VSOCK_PORT: u32 = 1025;
/// vsock port of the debug console.
pub const DEBUG_CONSOLE_VSOCK_PORT: u32 = 1026;
/// vsock port of the passfd listener.
pub const PASSFD_VSOCK_PORT: u32 = 1027;
/// Default server address: any CID, port 1024.
pub const DEFAULT_SERVER_ADDR: &str = "vsock://-1:1024";

/// Largest ttrpc message (header length field) accepted: 4 MiB.
pub const MAX_MESSAGE_SIZE: usize = 4 << 20;
/// Size of the ttrpc frame header: length u32 BE, stream id u32 BE, type u8, flags u8.
pub const FRAME_HEADER_SIZE: usize = 10;

/// The agent's working tree in the guest (kata-containers `src/agent/src/rpc.rs`
/// `CONTAINER_BASE`): one bundle directory per container.
pub const KATA_RUN_DIR: &str = "/run/kata-containers";
/// Where the runtime copies a container's files with CopyFile when the VM has no shared
/// filesystem; a container's rootfs goes to `<this>/<cid>/rootfs`.
pub const SHARED_CONTAINERS_DIR: &str = "/run/kata-containers/shared/containers";
/// The pod's emptyDir tmpfs volumes, which UpdateEphemeralMounts resizes (the Go
/// runtime's `ephemeralPath()`, kata-containers `src/runtime/virtcontainers/kata_agent.go`).
pub const EPHEMERAL_DIR: &str = "/run/kata-containers/sandbox/ephemeral";
/// CopyFile chunk size the Go runtime uses.
pub const COPY_FILE_CHUNK: usize = 1 << 20;

/// Port of the workload-facing REST API inside the guest (upstream guest-components
/// `api-server-rest`, `127.0.0.1:8006`).
pub const WORKLOAD_API_PORT: u16 = 8006;
/// Kubernetes-style sealed-secret signing keys named by a file `kid` (upstream
/// confidential-data-hub).
pub const SEALED_SECRET_KEY_DIR: &str = "/run/confidential-containers/cdh/sealed-secret";

/// Guest image pull (kata-containers `kata_types::mount::KATA_VIRTUAL_VOLUME_IMAGE_GUEST_PULL`):
/// the `Storage.driver` of a container image the guest pulls itself; its `driver_options`
/// carry `image_guest_pull=<JSON {"metadata": {container annotations}}>`.
pub const DRIVER_IMAGE_GUEST_PULL: &str = "image_guest_pull";
/// image-rs `DEFAULT_WORK_DIR` (guest-components `image-rs/src/config.rs`): layers and
/// overlays of guest-pulled images.
pub const IMAGE_WORK_DIR: &str = "/run/kata-containers/image";
/// The pause container's bundle baked into the guest image (kata-containers
/// `src/agent/src/confidential_data_hub/image.rs` `KATA_PAUSE_BUNDLE`).
pub const PAUSE_BUNDLE_DIR: &str = "/pause_bundle";
/// Annotations that say a container is the pod's sandbox (pause) container.
pub const CONTAINER_TYPE_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];
