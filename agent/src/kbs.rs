//! The agent's one KBS session, built from the configuration at start-up and shared by
//! everything that needs a secret: sealed secrets in CreateContainer, the workload REST
//! API, and (later) image layer keys. It attests lazily, on the first request (the
//! guest's network is configured by the runtime after boot), and then reuses the token
//! until it expires.

use std::sync::Arc;

use cocoon_attester::{Attester, Probe};
use cocoon_guest_components::rest::{evidence_from, ApiMode, RestApi, RestServer};
use cocoon_guest_components::{KbsService, KbsSettings, ResourceSource};

use crate::config::{AgentConfig, RestApi as RestApiSetting};

/// The KBS client the agent runs: the attester's evidence, one session.
pub type Service = KbsService<Arc<Attester>>;

/// The agent's KBS: ready, or why there is none (said in every error that needed it).
#[derive(Clone)]
pub enum Kbs {
    Ready {
        service: Arc<Service>,
        attester: Arc<Attester>,
    },
    Unavailable(String),
}

impl Kbs {
    /// From `agent.aa_kbc_params` (and `kbs_cert_file`) and the start-up TEE probe. With
    /// no TEE the agent refuses to attest (fail closed), unless the sample attester was
    /// asked for.
    pub fn from_config(config: &AgentConfig, probe: &Probe) -> Kbs {
        Kbs::with_init_data(config, probe, None)
    }

    /// [`Kbs::from_config`], sending `init_data` (the initdata TOML) in `attest`.
    pub fn with_init_data(config: &AgentConfig, probe: &Probe, init_data: Option<String>) -> Kbs {
        let Some(params) = &config.aa_kbc_params else {
            return Kbs::Unavailable("no KBS is configured (agent.aa_kbc_params)".into());
        };
        let attester = match probe.attester() {
            Ok(a) => Arc::new(a),
            Err(e) => return Kbs::Unavailable(format!("attestation refused: {e}")),
        };
        let mut settings = KbsSettings::new(params.url.clone());
        settings.retry.deadline = config.kbs_deadline;
        settings.init_data = init_data;
        if let Some(pem) = &config.kbs_cert {
            settings.ca_cert_pem = Some(pem.clone().into_bytes());
        } else if let Some(path) = &config.kbs_cert_file {
            match std::fs::read(path) {
                Ok(pem) => settings.ca_cert_pem = Some(pem),
                Err(e) => {
                    return Kbs::Unavailable(format!(
                        "reading the KBS CA certificate {}: {e}",
                        path.display()
                    ))
                }
            }
        }
        match KbsService::new(settings, attester.clone()) {
            Ok(service) => {
                tracing::info!(kbs = %params.url, tee = %attester.tee(), "KBS configured");
                Kbs::Ready {
                    service: Arc::new(service),
                    attester,
                }
            }
            Err(e) => Kbs::Unavailable(format!("KBS {}: {e}", params.url)),
        }
    }

    /// The resource seam for secrets, or why there is none.
    pub fn source(&self) -> Result<Arc<dyn ResourceSource>, String> {
        match self {
            Kbs::Ready { service, .. } => Ok(service.clone() as Arc<dyn ResourceSource>),
            Kbs::Unavailable(why) => Err(why.clone()),
        }
    }

    /// Prometheus text of the KBS counters (empty without a KBS).
    pub fn metrics(&self) -> String {
        match self {
            Kbs::Ready { service, .. } => service.metrics().render_prometheus(),
            Kbs::Unavailable(_) => String::new(),
        }
    }

    /// Starts the workload REST API as configured (`agent.guest_components_rest_api`),
    /// on `guest_components_rest_api_addr`. Nothing to serve without a KBS.
    pub fn serve_rest_api(&self, config: &AgentConfig) -> Option<RestServer> {
        let mode = match config.guest_components_rest_api {
            RestApiSetting::None => return None,
            RestApiSetting::Attestation => ApiMode::Attestation,
            RestApiSetting::Resource => ApiMode::Resource,
            RestApiSetting::All => ApiMode::All,
        };
        let Kbs::Ready { service, attester } = self else {
            return None;
        };
        let addr = config.guest_components_rest_api_addr;
        let listener = match std::net::TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "workload REST API: cannot listen");
                return None;
            }
        };
        let api = RestApi {
            mode,
            resources: service.clone(),
            evidence: evidence_from(attester.clone()),
            info: serde_json::json!({
                "agent": "cocoon-agent",
                "version": crate::VERSION,
                "tee": attester.tee().to_string(),
                "kbs": service.kbs_url(),
            }),
        };
        match cocoon_guest_components::rest::serve(listener, api) {
            Ok(server) => {
                tracing::info!(addr = %server.local_addr(), ?mode, "workload REST API listening");
                Some(server)
            }
            Err(e) => {
                tracing::error!(error = %e, "workload REST API: cannot start");
                None
            }
        }
    }
}
