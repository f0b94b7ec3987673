//! The ttrpc server: binds the configured address, serves `grpc.Health` and
//! `grpc.AgentService`, and stops cleanly when asked.
//!
//! Binding and serving are two steps ([`listen`], then [`serve`]): as PID 1 the agent
//! listens as soon as the vsock transport is loaded, and the runtime's connection waits
//! in the socket's backlog while the rest of start-up (modules, attestation probe,
//! initdata, policy) finishes. Nothing is read from a connection before the policy is
//! loaded, and a start-up failure powers the VM off with the connection unanswered.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};

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

/// A bound, listening socket that nothing reads yet: connections queue in its backlog.
pub struct Listening {
    addr: ServerAddr,
    fd: OwnedFd,
}

impl Listening {
    pub fn addr(&self) -> &ServerAddr {
        &self.addr
    }

    /// The listening socket itself (for a listener that is not the ttrpc server).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// Binds `addr` and listens (close-on-exec, so no container inherits it). A stale
/// socket file of an earlier run is removed first.
pub fn listen(addr: &ServerAddr) -> Result<Listening, ServerError> {
    remove_stale_socket(addr)?;
    let bind_err = |e: nix::Error| ServerError::Bind {
        addr: addr.uri(),
        reason: e.to_string(),
    };
    let fd = match addr {
        ServerAddr::Vsock { cid, port } => {
            let fd = socket::socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(bind_err)?;
            let cid = cid.unwrap_or(libc::VMADDR_CID_ANY);
            socket::bind(fd.as_raw_fd(), &VsockAddr::new(cid, *port)).map_err(bind_err)?;
            fd
        }
        ServerAddr::Unix(path) => {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(bind_err)?;
            let sockaddr = match path.strip_prefix('@') {
                Some(name) => socket::UnixAddr::new_abstract(name.as_bytes()),
                None => socket::UnixAddr::new(path.as_str()),
            }
            .map_err(bind_err)?;
            socket::bind(fd.as_raw_fd(), &sockaddr).map_err(bind_err)?;
            fd
        }
    };
    // Connections queued before they are served: the system's cap (`SOMAXCONN`).
    socket::listen(&fd, Backlog::MAXCONN).map_err(bind_err)?;
    Ok(Listening {
        addr: addr.clone(),
        fd,
    })
}

/// Serves `listening` until DestroySandbox (or, when not PID 1, SIGTERM/SIGINT), then
/// shuts the server down.
pub async fn serve(
    listening: Listening,
    info: GuestInfo,
    sink: &LogSink,
    is_init: bool,
    sandbox: Arc<crate::sandbox::Sandbox>,
    kbs: crate::kbs::Kbs,
    policy: Arc<crate::policy::Policy>,
) -> Result<(), ServerError> {
    let Listening { addr, fd } = listening;
    let addr = &addr;
    let uri = addr.uri();
    let shutdown = Arc::new(Notify::new());

    let health: Arc<dyn health_ttrpc::Health + Send + Sync> = Arc::new(HealthService);
    let agent: Arc<dyn agent_ttrpc::AgentService + Send + Sync> =
        Arc::new(AgentRpc::new(info, policy, shutdown.clone(), sandbox, kbs));
    let bind_err = |e: ttrpc::Error| ServerError::Bind {
        addr: uri.clone(),
        reason: e.to_string(),
    };
    let raw = fd.into_raw_fd();
    let server = match addr {
        // SAFETY: `raw` is the listening socket of that family just released from its
        // `OwnedFd`: the server takes sole ownership and nothing else closes or uses it.
        ServerAddr::Vsock { .. } => unsafe { Server::new().add_vsock_listener(raw) },
        // SAFETY: as above, for the Unix listener.
        ServerAddr::Unix(_) => unsafe { Server::new().add_unix_listener(raw) },
    }
    .map_err(bind_err)?;
    let mut server = server
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
    if !is_init {
        // As PID 1, main said it as soon as the socket was bound.
        logging::announce(sink, &format!("listening on {uri}"));
    }
    logging::announce(sink, &format!("serving requests on {uri}"));

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
