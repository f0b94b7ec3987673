//! A small, bounded HTTP/1.1 server: one acceptor thread, a fixed pool of workers fed
//! through a bounded queue (connections beyond it are closed at once), one request per
//! connection (`Connection: close`), `Content-Length` bodies only, read/write timeouts,
//! optional TLS with rustls. Hand-rolled rather than tiny_http so that a fault can close a
//! connection without a byte of answer, and so TLS uses the workspace's rustls 0.23.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::protocol::{MAX_BODY, MAX_HEAD};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for a worker, per worker.
const QUEUE_PER_WORKER: usize = 16;

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The target's path, without the query.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of cookie `name` from any `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"').to_owned())
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            content_type: None,
            headers: vec![],
            body: vec![],
        }
    }

    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: Some("application/json"),
            headers: vec![],
            body: body.into().into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// What a handler wants done with a request.
pub enum Reply {
    Respond(Response),
    /// Close the connection without answering anything.
    Close,
}

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Reply;
}

pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    workers: usize,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`Server`] from another thread.
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Stopper {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor; it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

impl Server {
    pub fn bind(
        addr: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        workers: usize,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            tls,
            workers: workers.max(1),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            addr: self.addr,
        }
    }

    /// Serve until [`Stopper::stop`]; lets the workers finish what they hold.
    pub fn serve(self, handler: Arc<dyn Handler>) {
        let (tx, rx) = sync_channel::<TcpStream>(self.workers * QUEUE_PER_WORKER);
        let rx = Arc::new(Mutex::new(rx));
        let workers: Vec<_> = (0..self.workers)
            .map(|_| {
                let rx = rx.clone();
                let handler = handler.clone();
                let tls = self.tls.clone();
                thread::spawn(move || worker(&rx, handler.as_ref(), tls))
            })
            .collect();
        for conn in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            match tx.try_send(conn) {
                Ok(()) => {}
                // Bounded: a full queue closes the connection.
                Err(TrySendError::Full(conn)) => {
                    let _ = conn.shutdown(Shutdown::Both);
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        drop(tx);
        for w in workers {
            let _ = w.join();
        }
    }
}

fn worker(
    rx: &Mutex<Receiver<TcpStream>>,
    handler: &dyn Handler,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(tcp) = next else { return };
        let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                let mut tcp = tcp;
                serve_one(&mut tcp, handler);
                let _ = tcp.shutdown(Shutdown::Both);
            }
            Some(cfg) => {
                let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                    continue;
                };
                let mut s = rustls::StreamOwned::new(conn, tcp);
                if serve_one(&mut s, handler) {
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
                let _ = s.sock.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Read one request, answer it. False if nothing was answered.
fn serve_one<S: Read + Write>(s: &mut S, handler: &dyn Handler) -> bool {
    let req = match read_request(s) {
        Ok(req) => req,
        Err(ReadError::Io) => return false,
        Err(ReadError::Bad(status, why)) => {
            let _ = write_response(s, &Response::json(status, format!("{{\"error\":{why:?}}}")));
            return true;
        }
    };
    match handler.handle(req) {
        Reply::Respond(resp) => write_response(s, &resp).is_ok(),
        Reply::Close => false,
    }
}

enum ReadError {
    Io,
    Bad(u16, &'static str),
}

fn read_request<S: Read>(s: &mut S) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Bad(431, "request head too large"));
        }
        let n = s.read(&mut chunk).map_err(|_| ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ReadError::Bad(400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err(ReadError::Bad(400, "bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(505, "HTTP/1.x only"));
    }
    let mut headers = vec![];
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Err(ReadError::Bad(400, "bad header line"));
        };
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let mut req = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: vec![],
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|te| !te.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Bad(411, "send a Content-Length body"));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(400, "bad Content-Length"))?,
    };
    if len > MAX_BODY {
        return Err(ReadError::Bad(413, "body too large"));
    }
    let mut body = buf.split_off(head_end + 4);
    if body.len() < len {
        let have = body.len();
        body.resize(len, 0);
        s.read_exact(&mut body[have..]).map_err(|_| ReadError::Io)?;
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn write_response<S: Write>(s: &mut S, resp: &Response) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    if let Some(ct) = resp.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    ));
    s.write_all(head.as_bytes())?;
    s.write_all(&resp.body)?;
    s.flush()
}

/// A rustls server configuration from PEM files (certificate chain, private key).
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading certificates from {cert_pem}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {cert_pem}"));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| format!("reading the private key from {key_pem}: {e}"))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(raw: &[u8]) -> Result<Request, u16> {
        let mut r = raw;
        read_request(&mut r).map_err(|e| match e {
            ReadError::Io => 0,
            ReadError::Bad(s, _) => s,
        })
    }

    #[test]
    fn requests() {
        let req = parse(
            b"POST /kbs/v0/auth?x=1 HTTP/1.1\r\nHost: h\r\nCookie: a=b; kbs-session-id=abc\r\nContent-Length: 4\r\n\r\nbodyEXTRA",
        )
        .unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str(), req.query.as_str()),
            ("POST", "/kbs/v0/auth", "x=1")
        );
        assert_eq!(req.body, b"body");
        assert_eq!(req.cookie("kbs-session-id").as_deref(), Some("abc"));
        assert_eq!(req.cookie("a").as_deref(), Some("b"));
        assert_eq!(req.cookie("c"), None);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort").err(),
            Some(0)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").err(),
            Some(411)
        );
        assert_eq!(parse(b"GET / SPDY\r\n\r\n").err(), Some(505));
        assert_eq!(parse(b"GARBAGE\r\n\r\n").err(), Some(400));
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(parse(big.as_bytes()).err(), Some(413));
    }
}
