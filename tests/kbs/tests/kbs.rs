#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `cocoon-test-kbs` binary, started as a process and spoken to over HTTP by a small
//! client written here (its own binding text, its own JWE decryption), so that the
//! double's protocol is checked independently of its implementation.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use aes_kw::KekAes256;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384};

const ERR: &str = "https://github.com/confidential-containers/kbs/errors/";

struct Kbs {
    child: Child,
    url: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Drop for Kbs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resources() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in [
        ("default/key/1", &b"key one"[..]),
        ("default/key/2", b"key two"),
        ("default/key/secret", b"do not release"),
        ("other/key/1", b"other"),
        ("default/cert/empty", b""),
    ] {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    dir
}

fn spawn(args: &[&str], dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon-test-kbs"))
        .arg("--resources")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .to_owned();
    (child, url)
}

impl Kbs {
    fn start(args: &[&str]) -> Self {
        Self::start_in(resources(), args)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Self {
        let (child, url) = spawn(args, dir.path());
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Self {
            child,
            url,
            agent: agent(),
            _dir: dir,
        }
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = call(
            &self.agent,
            &self.url,
            method,
            path,
            None,
            body.as_ref(),
            None,
        );
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    fn fault(&self, mode: &str) {
        self.admin("POST", "/test/fault", Some(json!({ "mode": mode })));
    }

    fn stats(&self) -> Value {
        self.admin("GET", "/test/stats", None)
    }

    fn client(&self) -> Client {
        Client::new(&self.agent, &self.url)
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    set_cookie: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// Asserts a Trustee error answer.
    fn trustee_error(&self, status: u16, kind: &str, detail: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.json(),
            json!({"type": format!("{ERR}{kind}"), "detail": detail}),
            "{self:?}"
        );
    }
}

fn try_call(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&Value>,
    bearer: Option<&str>,
) -> Result<Answer, String> {
    let mut req = agent.request(method, &format!("{base}{path}"));
    if let Some(c) = cookie {
        req = req.set("Cookie", &format!("kbs-session-id={c}"));
    }
    if let Some(t) = bearer {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
    };
    Ok(Answer {
        status: resp.status(),
        set_cookie: resp.header("set-cookie").map(str::to_owned),
        content_type: resp.header("content-type").map(str::to_owned),
        body: resp.into_string().unwrap(),
    })
}

fn call(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&Value>,
    bearer: Option<&str>,
) -> Answer {
    try_call(agent, base, method, path, cookie, body, bearer)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A TEE key, and the client side of the protocol.
struct TeeKey {
    secret: p256::SecretKey,
    x: String,
    y: String,
}

impl TeeKey {
    fn new() -> Self {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let p = secret.public_key().to_encoded_point(false);
        Self {
            x: URL_SAFE_NO_PAD.encode(p.x().unwrap()),
            y: URL_SAFE_NO_PAD.encode(p.y().unwrap()),
            secret,
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":self.x,"y":self.y})
    }

    /// The binding text, written out by hand in canonical (sorted) form.
    fn report_data(&self, nonce: &str, additional: &str) -> String {
        let text = format!(
            r#"{{"additional-evidence":{},"nonce":"{nonce}","tee-pubkey":{{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"{}","y":"{}"}}}}"#,
            Value::String(additional.into()),
            self.x,
            self.y
        );
        STANDARD.encode(Sha384::digest(text.as_bytes()))
    }

    /// Decrypt a flattened JWE (`ECDH-ES+A256KW`, `A256GCM`).
    fn decrypt(&self, jwe: &Value) -> Result<Vec<u8>, &'static str> {
        let b = |k: &str| URL_SAFE_NO_PAD.decode(jwe[k].as_str().unwrap()).unwrap();
        let protected = jwe["protected"].as_str().unwrap();
        let header: Value = serde_json::from_slice(&b("protected")).unwrap();
        assert_eq!(
            (header["alg"].as_str(), header["enc"].as_str()),
            (Some("ECDH-ES+A256KW"), Some("A256GCM"))
        );
        let epk_x = URL_SAFE_NO_PAD
            .decode(header["epk"]["x"].as_str().unwrap())
            .unwrap();
        let epk_y = URL_SAFE_NO_PAD
            .decode(header["epk"]["y"].as_str().unwrap())
            .unwrap();
        let mut sec1 = vec![4u8];
        sec1.extend(epk_x);
        sec1.extend(epk_y);
        let epk = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| "epk")?;
        let z = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), epk.as_affine());
        // Concat KDF, one round: counter, Z, AlgorithmID, PartyU, PartyV, keydatalen.
        let mut h = Sha256::new();
        h.update([0, 0, 0, 1]);
        h.update(z.raw_secret_bytes());
        h.update([0, 0, 0, 14]);
        h.update(b"ECDH-ES+A256KW");
        h.update([0; 8]);
        h.update([0, 0, 1, 0]);
        let kek: [u8; 32] = h.finalize().into();
        let cek = KekAes256::from(kek)
            .unwrap_vec(&b("encrypted_key"))
            .map_err(|_| "key unwrap")?;
        let iv: [u8; 12] = b("iv").try_into().map_err(|_| "iv")?;
        let tag = b("tag");
        let mut buf = b("ciphertext");
        Aes256Gcm::new_from_slice(&cek)
            .unwrap()
            .decrypt_in_place_detached(
                &iv.into(),
                protected.as_bytes(),
                &mut buf,
                tag.as_slice().into(),
            )
            .map_err(|_| "decrypt")?;
        Ok(buf)
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
    key: TeeKey,
    cookie: Option<String>,
    nonce: Option<String>,
}

impl Client {
    fn new(agent: &ureq::Agent, base: &str) -> Self {
        Self {
            agent: agent.clone(),
            base: base.to_owned(),
            key: TeeKey::new(),
            cookie: None,
            nonce: None,
        }
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        call(
            &self.agent,
            &self.base,
            "POST",
            path,
            self.cookie.as_deref(),
            Some(&body),
            None,
        )
    }

    fn auth_with(&mut self, body: Value) -> Answer {
        let a = self.post("/kbs/v0/auth", body);
        if a.status == 200 {
            let sc = a.set_cookie.clone().expect("Set-Cookie");
            let (pair, attrs) = sc.split_once(';').unwrap();
            assert!(attrs.trim().starts_with("Expires="), "{sc}");
            assert!(attrs.trim().ends_with(" GMT"), "{sc}");
            let id = pair.strip_prefix("kbs-session-id=").unwrap();
            assert_eq!(id.len(), 32, "uuid simple: {id}");
            self.cookie = Some(id.to_owned());
            let nonce = a.json()["nonce"].as_str().unwrap().to_owned();
            self.nonce = Some(nonce);
        }
        a
    }

    fn auth(&mut self) -> Answer {
        self.auth_with(json!({
            "version": "0.4.0",
            "tee": "sample",
            "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512"]},
        }))
    }

    fn evidence(&self, nonce: &str) -> Value {
        json!({"svn": "1", "report_data": self.key.report_data(nonce, "")})
    }

    fn attest_with(
        &self,
        runtime_nonce: &str,
        jwk: Value,
        primary: Value,
        additional: &str,
    ) -> Answer {
        self.post(
            "/kbs/v0/attest",
            json!({
                "init-data": null,
                "runtime-data": {"nonce": runtime_nonce, "tee-pubkey": jwk},
                "tee-evidence": {"primary_evidence": primary, "additional_evidence": additional},
            }),
        )
    }

    fn attest(&self) -> Answer {
        let nonce = self.nonce.clone().unwrap();
        self.attest_with(&nonce, self.key.jwk(), self.evidence(&nonce), "")
    }

    fn handshake(&mut self) -> String {
        assert_eq!(self.auth().status, 200);
        let a = self.attest();
        assert_eq!(a.status, 200, "{a:?}");
        a.json()["token"].as_str().unwrap().to_owned()
    }

    fn get(&self, path: &str) -> Answer {
        call(
            &self.agent,
            &self.base,
            "GET",
            path,
            self.cookie.as_deref(),
            None,
            None,
        )
    }

    fn resource(&self, path: &str) -> Result<Vec<u8>, &'static str> {
        let a = self.get(&format!("/kbs/v0/resource/{path}"));
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        let jwe = a.json();
        let keys: Vec<&String> = jwe.as_object().unwrap().keys().collect();
        let mut want = vec!["ciphertext", "encrypted_key", "iv", "protected", "tag"];
        want.sort();
        assert_eq!(keys, want, "flattened JWE members");
        self.key.decrypt(&jwe)
    }
}

fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[test]
fn happy_path_resource_decrypts() {
    let kbs = Kbs::start(&["--token-ttl", "120"]);
    let mut c = kbs.client();
    let a = c.auth();
    assert_eq!(a.status, 200, "{a:?}");
    let challenge = a.json();
    assert_eq!(challenge["extra-params"], json!(""));
    let nonce = STANDARD
        .decode(challenge["nonce"].as_str().unwrap())
        .unwrap();
    assert_eq!(nonce.len(), 32);

    let a = c.attest();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a
        .set_cookie
        .as_deref()
        .unwrap()
        .starts_with(&format!("kbs-session-id={};", c.cookie.as_deref().unwrap())));
    let token = a.json()["token"].as_str().unwrap().to_owned();
    let cl = claims(&token);
    assert_eq!(
        cl["exp"].as_u64().unwrap() - cl["iat"].as_u64().unwrap(),
        120
    );
    assert_eq!(cl["tee-pubkey"], c.key.jwk());

    // The token verifies with the key the double publishes for tests.
    let jwk = kbs.admin("GET", "/test/token-key", None);
    let mut sec1 = vec![4u8];
    sec1.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
    sec1.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    use p256::ecdsa::signature::Verifier;
    vk.verify(input.as_bytes(), &sig).unwrap();

    assert_eq!(c.resource("default/key/1").unwrap(), b"key one");
    assert_eq!(c.resource("default/key/2").unwrap(), b"key two");
    assert_eq!(c.resource("default/cert/empty").unwrap(), b"");
    assert_eq!(
        kbs.stats(),
        json!({"auths":1,"attests":1,"handshakes":1,"resource_gets":3,"releases":3,"denials":0})
    );
    assert_eq!(kbs.admin("GET", "/test/last-attest", None)["tee"], "sample");

    // The same token as a Bearer, without the cookie.
    let a = call(
        &kbs.agent,
        &kbs.url,
        "GET",
        "/kbs/v0/resource/default/key/1",
        None,
        None,
        Some(&token),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(c.key.decrypt(&a.json()).unwrap(), b"key one");
}

#[test]
fn auth_refuses_other_versions_and_bad_requests() {
    let kbs = Kbs::start(&[]);
    let mut c = kbs.client();
    let req = |v: Value| json!({"version": v, "tee": "sample", "extra-params": {}});
    let a = c.auth_with(req(json!("0.5.0")));
    a.trustee_error(
        401,
        "AttestationError",
        "Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.5.0",
    );
    assert!(a.set_cookie.is_none());
    c.auth_with(req(json!("0.4.0-rc1"))).trustee_error(
        401,
        "AttestationError",
        "Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.4.0-rc1",
    );
    for v in ["0.4", "v0.4.0"] {
        c.auth_with(req(json!(v))).trustee_error(
            401,
            "AttestationError",
            "Attestation error: RCAR handshake Auth failed: failed to parse KBS version",
        );
    }
    for body in [
        json!({"version": "0.4.0", "tee": "sample"}),
        json!({"version": "0.4.0", "tee": "nosuchtee", "extra-params": {}}),
        json!({"version": 4, "tee": "sample", "extra-params": {}}),
        json!("not an object"),
    ] {
        c.auth_with(body).trustee_error(
            401,
            "AttestationError",
            "Attestation error: RCAR handshake Auth failed: deserialize Request",
        );
    }
    assert_eq!(c.cookie, None);
    // Build metadata is ignored by `=0.4.0`.
    assert_eq!(c.auth_with(req(json!("0.4.0+meta"))).status, 200);
    assert_eq!(kbs.stats()["auths"], 9);
}

const ATTEST_FAILED: &str = "Attestation error: RCAR handshake Attest failed";

#[test]
fn nonce_is_single_use_and_bound_to_its_session() {
    let kbs = Kbs::start(&[]);
    let mut a = kbs.client();
    let mut b = kbs.client();
    assert_eq!(a.auth().status, 200);
    assert_eq!(b.auth().status, 200);
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.cookie, b.cookie);

    // A's nonce on B's session, with evidence bound to it: refused.
    let na = a.nonce.clone().unwrap();
    b.attest_with(&na, b.key.jwk(), b.evidence(&na), "")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);

    // A attests; its session is now attested and its nonce spent. Presenting the nonce
    // again with another key does not bind that key: as Trustee does, the old token comes
    // back and nothing new is verified.
    let first = a.attest();
    assert_eq!(first.status, 200);
    let other = TeeKey::new();
    let ev = json!({"svn": "1", "report_data": other.report_data(&na, "")});
    let again = a.attest_with(&na, other.jwk(), ev, "");
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), first.json());
    let jwe = a.get("/kbs/v0/resource/default/key/1").json();
    assert_eq!(a.key.decrypt(&jwe).unwrap(), b"key one");
    assert!(other.decrypt(&jwe).is_err());
    assert_eq!(kbs.stats()["handshakes"], 1);

    // Once the sessions are gone, the nonce is worth nothing either.
    kbs.fault("expire-sessions");
    b.attest()
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    a.attest()
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    // And a fresh session wants its own nonce.
    let old = b.nonce.clone().unwrap();
    assert_eq!(b.auth().status, 200);
    b.attest_with(&old, b.key.jwk(), b.evidence(&old), "")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    assert_eq!(b.attest().status, 200);
}

#[test]
fn attest_checks_cookie_body_and_binding() {
    let kbs = Kbs::start(&[]);
    let mut c = kbs.client();
    // No session at all.
    c.attest_with("x", c.key.jwk(), json!({}), "")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    assert_eq!(c.auth().status, 200);
    let nonce = c.nonce.clone().unwrap();

    let zeros = json!({"svn": "1", "report_data": STANDARD.encode([0u8; 48])});
    let other = TeeKey::new();
    let for_other_key = json!({"svn": "1", "report_data": other.report_data(&nonce, "")});
    let no_svn = json!({"report_data": c.key.report_data(&nonce, "")});
    let not_b64 = json!({"svn": "1", "report_data": "!!"});
    for ev in [zeros, for_other_key, no_svn, not_b64, json!({"svn": "1"})] {
        c.attest_with(&nonce, c.key.jwk(), ev, "").trustee_error(
            401,
            "AttestationError",
            ATTEST_FAILED,
        );
    }
    // Bound to an `additional-evidence` other than the one sent.
    let ev = json!({"svn": "1", "report_data": c.key.report_data(&nonce, "{}")});
    c.attest_with(&nonce, c.key.jwk(), ev, "").trustee_error(
        401,
        "AttestationError",
        ATTEST_FAILED,
    );
    // Bodies that are not an Attestation.
    for body in [
        json!({"runtime-data": {"nonce": nonce, "tee-pubkey": c.key.jwk()}}),
        json!({"runtime-data": {"nonce": nonce, "tee-pubkey": {"kty": "OKP"}},
               "tee-evidence": {"primary_evidence": {}, "additional_evidence": ""}}),
        json!({"runtime_data": {}, "tee_evidence": {}}),
    ] {
        c.post("/kbs/v0/attest", body)
            .trustee_error(401, "AttestationError", ATTEST_FAILED);
    }
    // None of that spent the session: the right evidence still attests, and a JWK's
    // extra members are not part of the binding (Trustee re-serializes the key).
    let mut jwk = c.key.jwk();
    jwk["use"] = json!("enc");
    let a = c.attest_with(&nonce, jwk, c.evidence(&nonce), "");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(kbs.stats()["handshakes"], 1);

    // Evidence from another TEE has no verifier here.
    let mut snp = kbs.client();
    assert_eq!(
        snp.auth_with(json!({"version":"0.4.0","tee":"snp","extra-params":""}))
            .status,
        200
    );
    let n = snp.nonce.clone().unwrap();
    snp.attest_with(&n, snp.key.jwk(), snp.evidence(&n), "")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);

    // Additional evidence: the primary binds its string, each entry binds nonce + key.
    let mut d = kbs.client();
    assert_eq!(d.auth().status, 200);
    let n = d.nonce.clone().unwrap();
    let extra_text = format!(
        r#"{{"nonce":"{n}","tee-pubkey":{{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"{}","y":"{}"}}}}"#,
        d.key.x, d.key.y
    );
    let extra_rd = STANDARD.encode(Sha384::digest(extra_text.as_bytes()));
    let additional = json!({"sample": {"svn": "2", "report_data": extra_rd}}).to_string();
    let primary = json!({"svn": "1", "report_data": d.key.report_data(&n, &additional)});
    let bad_additional =
        json!({"sample": {"svn": "2", "report_data": STANDARD.encode([1u8; 48])}}).to_string();
    let bad_primary = json!({"svn": "1", "report_data": d.key.report_data(&n, &bad_additional)});
    d.attest_with(&n, d.key.jwk(), bad_primary, &bad_additional)
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    let a = d.attest_with(&n, d.key.jwk(), primary, &additional);
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn resource_errors_are_trusteeish() {
    let kbs = Kbs::start(&[]);
    let mut c = kbs.client();
    let r = |c: &Client, p: &str| c.get(&format!("/kbs/v0/resource/{p}"));

    // No cookie, and a session that authed but never attested.
    r(&c, "default/key/1").trustee_error(401, "TokenNotFound", "Attestation Token not found");
    assert_eq!(c.auth().status, 200);
    r(&c, "default/key/1").trustee_error(401, "TokenNotFound", "Attestation Token not found");
    assert_eq!(c.attest().status, 200);

    r(&c, "default/key/missing").trustee_error(401, "PluginInternalError", "Plugin internal error");
    r(&c, "default/key").trustee_error(401, "PluginInternalError", "Plugin internal error");
    r(&c, "default/key/1/2").trustee_error(401, "PluginInternalError", "Plugin internal error");
    r(&c, "default/key/..").trustee_error(401, "PluginInternalError", "Plugin internal error");
    let unknown = c.get("/kbs/v0/nope/x");
    unknown.trustee_error(404, "PluginNotFound", "Plugin nope not found");
    c.get("/kbs/v0/auth")
        .trustee_error(404, "PluginNotFound", "Plugin auth not found");
    c.post("/kbs/v0/resource/default/key/1", json!({})).trustee_error(
        401,
        "AdminAuthInitialization",
        "failed to initialize [admin] configuration: Admin access denied: Admin access denied as DenyAll authorization_mode is enabled",
    );
    c.post("/kbs/v0/resource-policy", json!({})).trustee_error(
        401,
        "AdminAuthAccess",
        "admin access denied for endpoint resource-policy: Admin access denied: Admin access denied as DenyAll authorization_mode is enabled",
    );
    let a = call(
        &kbs.agent,
        &kbs.url,
        "GET",
        "/kbs/v0/resource/default/key/1",
        None,
        None,
        Some("a.b.c"),
    );
    a.trustee_error(401, "TokenVerifierError", "Token Verifier error");
    assert_eq!(
        call(&kbs.agent, &kbs.url, "GET", "/nothing", None, None, None).status,
        404
    );
    assert_eq!(
        call(&kbs.agent, &kbs.url, "GET", "/healthz", None, None, None).status,
        200
    );
    let s = kbs.stats();
    assert_eq!(
        (s["resource_gets"].as_u64(), s["releases"].as_u64()),
        (Some(7), Some(0))
    );
}

#[test]
fn policy_allows_and_denies() {
    let dir = resources();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":"deny","allow":["default/*"],"deny":["default/key/secret*"]}"#,
    )
    .unwrap();
    let kbs = Kbs::start_in(dir, &["--policy", policy.to_str().unwrap()]);
    let mut c = kbs.client();
    c.handshake();
    assert_eq!(c.resource("default/key/1").unwrap(), b"key one");
    for p in ["default/key/secret", "other/key/1", "other/key/missing"] {
        c.get(&format!("/kbs/v0/resource/{p}")).trustee_error(
            401,
            "PolicyDeny",
            "Access denied by policy",
        );
    }
    // Allowed by policy but absent: the plugin's error, after the policy.
    c.get("/kbs/v0/resource/default/key/missing").trustee_error(
        401,
        "PluginInternalError",
        "Plugin internal error",
    );
    let s = kbs.stats();
    assert_eq!(
        (s["releases"].as_u64(), s["denials"].as_u64()),
        (Some(1), Some(3))
    );

    // A policy that does not parse stops the double from starting.
    let dir = resources();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"default":"perhaps"}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cocoon-test-kbs"))
        .arg("--resources")
        .arg(dir.path())
        .arg("--policy")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy"),
        "{out:?}"
    );
}

#[test]
fn faults() {
    let kbs = Kbs::start(&[]);
    let mut c = kbs.client();
    c.handshake();

    kbs.fault("500");
    let a = c.auth();
    a.trustee_error(500, "PluginInternalError", "injected fault: 500");
    c.get("/kbs/v0/resource/default/key/1").trustee_error(
        500,
        "PluginInternalError",
        "injected fault: 500",
    );

    kbs.fault("refuse");
    let t = try_call(
        &kbs.agent,
        &kbs.url,
        "GET",
        "/kbs/v0/resource/default/key/1",
        c.cookie.as_deref(),
        None,
        None,
    );
    assert!(t.is_err(), "refuse answers nothing: {t:?}");
    // The test API still answers.
    assert_eq!(kbs.admin("GET", "/test/fault", None)["mode"], "refuse");

    kbs.admin(
        "POST",
        "/test/fault",
        Some(json!({"mode": "slow", "slow_ms": 400})),
    );
    let start = Instant::now();
    assert_eq!(c.resource("default/key/1").unwrap(), b"key one");
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );

    kbs.fault("deny");
    c.get("/kbs/v0/resource/default/key/1").trustee_error(
        401,
        "PolicyDeny",
        "Access denied by policy",
    );

    kbs.fault("tamper");
    assert_eq!(c.resource("default/key/1"), Err("decrypt"));
    assert_eq!(c.resource("default/cert/empty"), Err("decrypt"));

    kbs.fault("wrong-key");
    assert_eq!(c.resource("default/key/1"), Err("key unwrap"));

    kbs.fault("none");
    assert_eq!(c.resource("default/key/1").unwrap(), b"key one");

    kbs.fault("expire-sessions");
    assert_eq!(kbs.admin("GET", "/test/fault", None)["mode"], "none");
    c.get("/kbs/v0/resource/default/key/1").trustee_error(
        401,
        "TokenNotFound",
        "Attestation Token not found",
    );
    c.handshake();
    assert_eq!(c.resource("default/key/1").unwrap(), b"key one");

    assert_eq!(
        kbs.stats(),
        json!({"auths":3,"attests":2,"handshakes":2,"resource_gets":10,"releases":6,"denials":1})
    );
    let bad = call(
        &kbs.agent,
        &kbs.url,
        "POST",
        "/test/fault",
        None,
        Some(&json!({"mode":"explode"})),
        None,
    );
    assert_eq!(bad.status, 400);
    kbs.admin("POST", "/test/reset", None);
    assert_eq!(
        kbs.stats(),
        json!({"auths":0,"attests":0,"handshakes":0,"resource_gets":0,"releases":0,"denials":0})
    );
    // Reset forgets the sessions too.
    c.get("/kbs/v0/resource/default/key/1").trustee_error(
        401,
        "TokenNotFound",
        "Attestation Token not found",
    );
}

#[test]
fn tokens_and_sessions_expire() {
    // Token lifetime 1 s with no leeway; session lifetime 1 s on the second double.
    let tok = Kbs::start(&["--token-ttl", "1", "--token-leeway", "0"]);
    let ses = Kbs::start(&["--session-ttl", "1"]);
    let mut a = tok.client();
    let token = a.handshake();
    let cl = claims(&token);
    assert_eq!(cl["exp"].as_u64().unwrap(), cl["iat"].as_u64().unwrap() + 1);
    let mut b = ses.client();
    b.handshake();
    assert_eq!(a.resource("default/key/1").unwrap(), b"key one");
    assert_eq!(b.resource("default/key/1").unwrap(), b"key one");

    std::thread::sleep(Duration::from_millis(2300));
    a.get("/kbs/v0/resource/default/key/1").trustee_error(
        401,
        "TokenVerifierError",
        "Token Verifier error",
    );
    call(
        &tok.agent,
        &tok.url,
        "GET",
        "/kbs/v0/resource/default/key/1",
        None,
        None,
        Some(&token),
    )
    .trustee_error(401, "TokenVerifierError", "Token Verifier error");
    b.get("/kbs/v0/resource/default/key/1").trustee_error(
        401,
        "TokenNotFound",
        "Attestation Token not found",
    );
    // A new handshake heals both.
    a.handshake();
    b.handshake();
    assert_eq!(a.resource("default/key/2").unwrap(), b"key two");
    assert_eq!(b.resource("default/key/2").unwrap(), b"key two");
}

#[test]
fn concurrent_handshakes() {
    let kbs = Kbs::start(&["--workers", "3"]);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (agent, url) = (kbs.agent.clone(), kbs.url.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(&agent, &url);
                c.handshake();
                c.resource("default/key/2").unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), b"key two");
    }
    let s = kbs.stats();
    assert_eq!(
        (s["handshakes"].as_u64(), s["releases"].as_u64()),
        (Some(8), Some(8))
    );
}

#[test]
fn https() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let dir = resources();
    let (child, url) = spawn(
        &[
            "--tls-cert",
            data.join("server.pem").to_str().unwrap(),
            "--tls-key",
            data.join("server.key").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(data.join("ca.pem")).unwrap();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::new(tls))
        .timeout(Duration::from_secs(20))
        .build();
    let kbs = Kbs {
        child,
        url: url.clone(),
        agent: agent.clone(),
        _dir: dir,
    };
    let mut c = Client::new(&agent, &url);
    c.handshake();
    assert_eq!(c.resource("default/key/1").unwrap(), b"key one");
    // Plain HTTP to the TLS port gets no HTTP answer; an untrusting client refuses it.
    let plain = url.replace("https://", "http://");
    assert!(try_call(&agent, &plain, "GET", "/healthz", None, None, None).is_err());
    assert!(try_call(&self::agent(), &url, "GET", "/healthz", None, None, None).is_err());
    assert_eq!(kbs.stats()["releases"], 1);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stops_on_signals_and_stdin_eof() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut kbs = Kbs::start(&[]);
        let mut c = kbs.client();
        c.handshake();
        kill(Pid::from_raw(kbs.child.id() as i32), sig).unwrap();
        assert!(wait_exit(&mut kbs.child).success(), "{sig}");
    }
    let mut kbs = Kbs::start(&["--exit-on-stdin-eof"]);
    assert_eq!(kbs.stats()["auths"], 0);
    drop(kbs.child.stdin.take());
    assert!(wait_exit(&mut kbs.child).success());
    // Without the flag, stdin closing changes nothing.
    let mut kbs = Kbs::start(&[]);
    drop(kbs.child.stdin.take());
    std::thread::sleep(Duration::from_millis(200));
    assert!(kbs.child.try_wait().unwrap().is_none());
    assert_eq!(kbs.stats()["auths"], 0);
}

#[test]
fn refuses_bad_command_lines() {
    let dir = resources();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cocoon-test-kbs"))
            .args(args)
            .output()
            .unwrap()
    };
    let d = dir.path().to_str().unwrap();
    let out = run(&["--resources", d, "--accept-evidence", "snp"]);
    assert!(!out.status.success(), "only snp-test, by its full name");
    let out = run(&["--resources", "/nonexistent/dir"]);
    assert!(!out.status.success());
    let out = run(&["--resources", d, "--tls-cert", "x.pem"]);
    assert!(!out.status.success(), "--tls-cert needs --tls-key");
    let out = run(&[
        "--resources",
        d,
        "--tls-cert",
        "/none.pem",
        "--tls-key",
        "/none.key",
    ]);
    assert!(!out.status.success());
}

// --- --accept-evidence snp-test: report data checked, signature NOT verified -----------

/// A real SEV-SNP report (Trustee's test-report.bin, recorded on AMD hardware).
fn snp_fixture() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../attester/tests/fixtures/snp/trustee-test-report.bin"
    );
    let raw = std::fs::read(path).unwrap();
    assert_eq!(raw.len(), 1184);
    raw
}

/// Trustee's SNP evidence for `raw` with `report_data` patched in at 0x50 and `vmpl` at
/// 0x30, as the fake devices of tests/qemu/fake-tee answer; serialised with sev 6.3's
/// types, which Trustee deserialises it with.
fn snp_evidence(report_data: &[u8], vmpl: u32) -> Value {
    snp_evidence_host(report_data, vmpl, &[])
}

/// [`snp_evidence`] with `host_data` (zero-padded to 32) at 0xC0, as the host sets it.
fn snp_evidence_host(report_data: &[u8], vmpl: u32, host_data: &[u8]) -> Value {
    let mut raw = snp_fixture();
    raw[0xc0..0xe0].fill(0);
    raw[0xc0..0xc0 + host_data.len()].copy_from_slice(host_data);
    raw[0x50..0x90].fill(0);
    raw[0x50..0x50 + report_data.len()].copy_from_slice(report_data);
    raw[0x30..0x34].copy_from_slice(&vmpl.to_le_bytes());
    let report = sev::firmware::guest::AttestationReport::from_bytes(&raw).unwrap();
    json!({"attestation_report": report, "cert_chain": null})
}

impl Client {
    fn auth_tee(&mut self, tee: &str) -> Answer {
        self.auth_with(json!({"version": "0.4.0", "tee": tee, "extra-params": ""}))
    }

    fn binding(&self, nonce: &str) -> Vec<u8> {
        STANDARD.decode(self.key.report_data(nonce, "")).unwrap()
    }

    fn attest_init(&self, nonce: &str, primary: Value, init_data: Value) -> Answer {
        self.post(
            "/kbs/v0/attest",
            json!({
                "init-data": init_data,
                "runtime-data": {"nonce": nonce, "tee-pubkey": self.key.jwk()},
                "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""},
            }),
        )
    }
}

#[test]
fn snp_test_mode_checks_host_data_against_init_data() {
    let body = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"aa.toml\" = \"\"\"\n[token_configs]\n\"\"\"\n";
    let digest = Sha384::digest(body.as_bytes());
    let kbs = Kbs::start(&["--accept-evidence", "snp-test"]);
    let mut c = kbs.client();
    assert_eq!(c.auth_tee("snp").status, 200);
    let nonce = c.nonce.clone().unwrap();
    let binding = c.binding(&nonce);
    let bound = snp_evidence_host(&binding, 0, &digest[..32]);
    let init = json!({"format": "toml", "body": body});
    let other_body = body.replace("0.1.0", "0.1.1");
    let sha256_body = body.replace("sha384", "sha256");
    for (what, ev, init) in [
        ("HOST_DATA zero", snp_evidence(&binding, 0), init.clone()),
        (
            "other body",
            bound.clone(),
            json!({"format": "toml", "body": other_body}),
        ),
        (
            "other algorithm",
            bound.clone(),
            json!({"format": "toml", "body": sha256_body}),
        ),
        (
            "not toml",
            bound.clone(),
            json!({"format": "json", "body": body}),
        ),
        (
            "not Initdata",
            bound.clone(),
            json!({"format": "toml", "body": "x = 1"}),
        ),
        (
            "sm3",
            bound.clone(),
            json!({"format": "toml", "body": body.replace("sha384", "sm3")}),
        ),
    ] {
        let a = c.attest_init(&nonce, ev, init);
        assert_eq!(a.status, 401, "{what}: {a:?}");
        a.trustee_error(401, "AttestationError", ATTEST_FAILED);
    }
    let a = c.attest_init(&nonce, bound.clone(), init);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        claims(a.json()["token"].as_str().unwrap())["evidence"]["host_data"],
        digest[..32]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );

    // Without init-data, HOST_DATA is not looked at (as Trustee).
    let mut d = kbs.client();
    assert_eq!(d.auth_tee("snp").status, 200);
    let n = d.nonce.clone().unwrap();
    let ev = snp_evidence_host(&d.binding(&n), 0, &[7; 32]);
    assert_eq!(d.attest_init(&n, ev, Value::Null).status, 200);
}

#[test]
fn snp_test_mode_checks_the_binding_not_the_signature() {
    let kbs = Kbs::start(&["--accept-evidence", "snp-test"]);
    let mut c = kbs.client();
    assert_eq!(c.auth_tee("snp").status, 200);
    let nonce = c.nonce.clone().unwrap();
    let binding = c.binding(&nonce);

    // The recorded report as it is (someone else's report data), the binding at another
    // VMPL, the binding of another key, half the binding, and shapes that are not Trustee's.
    let other = TeeKey::new();
    let mut missing_field = snp_evidence(&binding, 0);
    missing_field["attestation_report"]
        .as_object_mut()
        .unwrap()
        .remove("measurement");
    let mut hex_report_data = snp_evidence(&binding, 0);
    hex_report_data["attestation_report"]["report_data"] = json!("00".repeat(64));
    let mut old_version = snp_evidence(&binding, 0);
    old_version["attestation_report"]["version"] = json!(1);
    let as_recorded = json!({
        "attestation_report": sev::firmware::guest::AttestationReport::from_bytes(&snp_fixture()).unwrap(),
        "cert_chain": null,
    });
    for (what, ev) in [
        ("as recorded", as_recorded),
        ("vmpl 1", snp_evidence(&binding, 1)),
        (
            "other key",
            snp_evidence(&STANDARD.decode(other.report_data(&nonce, "")).unwrap(), 0),
        ),
        ("half", snp_evidence(&binding[..24], 0)),
        ("missing field", missing_field),
        ("hex report_data", hex_report_data),
        ("version 1", old_version),
        ("sample shape", c.evidence(&nonce)),
    ] {
        let a = c.attest_with(&nonce, c.key.jwk(), ev, "");
        assert_eq!(a.status, 401, "{what}: {a:?}");
        a.trustee_error(401, "AttestationError", ATTEST_FAILED);
    }
    // Bound, but with additional evidence this mode has no verifier for.
    c.attest_with(&nonce, c.key.jwk(), snp_evidence(&binding, 0), "{}")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);

    // The recorded report with our binding: accepted though its signature is now wrong.
    let a = c.attest_with(&nonce, c.key.jwk(), snp_evidence(&binding, 0), "");
    assert_eq!(a.status, 200, "{a:?}");
    let token = a.json()["token"].as_str().unwrap().to_owned();
    let cl = claims(&token);
    assert_eq!(cl["tee"], "snp");
    assert_eq!(cl["evidence"]["signature_verified"], false);
    let mut padded = binding.clone();
    padded.resize(64, 0);
    assert_eq!(
        cl["evidence"]["report_data"],
        padded
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!(c.resource("default/key/1").unwrap(), b"key one");
    assert_eq!(kbs.stats()["handshakes"], 1);

    // A session that is not snp gets no verifier in this mode, sample evidence or not.
    let mut s = kbs.client();
    assert_eq!(s.auth().status, 200);
    s.attest()
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    let n = s.nonce.clone().unwrap();
    let b = s.binding(&n);
    s.attest_with(&n, s.key.jwk(), snp_evidence(&b, 0), "")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
}

#[test]
fn sample_mode_refuses_snp_evidence() {
    let kbs = Kbs::start(&[]);
    let mut c = kbs.client();
    assert_eq!(c.auth_tee("snp").status, 200);
    let nonce = c.nonce.clone().unwrap();
    let b = c.binding(&nonce);
    c.attest_with(&nonce, c.key.jwk(), snp_evidence(&b, 0), "")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    assert_eq!(kbs.stats()["handshakes"], 0);
}

/// What the guest sends: evidence the agent made in the VM through the fake
/// /dev/sev-guest (tests/qemu/fake-tee/check.sh, GET /aa/evidence), recorded: the fixture
/// report with the guest's report data, and the certificate table with its VCEK.
#[test]
fn snp_test_mode_accepts_what_the_guest_made_with_the_fake_device() {
    use sev::firmware::host::{CertTableEntry, CertType};
    let text = include_str!("data/snp-evidence-fake-tee.json");
    let recorded: Value = serde_json::from_str(text).unwrap();
    let report_data: Vec<u8> = recorded["attestation_report"]["report_data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect();
    let vcek = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../attester/tests/fixtures/snp/trustee-test-vcek.der"
    ))
    .unwrap();
    let mut expected = snp_evidence(&report_data, 0);
    expected["cert_chain"] = json!([CertTableEntry::new(CertType::VCEK, vcek)]);
    assert_eq!(
        recorded, expected,
        "the guest's evidence is the fixture report with its report data and VCEK, in sev 6.3's shape"
    );
    let kbs = Kbs::start(&["--accept-evidence", "snp-test"]);
    let mut c = kbs.client();
    assert_eq!(c.auth_tee("snp").status, 200);
    let nonce = c.nonce.clone().unwrap();
    c.attest_with(&nonce, c.key.jwk(), recorded.clone(), "")
        .trustee_error(401, "AttestationError", ATTEST_FAILED);
    let mut ev = recorded;
    let mut binding = c.binding(&nonce);
    binding.resize(64, 0);
    ev["attestation_report"]["report_data"] = json!(binding);
    let a = c.attest_with(&nonce, c.key.jwk(), ev, "");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        claims(a.json()["token"].as_str().unwrap())["evidence"]["cert_chain"],
        1
    );
}
