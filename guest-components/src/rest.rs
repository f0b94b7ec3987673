//! The workload-facing REST API: the in-process equivalent of upstream CoCo's
//! `api-server-rest`, normally on `127.0.0.1:8006` inside the guest.
//!
//! [`serve`] runs a small blocking HTTP/1.1 server (tiny_http, a few worker threads) on a
//! listener the caller binds. It answers loopback peers only (anyone else gets 403, see
//! [`peer_allowed`]) and, depending on [`ApiMode`] (the agent's
//! `agent.guest_components_rest_api` setting), serves `GET /cdh/resource/<repo>/<type>/<tag>`
//! (the KBS resource, raw bytes, through the [`ResourceSource`]), `GET
//! /aa/evidence?runtime_data=...` (TEE evidence binding the runtime data) and `GET /info`
//! (a JSON document the caller provides). Unlike upstream, `GET /aa/token` is refused with
//! 403: the attestation token is the TEE's identity towards the KBS and must not be handed to
//! whatever runs in a container. Path segments and query values are percent-decoded strictly
//! (a malformed escape is a 400); a disabled route answers 404 naming the setting. Resource
//! bytes are held in [`Zeroizing`] buffers up to the socket; KBS failures are mapped to 404,
//! 403, 502 or 503 with a short plain-text reason that never contains a secret. Note that
//! `/aa/evidence` binds any 64 bytes the caller chooses, a KBS nonce and a key of its own
//! included, so the attestation mode too lets a workload act as this TEE towards a KBS: enable
//! it only for workloads trusted with that.
//!
//! Upstream: confidential-containers/guest-components `api-server-rest/src/{main,router,utils}.rs`
//! and `api-server-rest/src/client/{aa,cdh}.rs`
//! (<https://github.com/confidential-containers/guest-components/tree/main/api-server-rest>);
//! summary in `shared/reference/confidential.md` ("api-server-rest").

use std::fmt;
use std::io::{self, Cursor};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::error::{BoxError, Error};
use crate::kbs::protocol::ResourcePath;
use crate::kbs::EvidenceProvider;
use crate::resource::ResourceSource;

/// The paths, parameters and limits of the API, from upstream's `api-server-rest`
/// (`src/main.rs`, `src/router.rs`, `src/utils.rs`, `src/client/aa.rs`, `src/client/cdh.rs`,
/// <https://github.com/confidential-containers/guest-components/tree/main/api-server-rest/src>).
pub mod wire {
    /// Where upstream (and the agent) binds the API.
    pub const DEFAULT_BIND: &str = "127.0.0.1:8006";
    /// `GET`: a JSON description of the API and the guest.
    pub const INFO_PATH: &str = "/info";
    /// The attestation-agent part of the API.
    pub const AA_ROOT: &str = "/aa";
    /// `GET ?runtime_data=<string>[&encoding=base64]`: evidence binding the runtime data.
    pub const AA_EVIDENCE_PATH: &str = "/aa/evidence";
    /// `GET ?token_type=kbs` upstream: the attestation token. Refused here (403).
    pub const AA_TOKEN_PATH: &str = "/aa/token";
    /// The confidential-data-hub part of the API.
    pub const CDH_ROOT: &str = "/cdh";
    /// `GET <prefix>/<repo>/<type>/<tag>`: a KBS resource, raw bytes.
    pub const CDH_RESOURCE_PATH: &str = "/cdh/resource";
    /// The evidence query parameter.
    pub const QUERY_RUNTIME_DATA: &str = "runtime_data";
    /// The optional evidence query parameter saying how `runtime_data` is encoded.
    pub const QUERY_ENCODING: &str = "encoding";
    /// `encoding=base64`: `runtime_data` is base64url without padding (else its raw bytes).
    pub const ENCODING_BASE64: &str = "base64";
    /// The most report data a TEE report holds; upstream's attesters refuse more, unhashed.
    pub const MAX_RUNTIME_DATA_LEN: usize = 64;
    /// The agent setting that chooses the [`super::ApiMode`] (kata's name for it).
    pub const MODE_SETTING: &str = "agent.guest_components_rest_api";
}

/// Worker threads answering requests (a slow KBS fetch holds one of them).
pub const WORKERS: usize = 4;

/// Which parts of the API are served (`agent.guest_components_rest_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiMode {
    /// Nothing: every path answers 404 (the agent does not even start the server).
    None,
    /// `/aa/*` and `/info`.
    Attestation,
    /// `/cdh/*` and `/info`.
    Resource,
    /// Everything.
    All,
}

impl ApiMode {
    /// The setting's value: `none`, `attestation`, `resource` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Attestation => "attestation",
            Self::Resource => "resource",
            Self::All => "all",
        }
    }

    fn attestation(self) -> bool {
        matches!(self, Self::Attestation | Self::All)
    }

    fn resource(self) -> bool {
        matches!(self, Self::Resource | Self::All)
    }
}

impl fmt::Display for ApiMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An [`ApiMode`] name that is not `none`, `attestation`, `resource` or `all`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {} {value:?}: want none, attestation, resource or all",
    wire::MODE_SETTING
)]
pub struct BadApiMode {
    /// The value as given.
    pub value: String,
}

impl FromStr for ApiMode {
    type Err = BadApiMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "attestation" => Ok(Self::Attestation),
            "resource" => Ok(Self::Resource),
            "all" => Ok(Self::All),
            _ => Err(BadApiMode {
                value: s.to_owned(),
            }),
        }
    }
}

/// Produces the evidence JSON (Trustee's `primary_evidence` shape) for the given report
/// data, at most [`wire::MAX_RUNTIME_DATA_LEN`] bytes, unhashed and unpadded (the attester
/// zero-pads it to the TEE's report-data field).
pub type EvidenceFn = Arc<dyn Fn(&[u8]) -> Result<String, BoxError> + Send + Sync>;

/// An [`EvidenceFn`] from an [`EvidenceProvider`] (e.g. `cocoon_attester::Attester`).
pub fn evidence_from<E: EvidenceProvider + Send + Sync + 'static>(provider: E) -> EvidenceFn {
    Arc::new(move |report_data: &[u8]| provider.evidence(report_data))
}

/// What the API serves.
#[derive(Clone)]
pub struct RestApi {
    /// Which routes are served.
    pub mode: ApiMode,
    /// Where `/cdh/resource/...` comes from (the agent's KBS service).
    pub resources: Arc<dyn ResourceSource>,
    /// Where `/aa/evidence` comes from, see [`EvidenceFn`].
    pub evidence: EvidenceFn,
    /// The `/info` document, served as is.
    pub info: serde_json::Value,
}

impl fmt::Debug for RestApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestApi")
            .field("mode", &self.mode)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Whether a peer may use the API: loopback only (`127.0.0.0/8`, `::1`, and `127.0.0.0/8`
/// mapped into IPv6 for dual-stack listeners).
pub fn peer_allowed(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A running API server. [`RestServer::shutdown`] (or dropping it) stops the workers, waits for
/// requests in flight, and closes the listener.
pub struct RestServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for RestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestServer")
            .field("addr", &self.addr)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// Serves `api` on `listener` (bound by the caller, normally to [`wire::DEFAULT_BIND`]) from
/// [`WORKERS`] threads. Fails if the listener has no address or a thread cannot be spawned.
pub fn serve(listener: TcpListener, api: RestApi) -> io::Result<RestServer> {
    let addr = listener.local_addr()?;
    let server = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
    let mut running = RestServer {
        addr,
        server: Arc::new(server),
        stop: Arc::new(AtomicBool::new(false)),
        failure: Arc::new(Mutex::new(None)),
        workers: Vec::with_capacity(WORKERS),
    };
    let api = Arc::new(api);
    for n in 0..WORKERS {
        let (server, stop, failure, api) = (
            running.server.clone(),
            running.stop.clone(),
            running.failure.clone(),
            api.clone(),
        );
        // On error, dropping `running` stops the workers already started.
        let worker = std::thread::Builder::new()
            .name(format!("rest-api-{n}"))
            .spawn(move || work(&server, &stop, &failure, &api))?;
        running.workers.push(worker);
    }
    Ok(running)
}

impl RestServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Why the server stopped accepting connections, if it did (tiny_http gives up on the
    /// first `accept` error, e.g. out of file descriptors).
    pub fn accept_error(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Stops the workers (after the requests in flight) and closes the listener.
    pub fn shutdown(mut self) {
        self.stop_workers();
    }

    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // One unblock per worker: each wakes exactly one `recv`, now or on its next call.
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        self.stop_workers();
        // The last `Arc<tiny_http::Server>` goes with `self`; its drop ends the accept thread.
    }
}

fn work(
    server: &tiny_http::Server,
    stop: &AtomicBool,
    failure: &Mutex<Option<String>>,
    api: &RestApi,
) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv() {
            Ok(request) => answer(api, request),
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert_with(|| e.to_string());
                    }
                }
                return;
            }
        }
    }
}

fn answer(api: &RestApi, request: tiny_http::Request) {
    let reply = handle(api, request.remote_addr(), request.method(), request.url());
    let mut headers = vec![header("Content-Type", reply.content_type)];
    if reply.status == 405 {
        headers.push(header("Allow", "GET"));
    }
    if reply.status == 200 {
        headers.push(header("Cache-Control", "no-store"));
    }
    let len = reply.body.len();
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(reply.status),
        headers.into_iter().flatten().collect(),
        Cursor::new(reply.body),
        Some(len),
        None,
    );
    // The peer may be gone; there is nobody to tell.
    let _ = request.respond(response);
}

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// One answer: status, content type and body (zeroized when dropped, it may be a secret).
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Zeroizing<Vec<u8>>,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const OCTETS: &str = "application/octet-stream";

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        body.push('\n');
        Self {
            status,
            content_type: TEXT,
            body: Zeroizing::new(body.into_bytes()),
        }
    }
}

/// Where a path leads.
enum Route<'a> {
    Info,
    Evidence,
    Token,
    /// What follows `/cdh/resource` (empty or starting with `/`).
    Resource(&'a str),
    OtherAa,
    OtherCdh,
    Unknown,
}

fn under<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    path.strip_prefix(root)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn route(path: &str) -> Route<'_> {
    if path == wire::INFO_PATH {
        Route::Info
    } else if path == wire::AA_EVIDENCE_PATH {
        Route::Evidence
    } else if path == wire::AA_TOKEN_PATH {
        Route::Token
    } else if let Some(rest) = under(path, wire::CDH_RESOURCE_PATH) {
        Route::Resource(rest)
    } else if under(path, wire::AA_ROOT).is_some() {
        Route::OtherAa
    } else if under(path, wire::CDH_ROOT).is_some() {
        Route::OtherCdh
    } else {
        Route::Unknown
    }
}

/// 404 for a route the mode does not serve (`feature` `None`: `/info`, served by any mode).
fn disabled(feature: Option<&str>, mode: ApiMode) -> Reply {
    let (what, want) = match feature {
        Some(f) => (f, format!("\"{f}\" or \"all\"")),
        None => ("REST", "attestation, resource or all".to_owned()),
    };
    Reply::text(
        404,
        format!(
            "the {what} API is disabled: set {} to {want} (it is \"{mode}\")",
            wire::MODE_SETTING
        ),
    )
}

/// Answers one request: peer check, route, mode gate, method, then the handler.
fn handle(
    api: &RestApi,
    peer: Option<&SocketAddr>,
    method: &tiny_http::Method,
    target: &str,
) -> Reply {
    if !peer.is_some_and(peer_allowed) {
        return Reply::text(403, "forbidden: this API answers loopback peers only");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = route(path);
    let mode = api.mode;
    match route {
        Route::Unknown => return Reply::text(404, format!("not found: {path}")),
        Route::Info if mode == ApiMode::None => return disabled(None, mode),
        Route::Evidence | Route::Token | Route::OtherAa if !mode.attestation() => {
            return disabled(Some("attestation"), mode)
        }
        Route::Resource(_) | Route::OtherCdh if !mode.resource() => {
            return disabled(Some("resource"), mode)
        }
        Route::Token => {
            return Reply::text(
                403,
                "forbidden: /aa/token is not served: the attestation token is the TEE's \
                 identity towards the KBS and is not handed to workloads",
            )
        }
        Route::OtherAa | Route::OtherCdh => return Reply::text(404, format!("not found: {path}")),
        _ => {}
    }
    if *method != tiny_http::Method::Get {
        return Reply::text(405, format!("method {method} not allowed: use GET"));
    }
    match route {
        Route::Info => Reply {
            status: 200,
            content_type: JSON,
            body: Zeroizing::new(api.info.to_string().into_bytes()),
        },
        Route::Evidence => evidence(api, query),
        Route::Resource(rest) => resource(api, rest),
        _ => Reply::text(404, format!("not found: {path}")),
    }
}

/// `GET /aa/evidence?runtime_data=...[&encoding=base64]`. As upstream: the runtime data's
/// bytes are the report data as is (no hashing), at most 64 bytes.
fn evidence(api: &RestApi, query: &str) -> Reply {
    let params = match parse_query(query) {
        Ok(p) => p,
        Err(e) => return Reply::text(400, e),
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    };
    let Some(raw) = param(wire::QUERY_RUNTIME_DATA) else {
        return Reply::text(400, "missing query parameter runtime_data");
    };
    let data = match param(wire::QUERY_ENCODING) {
        None => raw.to_vec(),
        Some(e) if e == wire::ENCODING_BASE64.as_bytes() => match URL_SAFE_NO_PAD.decode(raw) {
            Ok(d) => d,
            Err(e) => {
                return Reply::text(
                    400,
                    format!("runtime_data is not base64url without padding: {e}"),
                )
            }
        },
        Some(e) => {
            return Reply::text(
                400,
                format!(
                    "unsupported encoding {:?}: want base64 or none",
                    String::from_utf8_lossy(e)
                ),
            )
        }
    };
    if data.len() > wire::MAX_RUNTIME_DATA_LEN {
        return Reply::text(
            400,
            format!(
                "runtime_data is {} bytes; report data holds at most {} (hash it first)",
                data.len(),
                wire::MAX_RUNTIME_DATA_LEN
            ),
        );
    }
    match (api.evidence)(&data) {
        Ok(json) => Reply {
            status: 200,
            content_type: JSON,
            body: Zeroizing::new(json.into_bytes()),
        },
        Err(e) => Reply::text(500, format!("evidence: {e}")),
    }
}

/// `GET /cdh/resource/<repo>/<type>/<tag>` (`rest` is what follows `/cdh/resource`).
fn resource(api: &RestApi, rest: &str) -> Reply {
    const SHAPE: &str = "want /cdh/resource/<repo>/<type>/<tag>";
    let segments: Vec<&str> = match rest.strip_prefix('/') {
        Some(r) => r.split('/').collect(),
        None => Vec::new(),
    };
    let [repo, kind, tag] = segments.as_slice() else {
        return Reply::text(400, format!("invalid resource path: {SHAPE}"));
    };
    let mut decoded = Vec::with_capacity(3);
    for segment in [repo, kind, tag] {
        match percent_decode(segment, false).map(String::from_utf8) {
            Some(Ok(s)) => decoded.push(s),
            _ => {
                return Reply::text(
                    400,
                    format!("invalid resource path: bad percent-encoding or UTF-8; {SHAPE}"),
                )
            }
        }
    }
    let [repo, kind, tag] = decoded.as_slice() else {
        return Reply::text(400, format!("invalid resource path; {SHAPE}"));
    };
    let path = match ResourcePath::new(repo, kind, tag) {
        Ok(p) => p,
        Err(Error::BadResourceUri { reason, .. }) => {
            return Reply::text(400, format!("invalid resource path: {reason}"))
        }
        Err(e) => return Reply::text(400, format!("invalid resource path: {e}")),
    };
    match api.resources.get_resource(&format!("kbs:///{path}")) {
        Ok(bytes) => Reply {
            status: 200,
            content_type: OCTETS,
            body: bytes,
        },
        Err(e) => {
            let (status, reason) = kbs_status(&e);
            Reply::text(status, format!("{reason}: {e}"))
        }
    }
}

/// The HTTP status and a short reason for a KBS failure, by the error's stable
/// [`Error::reason`] label (so new error variants map without touching this).
fn kbs_status(e: &Error) -> (u16, &'static str) {
    match e.reason() {
        "not_found" => (404, "resource not found"),
        "denied" => (403, "the KBS denied the resource"),
        "unauthorized" => (403, "the KBS refused this guest's session"),
        "rejected" => (403, "the KBS rejected this guest's attestation"),
        "bad_uri" => (400, "invalid resource path"),
        "unreachable" => (503, "KBS unreachable"),
        "deadline" => (503, "KBS did not answer in time"),
        "config" => (500, "the KBS client is misconfigured"),
        "evidence" => (500, "the attester failed"),
        "internal" => (500, "internal error"),
        // kbs_backend, http_5xx, http_4xx, malformed, decrypt, and anything new.
        _ => (502, "KBS request failed"),
    }
}

/// `a=b&c=d` with strict percent-decoding (and `+` as space), names and values as bytes.
/// Decoded query parameters, in order: `(name, value)`.
type Params = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_query(query: &str) -> Result<Params, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(k, true), percent_decode(v, true)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!("bad percent-encoding in query parameter {k:?}")),
            }
        })
        .collect()
}

/// Strict percent-decoding: `%` must be followed by two hex digits. `None` if it is not.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
    use std::time::{Duration, Instant};

    const SECRET: &[u8] = b"\x00binary-secret\xff";

    /// A KBS stand-in: one resource, and one URI per failure kind.
    struct FakeKbs;

    impl ResourceSource for FakeKbs {
        fn get_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
            let url = "http://kbs:8080/kbs/v0/resource/x".to_owned();
            let path = uri.trim_start_matches("kbs:///").to_owned();
            let kbs_error = |kind: &str| {
                format!("https://github.com/confidential-containers/kbs/errors/{kind}")
            };
            match uri {
                "kbs:///default/key/1" => Ok(Zeroizing::new(SECRET.to_vec())),
                "kbs:///default/key/a+b" => Ok(Zeroizing::new(b"plus".to_vec())),
                "kbs:///default/key/denied" => Err(Error::Denied {
                    path,
                    url,
                    status: 401,
                    kind: kbs_error("PolicyDeny"),
                    detail: "policy".to_owned(),
                }),
                "kbs:///default/key/session" => Err(Error::SessionRejected {
                    url,
                    status: 401,
                    kind: kbs_error("TokenVerifierError"),
                    detail: "expired".to_owned(),
                }),
                "kbs:///default/key/rejected" => Err(Error::Status {
                    step: "attest",
                    url,
                    status: 401,
                    attempts: 1,
                    kind: kbs_error("AttestationFailed"),
                    detail: "bad evidence".to_owned(),
                }),
                "kbs:///default/key/broken" => Err(Error::Status {
                    step: "resource",
                    url,
                    status: 500,
                    attempts: 3,
                    kind: "HTTP 500".to_owned(),
                    detail: "oops".to_owned(),
                }),
                "kbs:///default/key/backend" => Err(Error::ResourceBackend {
                    path,
                    url,
                    status: 401,
                    kind: kbs_error("PluginInternalError"),
                    detail: "storage failed".to_owned(),
                }),
                "kbs:///default/key/down" => Err(Error::Unreachable {
                    step: "auth",
                    url,
                    attempts: 3,
                    reason: "connection refused".to_owned(),
                }),
                "kbs:///default/key/slow" => Err(Error::Deadline {
                    step: "resource",
                    url,
                    deadline: Duration::from_secs(60),
                    attempts: 4,
                    last: "timeout".to_owned(),
                }),
                _ => Err(Error::NotFound {
                    path,
                    url,
                    status: 404,
                    kind: kbs_error("ResourceNotFound"),
                    detail: "no such resource".to_owned(),
                }),
            }
        }
    }

    fn api(mode: ApiMode) -> RestApi {
        RestApi {
            mode,
            resources: Arc::new(FakeKbs),
            evidence: Arc::new(|data: &[u8]| {
                if data == b"fail" {
                    return Err("no TEE here".into());
                }
                Ok(serde_json::json!({"report_data": URL_SAFE_NO_PAD.encode(data)}).to_string())
            }),
            info: serde_json::json!({"version": "test", "feature": mode.as_str()}),
        }
    }

    fn start(mode: ApiMode) -> RestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        serve(listener, api(mode)).unwrap()
    }

    struct Answer {
        status: u16,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    impl Answer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// One raw HTTP/1.1 request on loopback (raw, so targets reach the server unnormalised).
    fn request(addr: SocketAddr, method: &str, target: &str) -> io::Result<Answer> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::other("no header end"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other("no status"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    }

    fn get(server: &RestServer, target: &str) -> Answer {
        request(server.local_addr(), "GET", target).unwrap()
    }

    #[test]
    fn peers() {
        let p = |s: &str| peer_allowed(&s.parse().unwrap());
        assert!(p("127.0.0.1:5000"));
        assert!(p("127.1.2.3:5000"));
        assert!(p("[::1]:5000"));
        assert!(p("[::ffff:127.0.0.1]:5000"));
        assert!(!p("10.0.2.15:5000"));
        assert!(!p("0.0.0.0:5000"));
        assert!(!p("[::ffff:10.0.2.15]:5000"));
        assert!(!p("[fe80::1]:5000"));
        assert!(!p("[::]:5000"));
        // And `handle` applies it (and refuses a peer without an IP address).
        let a = api(ApiMode::All);
        let remote = SocketAddr::from((Ipv4Addr::new(10, 0, 2, 15), 40000));
        for peer in [Some(&remote), None] {
            let r = handle(&a, peer, &tiny_http::Method::Get, "/info");
            assert_eq!(r.status, 403);
        }
        let local = SocketAddr::from((Ipv6Addr::LOCALHOST, 40000));
        let r = handle(&a, Some(&local), &tiny_http::Method::Get, "/info");
        assert_eq!(r.status, 200);
    }

    #[test]
    fn modes_parse() {
        for m in [
            ApiMode::None,
            ApiMode::Attestation,
            ApiMode::Resource,
            ApiMode::All,
        ] {
            assert_eq!(m.as_str().parse::<ApiMode>().unwrap(), m);
        }
        let e = "everything".parse::<ApiMode>().unwrap_err();
        assert!(
            e.to_string().contains("agent.guest_components_rest_api"),
            "{e}"
        );
    }

    #[test]
    fn all_routes() {
        let server = start(ApiMode::All);

        let a = get(&server, "/cdh/resource/default/key/1");
        assert_eq!(a.status, 200);
        assert_eq!(a.body, SECRET);
        assert_eq!(a.headers["content-type"], "application/octet-stream");
        assert_eq!(a.headers["cache-control"], "no-store");

        // Percent-decoded segments ('+' stays a plus in paths).
        let a = get(&server, "/cdh/resource/%64efault/key/a+b");
        assert_eq!((a.status, a.text().as_str()), (200, "plus"));
        let a = get(&server, "/cdh/resource/%64efault/key/a%2Bb");
        assert_eq!((a.status, a.text().as_str()), (200, "plus"));

        let a = get(&server, "/info");
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v, serde_json::json!({"version": "test", "feature": "all"}));

        let a = get(&server, "/aa/evidence?runtime_data=hello%20world");
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["report_data"], URL_SAFE_NO_PAD.encode(b"hello world"));

        // '+' is a space in queries; base64 encoding gives arbitrary bytes.
        let a = get(&server, "/aa/evidence?x=1&runtime_data=a+b");
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["report_data"], URL_SAFE_NO_PAD.encode(b"a b"));
        let raw = [0xffu8; 48];
        let target = format!(
            "/aa/evidence?runtime_data={}&encoding=base64",
            URL_SAFE_NO_PAD.encode(raw)
        );
        let v: serde_json::Value = serde_json::from_slice(&get(&server, &target).body).unwrap();
        assert_eq!(v["report_data"], URL_SAFE_NO_PAD.encode(raw));

        // 64 bytes pass, 65 do not.
        let a = get(
            &server,
            &format!("/aa/evidence?runtime_data={}", "a".repeat(64)),
        );
        assert_eq!(a.status, 200);
        let a = get(
            &server,
            &format!("/aa/evidence?runtime_data={}", "a".repeat(65)),
        );
        assert_eq!(a.status, 400);
        assert!(a.text().contains("at most 64"), "{}", a.text());

        for bad in [
            "/aa/evidence",
            "/aa/evidence?runtime=x",
            "/aa/evidence?runtime_data=%zz",
            "/aa/evidence?runtime_data=%4",
            "/aa/evidence?runtime_data=!!&encoding=base64",
            "/aa/evidence?runtime_data=x&encoding=hex",
        ] {
            assert_eq!(get(&server, bad).status, 400, "{bad}");
        }
        let a = get(&server, "/aa/evidence?runtime_data=fail");
        assert_eq!(a.status, 500);
        assert!(a.text().contains("no TEE here"));

        server.shutdown();
    }

    #[test]
    fn token_is_refused() {
        let server = start(ApiMode::All);
        for target in ["/aa/token?token_type=kbs", "/aa/token"] {
            let a = get(&server, target);
            assert_eq!(a.status, 403, "{target}");
            assert!(a.text().contains("TEE's identity"), "{}", a.text());
        }
        let a = request(server.local_addr(), "POST", "/aa/token").unwrap();
        assert_eq!(a.status, 403);
        // Attestation disabled: the whole /aa tree is a 404 naming the setting.
        let server = start(ApiMode::Resource);
        let a = get(&server, "/aa/token?token_type=kbs");
        assert_eq!(a.status, 404);
        assert!(a.text().contains("agent.guest_components_rest_api"));
    }

    #[test]
    fn modes_gate_routes() {
        let cases: [(ApiMode, [u16; 3]); 4] = [
            // resource, evidence, info
            (ApiMode::None, [404, 404, 404]),
            (ApiMode::Attestation, [404, 200, 200]),
            (ApiMode::Resource, [200, 404, 200]),
            (ApiMode::All, [200, 200, 200]),
        ];
        for (mode, want) in cases {
            let server = start(mode);
            let got = [
                "/cdh/resource/default/key/1",
                "/aa/evidence?runtime_data=x",
                "/info",
            ]
            .map(|t| {
                let a = get(&server, t);
                if a.status == 404 {
                    assert!(
                        a.text().contains("agent.guest_components_rest_api"),
                        "{mode} {t}: {}",
                        a.text()
                    );
                    assert!(a.text().contains(mode.as_str()), "{}", a.text());
                }
                a.status
            });
            assert_eq!(got, want, "{mode}");
        }
    }

    #[test]
    fn kbs_errors_map_to_statuses() {
        let server = start(ApiMode::Resource);
        for (tag, status, reason) in [
            ("nothere", 404, "resource not found"),
            ("denied", 403, "denied"),
            ("session", 403, "session"),
            ("rejected", 403, "attestation"),
            ("broken", 502, "KBS request failed"),
            ("backend", 502, "KBS request failed"),
            ("down", 503, "KBS unreachable"),
            ("slow", 503, "in time"),
        ] {
            let a = get(&server, &format!("/cdh/resource/default/key/{tag}"));
            assert_eq!(a.status, status, "{tag}: {}", a.text());
            assert!(a.text().contains(reason), "{tag}: {}", a.text());
            assert!(a.headers["content-type"].starts_with("text/plain"));
            assert!(!a.headers.contains_key("cache-control"));
        }
    }

    #[test]
    fn bad_paths_methods_and_unknowns() {
        let server = start(ApiMode::All);
        for bad in [
            "/cdh/resource",
            "/cdh/resource/",
            "/cdh/resource/default/key",
            "/cdh/resource/default/key/1/extra",
            "/cdh/resource/default//1",
            "/cdh/resource/default/key/",
            "/cdh/resource/default/../1",
            "/cdh/resource/default/%2E%2E/1",
            "/cdh/resource/default/./1",
            "/cdh/resource/default/a%2Fb/1",
            "/cdh/resource/default/key/%zz",
            "/cdh/resource/default/key/%ff",
            "/cdh/resource/default/key/%3F",
            "/cdh/resource/default/key/a%20b",
        ] {
            let a = get(&server, bad);
            assert_eq!(a.status, 400, "{bad}: {}", a.text());
        }
        for unknown in [
            "/",
            "/infox",
            "/info/x",
            "/aa",
            "/aa/aael",
            "/cdh/other/x",
            "/aab/evidence",
        ] {
            assert_eq!(get(&server, unknown).status, 404, "{unknown}");
        }
        for method in ["POST", "PUT", "DELETE"] {
            for target in [
                "/info",
                "/cdh/resource/default/key/1",
                "/aa/evidence?runtime_data=x",
            ] {
                let a = request(server.local_addr(), method, target).unwrap();
                assert_eq!(a.status, 405, "{method} {target}");
                assert_eq!(a.headers["allow"], "GET");
            }
        }
    }

    #[test]
    fn shutdown_and_drop_stop_the_server() {
        let server = start(ApiMode::All);
        let addr = server.local_addr();
        assert_eq!(request(addr, "GET", "/info").unwrap().status, 200);
        // Shutdown returns (the workers were joined), then the port stops answering.
        server.shutdown();
        let deadline = Instant::now() + Duration::from_secs(5);
        while request(addr, "GET", "/info").is_ok() {
            assert!(Instant::now() < deadline, "still answering after shutdown");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drop does the same.
        let server = start(ApiMode::All);
        let addr = server.local_addr();
        assert!(server.accept_error().is_none());
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(5);
        while request(addr, "GET", "/info").is_ok() {
            assert!(Instant::now() < deadline, "still answering after drop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b+c", false).unwrap(), b"a b+c");
        assert_eq!(percent_decode("a%20b+c", true).unwrap(), b"a b c");
        assert_eq!(percent_decode("%fF%00", false).unwrap(), [0xff, 0]);
        for bad in ["%", "%2", "%zz", "a%g0"] {
            assert!(percent_decode(bad, true).is_none(), "{bad}");
        }
        let q = parse_query("a=1&&b&c=%3D").unwrap();
        assert_eq!(
            q,
            [
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), Vec::new()),
                (b"c".to_vec(), b"=".to_vec())
            ]
        );
    }
}
