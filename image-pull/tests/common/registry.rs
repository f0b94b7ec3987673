//! A real Debian `docker-registry` on 127.0.0.1 (a free port), OCI layouts written by
//! hand, pushed (and encrypted) with real `skopeo`. Dependencies: std, serde_json, sha2,
//! hex, tempfile — so other crates' tests can include this file with `#[path]`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// Prints SKIPPED and returns true, or panics under CI=true / COCOON_REQUIRE_ALL=1.
pub fn skip(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("COCOON_REQUIRE_ALL").as_deref() == Ok("1")
    {
        panic!("required under CI: {why}");
    }
    println!("SKIPPED: {why}");
    true
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True when docker-registry and skopeo (and `extra`) are there; else skips (or fails
/// under CI).
pub fn tools(extra: &[&str]) -> bool {
    for t in ["docker-registry", "skopeo"].iter().chain(extra) {
        if !have(t) {
            return !skip(&format!("{t} not installed (scripts/setup.sh installs it)"));
        }
    }
    true
}

pub fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// A running registry; killed on drop.
pub struct Reg {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Reg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `docker-registry serve` on a free loopback port, with htpasswd auth when a
/// line is given.
pub fn start_registry(htpasswd: Option<&str>) -> Reg {
    start_registry_auth(|dir| match htpasswd {
        Some(line) => {
            let p = dir.join("htpasswd");
            std::fs::write(&p, line).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                p.display()
            )
        }
        None => String::new(),
    })
}

/// Starts a registry with extra YAML from `extra(dir)` (files in `dir`) appended right
/// after `http: addr:` — an `auth:` section, or [`tls_yaml`] (then more `http:` keys).
pub fn start_registry_auth(auth: impl FnOnce(&Path) -> String) -> Reg {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let auth = auth(dir.path());
    let cfg = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
        dir.path().join("data").display()
    );
    let cfg_path = dir.path().join("config.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Reg {
        child,
        addr: addr.clone(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

/// `skopeo copy [extra...] oci:<layout>:<tag> docker://<dest>` (plain HTTP, digests kept
/// unless `extra` encrypts).
pub fn push(layout: &Path, tag: &str, dest: &str, creds: Option<&str>, extra: &[&str]) {
    let mut c = Command::new("skopeo");
    c.args(["copy", "--all", "--dest-tls-verify=false"]);
    if extra.is_empty() {
        c.arg("--preserve-digests");
    }
    c.args(extra);
    if let Some(cr) = creds {
        c.args(["--dest-creds", cr]);
    }
    c.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"));
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// registries.conf text marking these registries insecure (plain HTTP).
pub fn insecure_conf_text(addrs: &[&str]) -> String {
    let mut s = String::new();
    for a in addrs {
        s.push_str(&format!(
            "[[registry]]\nlocation = \"{a}\"\ninsecure = true\n"
        ));
    }
    s
}

/// One layer of a hand-written image: the blob as stored, its media type and the
/// uncompressed tar's digest.
pub struct LayerBlob {
    pub media_type: String,
    pub blob: Vec<u8>,
    pub diff_id: String,
}

impl LayerBlob {
    pub fn gzip(tar: &[u8]) -> LayerBlob {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).unwrap();
        LayerBlob {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            blob: gz.finish().unwrap(),
            diff_id: digest_of(tar),
        }
    }
    pub fn zstd(tar: &[u8]) -> LayerBlob {
        LayerBlob {
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            blob: zstd::encode_all(tar, 3).unwrap(),
            diff_id: digest_of(tar),
        }
    }
    pub fn plain(tar: &[u8]) -> LayerBlob {
        LayerBlob {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            blob: tar.to_vec(),
            diff_id: digest_of(tar),
        }
    }
}

/// An OCI image layout directory with one image tagged `tag`.
pub struct Layout {
    pub dir: tempfile::TempDir,
    pub manifest_digest: String,
    pub config: serde_json::Value,
}

impl Layout {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn write_blob(dir: &Path, b: &[u8]) -> String {
    let d = digest_of(b);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), b).unwrap();
    d
}

/// Writes an OCI layout holding one linux/amd64 image of `layers` (bottom first) with
/// `process` as the config's `config` object.
pub fn layout(tag: &str, layers: &[LayerBlob], process: serde_json::Value) -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()}
    });
    let cbytes = config.to_string();
    let cd = write_blob(&root, cbytes.as_bytes());
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": l.media_type, "digest": write_blob(&root, &l.blob), "size": l.blob.len()
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cbytes.len()},
        "layers": descs,
    })
    .to_string();
    let md = write_blob(&root, manifest.as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}
    }]})
    .to_string();
    std::fs::write(root.join("index.json"), index).unwrap();
    Layout {
        dir,
        manifest_digest: md,
        config,
    }
}

/// A docker distribution token server (the protocol of
/// <https://distribution.github.io/distribution/spec/auth/token/>) for one user: answers
/// `GET /token?service=..&scope=..` with an RS256 JWT (x5c = a self-signed cert the
/// registry trusts, signed by the openssl CLI) granting what the scope asks, when the
/// request carries the user's basic credentials; 401 otherwise. Counts issued tokens.
pub struct TokenServer {
    pub realm: String,
    pub issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub cert: PathBuf,
    _dir: tempfile::TempDir,
}

pub const TOKEN_SERVICE: &str = "cocoon-test-registry";
pub const TOKEN_ISSUER: &str = "cocoon-test-token-issuer";

impl TokenServer {
    pub fn start(user: &str, password: &str) -> TokenServer {
        use base64::Engine as _;
        use std::io::{BufRead, BufReader, Write};
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=cocoon-test-token-issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = b64.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let want_auth = format!("Basic {}", b64.encode(format!("{user}:{password}")));
        let (count, key_path, sig_dir) = (issued.clone(), key.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") && v.trim() == want_auth {
                            authorized = true;
                        }
                    }
                }
                if !authorized {
                    let body =
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("");
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut access = Vec::new();
                for pair in query.split('&') {
                    if let Some(scope) = pair.strip_prefix("scope=") {
                        let scope = percent_decode(scope);
                        let parts: Vec<&str> = scope.split(':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({
                                "type": parts[0], "name": parts[1],
                                "actions": parts[2].split(',').collect::<Vec<_>>()
                            }));
                        }
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let claims = serde_json::json!({
                    "iss": TOKEN_ISSUER, "sub": "alice", "aud": TOKEN_SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{n}"),
                    "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url.encode(header.to_string()),
                    b64url.encode(claims.to_string())
                );
                let input = sig_dir.join(format!("in-{n}"));
                std::fs::write(&input, &signing_input).unwrap();
                let sig = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key_path)
                    .arg(&input)
                    .output()
                    .unwrap()
                    .stdout;
                let token = format!("{signing_input}.{}", b64url.encode(sig));
                let body =
                    serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                        .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            realm,
            issued,
            cert,
            _dir: dir,
        }
    }

    /// The registry's `auth:` section trusting this server.
    pub fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.cert.display()
        )
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// YAML for [`start_registry_auth`]: serve HTTPS with this certificate and key.
pub fn tls_yaml(cert: &Path, key: &Path) -> String {
    format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    )
}

/// An HTTP `CONNECT` proxy on loopback (what `https_proxy` points at), counting tunnels.
pub struct ConnectProxy {
    pub url: String,
    pub tunnels: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        use std::io::{BufRead, BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tunnels = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = tunnels.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap_or(0);
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let mut parts = line.split_whitespace();
                    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
                        let _ = client.write_all(
                            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
                        );
                        return;
                    };
                    let Ok(upstream) = std::net::TcpStream::connect(target) else {
                        let _ = client
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                        return;
                    };
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
                    let (mut c2, mut u2) =
                        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    let mut upstream = upstream;
                    let t = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut u2, &mut c2);
                        let _ = c2.shutdown(std::net::Shutdown::Write);
                    });
                    // Bytes the client sent after the CONNECT head are in the reader's buffer.
                    let _ = upstream.write_all(reader.buffer());
                    let _ = std::io::copy(&mut client, &mut upstream);
                    let _ = upstream.shutdown(std::net::Shutdown::Write);
                    let _ = t.join();
                });
            }
        });
        ConnectProxy { url, tunnels }
    }
}
