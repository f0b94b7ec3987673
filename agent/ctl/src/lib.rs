//! Host-side client for the agent, like upstream's `kata-agent-ctl`.
//!
//! Owns the three ways a host reaches the agent — `unix://` (tests, or an agent run as a
//! plain process), `vsock://CID:PORT`, and hybrid vsock (`hvsock:///path:PORT`: a unix
//! socket on which we say `CONNECT <port>\n` and read `OK <port>\n`, as with Cloud
//! Hypervisor, Firecracker and `vhost-device-vsock`) — and a generic call: any
//! `grpc.AgentService` or `grpc.Health` method by name, with its request as JSON and its
//! response printed as JSON. Requests are built from the protocol's descriptors, so
//! every RPC works without a hand-written table. [`secret`] makes CoCo sealed secrets
//! (keygen, seal, inspect, verify) in the format of upstream's `secret` tool; [`image`]
//! encrypts OCI images for the guest (`image encrypt`) and speaks ocicrypt's key-provider
//! protocol (`keyprovider`), writing CoCo annotation packets as upstream's coco_keyprovider.

use std::str::FromStr;
use std::time::Duration;

use protobuf::reflect::{FileDescriptor, MessageDescriptor, ServiceDescriptor};
use protobuf_json_mapping::{ParseOptions, PrintOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ttrpc::r#async::transport::Socket;
use ttrpc::r#async::Client;

use cocoon_protocols::wire;

pub mod image;
pub mod initdata;
pub mod run;
pub mod secret;

/// What went wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("bad server address {0:?}: expected unix:///path, unix://@name, vsock://CID:PORT or hvsock:///path:PORT")]
    Address(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("hybrid vsock handshake with {addr}: {reason}")]
    Handshake { addr: String, reason: String },
    #[error("unknown method {0:?} (not in grpc.AgentService or grpc.Health)")]
    UnknownMethod(String),
    #[error("request JSON for {method}: {reason}")]
    Request { method: String, reason: String },
    #[error("{code}: {message}")]
    Rpc { code: String, message: String },
    #[error("{method}: {reason}")]
    Transport { method: String, reason: String },
    #[error("decoding {method} response: {reason}")]
    Response { method: String, reason: String },
}

/// How to reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `unix:///path` or `unix://@abstract`.
    Unix(String),
    /// `vsock://CID:PORT`.
    Vsock { cid: u32, port: u32 },
    /// `hvsock:///path/to/socket:PORT` (Kata's hybrid-vsock form).
    HybridVsock { path: String, port: u32 },
}

impl FromStr for Address {
    type Err = CtlError;

    fn from_str(s: &str) -> Result<Self, CtlError> {
        let bad = || CtlError::Address(s.to_string());
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad());
            }
            Ok(Address::Unix(path.to_string()))
        } else if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
            Ok(Address::Vsock {
                cid: cid.parse().map_err(|_| bad())?,
                port: port.parse().map_err(|_| bad())?,
            })
        } else if let Some(rest) = s.strip_prefix("hvsock://") {
            let (path, port) = match rest.rsplit_once(':') {
                Some((path, port)) => (path, port.parse().map_err(|_| bad())?),
                None => (rest, wire::AGENT_VSOCK_PORT),
            };
            if path.is_empty() {
                return Err(bad());
            }
            Ok(Address::HybridVsock {
                path: path.to_string(),
                port,
            })
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix://{path}"),
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::HybridVsock { path, port } => write!(f, "hvsock://{path}:{port}"),
        }
    }
}

/// Opens a ttrpc connection to the agent.
pub async fn connect(addr: &Address) -> Result<Client, CtlError> {
    let connect_err = |source| CtlError::Connect {
        addr: addr.to_string(),
        source,
    };
    match addr {
        Address::Unix(_) | Address::Vsock { .. } => Client::connect(&addr.to_string())
            .await
            .map_err(|e| connect_err(std::io::Error::other(e.to_string()))),
        Address::HybridVsock { path, port } => {
            let mut stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect_err)?;
            hybrid_vsock_handshake(&mut stream, *port)
                .await
                .map_err(|reason| CtlError::Handshake {
                    addr: addr.to_string(),
                    reason,
                })?;
            Ok(Client::new(Socket::new(stream)))
        }
    }
}

/// `CONNECT <port>\n` → `OK <port>\n`. Reads byte by byte so nothing of the ttrpc
/// stream that follows is consumed.
async fn hybrid_vsock_handshake(
    stream: &mut tokio::net::UnixStream,
    port: u32,
) -> Result<(), String> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await.map_err(|e| {
            format!("connection closed before OK (is anything listening on port {port}?): {e}")
        })?;
        if byte == b'\n' {
            break;
        }
        line.push(byte);
        if line.len() > 64 {
            return Err("answer line too long".into());
        }
    }
    let line = String::from_utf8_lossy(&line);
    if line.starts_with("OK ") {
        Ok(())
    } else {
        Err(format!("expected \"OK <port>\", got {line:?}"))
    }
}

/// A method of the agent's protocol, found by name.
pub struct Method {
    /// `grpc.AgentService` or `grpc.Health`.
    pub service: String,
    pub name: String,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
}

fn services() -> Vec<(FileDescriptor, ServiceDescriptor)> {
    [
        cocoon_protocols::health::file_descriptor().clone(),
        cocoon_protocols::agent::file_descriptor().clone(),
    ]
    .into_iter()
    .flat_map(|file| {
        file.services()
            .map(|s| (file.clone(), s))
            .collect::<Vec<_>>()
    })
    .collect()
}

/// Looks `name` up in `grpc.Health` first (`Check`, `Version`), then `grpc.AgentService`.
/// `Service.Method` picks the service explicitly.
pub fn find_method(name: &str) -> Result<Method, CtlError> {
    let (want_service, method) = match name.split_once('.') {
        Some((service, method)) => (Some(service), method),
        None => (None, name),
    };
    for (file, service) in services() {
        if want_service.is_some_and(|s| s != service.proto().name()) {
            continue;
        }
        if let Some(m) = service.methods().find(|m| m.proto().name() == method) {
            return Ok(Method {
                service: format!("{}.{}", file.package(), service.proto().name()),
                name: method.to_string(),
                input: m.input_type(),
                output: m.output_type(),
            });
        }
    }
    Err(CtlError::UnknownMethod(name.to_string()))
}

/// Every method name, `Service.Method`, in protocol order.
pub fn method_names() -> Vec<String> {
    services()
        .into_iter()
        .flat_map(|(_, s)| {
            let service = s.proto().name().to_string();
            s.methods()
                .map(|m| format!("{service}.{}", m.proto().name()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Calls `method` with a JSON request; returns the response as JSON (proto field names).
pub async fn call_json(
    client: &Client,
    method: &str,
    request_json: &str,
    timeout: Duration,
) -> Result<String, CtlError> {
    let m = find_method(method)?;
    let request = protobuf_json_mapping::parse_dyn_from_str_with_options(
        &m.input,
        request_json,
        &ParseOptions {
            ignore_unknown_fields: false,
            ..Default::default()
        },
    )
    .map_err(|e| CtlError::Request {
        method: m.name.clone(),
        reason: e.to_string(),
    })?;
    let payload = request
        .write_to_bytes_dyn()
        .map_err(|e| CtlError::Request {
            method: m.name.clone(),
            reason: e.to_string(),
        })?;
    let response = call_raw(client, &m.service, &m.name, payload, timeout).await?;
    let decoded = m
        .output
        .parse_from_bytes(&response)
        .map_err(|e| CtlError::Response {
            method: m.name.clone(),
            reason: e.to_string(),
        })?;
    protobuf_json_mapping::print_to_string_with_options(
        decoded.as_ref(),
        &PrintOptions {
            proto_field_name: true,
            ..Default::default()
        },
    )
    .map_err(|e| CtlError::Response {
        method: m.name,
        reason: e.to_string(),
    })
}

/// Sends an already-encoded request; returns the encoded response payload.
pub async fn call_raw(
    client: &Client,
    service: &str,
    method: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, CtlError> {
    let request = ttrpc::Request {
        service: service.to_string(),
        method: method.to_string(),
        timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
        payload,
        ..Default::default()
    };
    match client.request(request).await {
        Ok(response) => Ok(response.payload),
        Err(ttrpc::Error::RpcStatus(status)) => Err(CtlError::Rpc {
            code: format!("{:?}", status.code.enum_value_or_default()),
            message: status.message,
        }),
        Err(e) => Err(CtlError::Transport {
            method: method.to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "unix:///tmp/a".parse::<Address>().unwrap(),
            Address::Unix("/tmp/a".into())
        );
        assert_eq!(
            "unix://@x".parse::<Address>().unwrap(),
            Address::Unix("@x".into())
        );
        assert_eq!(
            "vsock://3:1024".parse::<Address>().unwrap(),
            Address::Vsock { cid: 3, port: 1024 }
        );
        assert_eq!(
            "hvsock:///run/vm.sock:1025".parse::<Address>().unwrap(),
            Address::HybridVsock {
                path: "/run/vm.sock".into(),
                port: 1025
            }
        );
        assert_eq!(
            "hvsock:///run/vm.sock".parse::<Address>().unwrap(),
            Address::HybridVsock {
                path: "/run/vm.sock".into(),
                port: 1024
            }
        );
        for bad in [
            "tcp://x",
            "unix://",
            "vsock://3",
            "vsock://a:b",
            "hvsock://:1",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_are_found_by_name() {
        assert_eq!(find_method("Check").unwrap().service, "grpc.Health");
        let m = find_method("GetGuestDetails").unwrap();
        assert_eq!(m.service, "grpc.AgentService");
        assert_eq!(m.input.name(), "GuestDetailsRequest");
        assert!(find_method("AgentService.CreateContainer").is_ok());
        assert!(find_method("Health.CreateContainer").is_err());
        assert!(find_method("PullImage").is_err());
        assert_eq!(method_names().len(), 44);
    }
}
