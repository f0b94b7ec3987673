//! `grpc.Health`: liveness and version, polled by the runtime every few seconds.

use async_trait::async_trait;
use cocoon_protocols::health::{
    health_check_response::ServingStatus, CheckRequest, HealthCheckResponse, VersionCheckResponse,
};
use cocoon_protocols::health_ttrpc::Health;
use ttrpc::r#async::TtrpcContext;

/// The ttrpc API version upstream reports.
const API_VERSION: &str = "0.0.1";

pub struct HealthService;

#[async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<HealthCheckResponse> {
        let mut resp = HealthCheckResponse::new();
        resp.status = ServingStatus::SERVING.into();
        Ok(resp)
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<VersionCheckResponse> {
        let mut resp = VersionCheckResponse::new();
        resp.grpc_version = API_VERSION.to_string();
        resp.agent_version = crate::VERSION.to_string();
        Ok(resp)
    }
}
