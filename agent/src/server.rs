//! The ttrpc server: binds the configured address, serves `grpc.Health` and
//! `grpc.AgentService`, and stops cleanly when asked.

use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use ttrpc::r#async::Server;

use cocoon_protocols::{agent_ttrpc, health_ttrpc};

use crate::config::ServerAddr;
use crate::logging::{self, LogSink};
use crate::rpc::agent::{AgentRpc, GuestInfo};
use crate::rpc::health::HealthService;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("ttrpc server on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    #[error("removing stale socket {path}: {source}")]
    StaleSocket {
        path: String,
        source: std::io::Error,
    },
    #[error("installing signal handler: {0}")]
    Signal(std::io::Error),
}

/// A leftover socket file from an earlier run would make bind fail; remove it, but
/// never anything that is not a socket.
fn remove_stale_socket(addr: &ServerAddr) -> Result<(), ServerError> {
    let ServerAddr::Unix(path) = addr else {
        return Ok(());
    };
    if path.starts_with('@') {
        return Ok(());
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ServerError::StaleSocket {
                path: path.clone(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Serves until DestroySandbox (or, when not PID 1, SIGTERM/SIGINT), then shuts the
/// server down.
pub async fn serve(
    addr: &ServerAddr,
    info: GuestInfo,
    sink: &LogSink,
    is_init: bool,
    sandbox: Arc<crate::sandbox::Sandbox>,
    kbs: crate::kbs::Kbs,
    policy: Arc<crate::policy::Policy>,
) -> Result<(), ServerError> {
    let uri = addr.uri();
    remove_stale_socket(addr)?;
    let shutdown = Arc::new(Notify::new());

    let health: Arc<dyn health_ttrpc::Health + Send + Sync> = Arc::new(HealthService);
    let agent: Arc<dyn agent_ttrpc::AgentService + Send + Sync> =
        Arc::new(AgentRpc::new(info, policy, shutdown.clone(), sandbox, kbs));
    let mut server = Server::new()
        .bind(&uri)
        .map_err(|e| ServerError::Bind {
            addr: uri.clone(),
            reason: e.to_string(),
        })?
        .register_service(health_ttrpc::create_health(health))
        .register_service(agent_ttrpc::create_agent_service(agent));
    server.start().await.map_err(|e| ServerError::Serve {
        addr: uri.clone(),
        reason: e.to_string(),
    })?;
    // Handlers first: a SIGTERM right after "listening on" must stop us cleanly.
    let signals = if is_init {
        None
    } else {
        Some((
            signal(SignalKind::terminate()).map_err(ServerError::Signal)?,
            signal(SignalKind::interrupt()).map_err(ServerError::Signal)?,
        ))
    };
    logging::announce(sink, &format!("listening on {uri}"));

    if let Some((mut term, mut int)) = signals {
        tokio::select! {
            _ = shutdown.notified() => {}
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    } else {
        shutdown.notified().await;
    }
    server.shutdown().await.map_err(|e| ServerError::Serve {
        addr: uri.clone(),
        reason: e.to_string(),
    })?;
    remove_stale_socket(addr)?;
    tracing::info!("server stopped");
    Ok(())
}
