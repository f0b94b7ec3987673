//! `grpc.AgentService`. Methods not implemented here answer `UNIMPLEMENTED` with the
//! method's name (the generated default, see `cocoon-protocols`' build script).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use cocoon_protocols::agent::{
    AgentDetails, DestroySandboxRequest, GuestDetailsRequest, GuestDetailsResponse,
};
use cocoon_protocols::agent_ttrpc::AgentService;
use protobuf::well_known_types::empty::Empty;
use tokio::sync::Notify;
use ttrpc::r#async::TtrpcContext;

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
    /// Notified when DestroySandbox asks the agent to end.
    shutdown: Arc<Notify>,
}

impl AgentRpc {
    pub fn new(info: GuestInfo, shutdown: Arc<Notify>) -> Self {
        AgentRpc { info, shutdown }
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
            ..Default::default()
        };
        resp.agent_details = Some(details).into();
        Ok(resp)
    }

    async fn destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        _req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        tracing::info!("DestroySandbox: shutting down");
        self.shutdown.notify_one();
        Ok(Empty::new())
    }
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
