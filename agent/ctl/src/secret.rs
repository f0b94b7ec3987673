//! `cocoon-ctl secret`: CoCo sealed secrets, as upstream's `secret` tool
//! (guest-components `confidential-data-hub/hub/src/bin/secret_cli.rs`) writes them.
//!
//! A sealed secret is `sealed.` + b64url(header) + `.` + b64url(payload) + `.` +
//! b64url(signature), base64url without padding; the header is jose-jws's `Protected`
//! with `alg` and `kid` (`{"b64":true,"alg":"ES256","kid":"<kid>"}`), the payload the
//! serde form of upstream's `Secret` (`{"version":"0.1.0","type":"vault","name":...,
//! "provider":...,"provider_settings":{},"annotations":{}}`, fields in that order), the
//! signature ES256 (P-256, SHA-256, RFC 6979) as raw r‖s over the ASCII `"<h>.<p>"`. The
//! guest looks `kid` up as a KBS resource (`kbs:///repo/type/tag`) holding the public JWK,
//! or as a file under `/run/confidential-containers/cdh/sealed-secret/`.
//! Facts: `shared/reference/confidential.md`, "Sealed secrets".

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Subcommand;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::Serialize;
use serde_json::{Map, Value};

/// The sealed-secret prefix.
pub const SEALED_PREFIX: &str = "sealed.";
/// The payload `version` upstream writes and requires.
pub const SECRET_VERSION: &str = "0.1.0";
/// The only signing algorithm upstream verifies.
pub const SIGNING_ALG: &str = "ES256";
/// Upstream keygen's default key id.
pub const DEFAULT_KEYGEN_KID: &str = "sealed-signing";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} already exists; not overwriting it")]
    Exists { path: String },
    #[error("signing key: {0}")]
    Key(String),
    #[error("bad {what}: {why}")]
    Arg { what: &'static str, why: String },
    #[error("not a sealed secret: {0}")]
    Malformed(String),
    #[error("signature does not verify with this key")]
    BadSignature,
}

/// The `secret` subcommands.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Generate a P-256 signing key pair as JWK files (the private one has `d`).
    Keygen {
        /// Where to write the private JWK (mode 0600; never overwritten).
        #[arg(long)]
        private_out: PathBuf,
        /// Where to write the public JWK (provision it as the `kid` the guest looks up).
        #[arg(long)]
        public_out: PathBuf,
        /// The `kid` member written into both JWKs.
        #[arg(long, default_value = DEFAULT_KEYGEN_KID)]
        kid: String,
    },
    /// Seal a `vault` secret (a pointer to a KBS resource); prints `sealed.<h>.<p>.<sig>`.
    Seal {
        /// The private JWK (P-256, with `d`) to sign with.
        #[arg(long, alias = "signing-jwk-path")]
        signing_key: PathBuf,
        /// Where the guest finds the public key: `kbs:///repo/type/tag` or a file name under
        /// /run/confidential-containers/cdh/sealed-secret/.
        #[arg(long, alias = "signing-kid")]
        kid: String,
        /// The resource the secret stands for, `kbs:///repo/type/tag`.
        #[arg(long, alias = "resource-uri")]
        resource: String,
        /// The provider that fulfils the secret.
        #[arg(long, default_value = "kbs")]
        provider: String,
        /// Extra provider settings, a JSON object.
        #[arg(long)]
        provider_settings: Option<String>,
        /// Extra annotations, a JSON object.
        #[arg(long)]
        annotations: Option<String>,
    },
    /// Print a sealed secret's header and payload as JSON (the signature is not checked).
    Inspect {
        /// The sealed secret, or `@FILE` to read it from FILE.
        sealed: String,
    },
    /// Check a sealed secret's signature against a public (or private) JWK.
    Verify {
        /// The JWK to verify with.
        #[arg(long)]
        public_key: PathBuf,
        /// The sealed secret, or `@FILE` to read it from FILE.
        sealed: String,
    },
}

/// Runs one `secret` subcommand, printing its result on stdout.
pub fn run(cmd: &SecretCommand) -> Result<(), SecretError> {
    match cmd {
        SecretCommand::Keygen {
            private_out,
            public_out,
            kid,
        } => {
            let key = SigningKey::random(&mut rand_core::OsRng);
            let private = jwk_file_text(&jwk(&key, kid, true));
            let public = jwk_file_text(&jwk(&key, kid, false));
            write_new(private_out, &private, true)?;
            if let Err(e) = write_new(public_out, &public, false) {
                let _ = std::fs::remove_file(private_out);
                return Err(e);
            }
            println!(
                "wrote {} and {}",
                private_out.display(),
                public_out.display()
            );
            Ok(())
        }
        SecretCommand::Seal {
            signing_key,
            kid,
            resource,
            provider,
            provider_settings,
            annotations,
        } => {
            let key = signing_key_from_jwk(&read(signing_key)?)?;
            let settings = json_object("--provider-settings", provider_settings.as_deref())?;
            let annotations = json_object("--annotations", annotations.as_deref())?;
            check_kid(kid)?;
            if provider == "kbs" {
                check_kbs_uri("--resource", resource)?;
            }
            let payload = vault_payload(resource, provider, &settings, &annotations);
            println!("{}", seal(&payload, &key, kid));
            Ok(())
        }
        SecretCommand::Inspect { sealed } => {
            let (header, payload) = inspect(&sealed_arg(sealed)?)?;
            let doc = serde_json::json!({"header": header, "payload": payload});
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
            );
            Ok(())
        }
        SecretCommand::Verify { public_key, sealed } => {
            let key = verifying_key_from_jwk(&read(public_key)?)?;
            verify(&sealed_arg(sealed)?, &key)?;
            println!("signature ok");
            Ok(())
        }
    }
}

fn read(path: &Path) -> Result<String, SecretError> {
    std::fs::read_to_string(path).map_err(|source| SecretError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn sealed_arg(arg: &str) -> Result<String, SecretError> {
    match arg.strip_prefix('@') {
        Some(file) => Ok(read(Path::new(file))?.trim().to_owned()),
        None => Ok(arg.trim().to_owned()),
    }
}

fn write_new(path: &Path, text: &str, private: bool) -> Result<(), SecretError> {
    use std::os::unix::fs::OpenOptionsExt;
    let display = path.display().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => SecretError::Exists {
                path: display.clone(),
            },
            _ => SecretError::Io {
                path: display.clone(),
                source,
            },
        })?;
    file.write_all(text.as_bytes())
        .map_err(|source| SecretError::Io {
            path: display,
            source,
        })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWK in the member order of upstream's keygen.
#[derive(Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    crv: &'static str,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
    kid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<String>,
    x: String,
    y: String,
}

fn jwk<'a>(key: &SigningKey, kid: &'a str, private: bool) -> Jwk<'a> {
    let point = VerifyingKey::from(key).to_encoded_point(false);
    let coord = |c: Option<&p256::FieldBytes>| c.map(|c| b64(c)).unwrap_or_default();
    Jwk {
        kty: "EC",
        crv: "P-256",
        alg: SIGNING_ALG,
        use_: "sig",
        kid,
        d: private.then(|| b64(&key.to_bytes())),
        x: coord(point.x()),
        y: coord(point.y()),
    }
}

/// The JWK file text: pretty JSON in upstream keygen's member order, newline-terminated.
fn jwk_file_text(jwk: &Jwk<'_>) -> String {
    serde_json::to_string_pretty(jwk).unwrap_or_default() + "\n"
}

/// The private JWK of `key` (with `d`).
pub fn private_jwk(key: &SigningKey, kid: &str) -> Value {
    serde_json::to_value(jwk(key, kid, true)).unwrap_or_default()
}

/// The public JWK of `key`.
pub fn public_jwk(key: &SigningKey, kid: &str) -> Value {
    serde_json::to_value(jwk(key, kid, false)).unwrap_or_default()
}

fn ec_member(jwk: &Value, name: &'static str) -> Result<[u8; 32], SecretError> {
    let text = jwk[name]
        .as_str()
        .ok_or_else(|| SecretError::Key(format!("no `{name}` member")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| SecretError::Key(format!("`{name}` is not base64url of 32 bytes")))
}

fn parse_p256_jwk(text: &str) -> Result<Value, SecretError> {
    let jwk: Value =
        serde_json::from_str(text).map_err(|e| SecretError::Key(format!("not JSON: {e}")))?;
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return Err(SecretError::Key(format!(
            "must be an EC P-256 JWK (kty {}, crv {})",
            jwk["kty"], jwk["crv"]
        )));
    }
    if !jwk["alg"].is_null() && jwk["alg"] != SIGNING_ALG {
        return Err(SecretError::Key(format!(
            "alg is {}, sealed secrets are {SIGNING_ALG}",
            jwk["alg"]
        )));
    }
    Ok(jwk)
}

/// The public key of a P-256 JWK (`x`, `y`; a private JWK works too).
pub fn verifying_key_from_jwk(text: &str) -> Result<VerifyingKey, SecretError> {
    let jwk = parse_p256_jwk(text)?;
    let (x, y) = (ec_member(&jwk, "x")?, ec_member(&jwk, "y")?);
    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    VerifyingKey::from_encoded_point(&point)
        .map_err(|_| SecretError::Key("`x`,`y` is not a point on P-256".into()))
}

/// The signing key of a private P-256 JWK (`d`); `x`/`y`, if present, must match it.
pub fn signing_key_from_jwk(text: &str) -> Result<SigningKey, SecretError> {
    let jwk = parse_p256_jwk(text)?;
    let d = ec_member(&jwk, "d")
        .map_err(|_| SecretError::Key("a private JWK with `d` is needed to sign".into()))?;
    let key = SigningKey::from_bytes(&d.into())
        .map_err(|_| SecretError::Key("`d` is not a valid P-256 scalar".into()))?;
    if !jwk["x"].is_null() || !jwk["y"].is_null() {
        let public = public_jwk(&key, "");
        if jwk["x"] != public["x"] || jwk["y"] != public["y"] {
            return Err(SecretError::Key("`x`/`y` do not belong to `d`".into()));
        }
    }
    Ok(key)
}

fn json_object(what: &'static str, text: Option<&str>) -> Result<Map<String, Value>, SecretError> {
    match text {
        None => Ok(Map::new()),
        Some(t) => match serde_json::from_str(t) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(SecretError::Arg {
                what,
                why: "must be a JSON object".into(),
            }),
            Err(e) => Err(SecretError::Arg {
                what,
                why: e.to_string(),
            }),
        },
    }
}

/// `kbs://<host>/<repo>/<type>/<tag>` (host usually empty), three non-empty segments.
fn check_kbs_uri(what: &'static str, uri: &str) -> Result<(), SecretError> {
    let bad = |why: &str| SecretError::Arg {
        what,
        why: format!("{uri:?}: {why}; expected kbs:///repo/type/tag"),
    };
    let rest = uri
        .strip_prefix("kbs://")
        .ok_or_else(|| bad("not a kbs:// URI"))?;
    let (_host, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() != 3 || segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(bad("the path must be repo/type/tag"));
    }
    Ok(())
}

/// A `kid` the guest can resolve: a KBS URI, or a relative file name that stays inside
/// the guest's sealed-secret key directory.
fn check_kid(kid: &str) -> Result<(), SecretError> {
    if kid.starts_with("kbs://") {
        return check_kbs_uri("--kid", kid);
    }
    let path = Path::new(kid);
    let ok = !kid.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(SecretError::Arg {
            what: "--kid",
            why: format!(
                "{kid:?}: use kbs:///repo/type/tag or a plain file name (no '/'-rooted path, no '..')"
            ),
        });
    }
    Ok(())
}

/// The JWS protected header, as jose-jws serializes upstream's `Protected`.
#[derive(Serialize)]
struct Header<'a> {
    b64: bool,
    alg: &'static str,
    kid: &'a str,
}

/// A `vault` secret, as upstream's `Secret` + `VaultSecret` serialize.
#[derive(Serialize)]
struct VaultSecret<'a> {
    version: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    provider: &'a str,
    provider_settings: &'a Map<String, Value>,
    annotations: &'a Map<String, Value>,
}

/// The payload JSON of a `vault` secret naming `name` (e.g. `kbs:///default/key/1`).
pub fn vault_payload(
    name: &str,
    provider: &str,
    provider_settings: &Map<String, Value>,
    annotations: &Map<String, Value>,
) -> String {
    let secret = VaultSecret {
        version: SECRET_VERSION,
        kind: "vault",
        name,
        provider,
        provider_settings,
        annotations,
    };
    serde_json::to_string(&secret).unwrap_or_default()
}

/// The protected header JSON for `kid`.
pub fn header_json(kid: &str) -> String {
    serde_json::to_string(&Header {
        b64: true,
        alg: SIGNING_ALG,
        kid,
    })
    .unwrap_or_default()
}

/// `sealed.<h>.<p>.<sig>` over `payload_json`.
pub fn seal(payload_json: &str, key: &SigningKey, kid: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(header_json(kid).as_bytes()),
        b64(payload_json.as_bytes())
    );
    let sig: Signature = key.sign(input.as_bytes());
    format!("{SEALED_PREFIX}{input}.{}", b64(&sig.to_bytes()))
}

fn split(sealed: &str) -> Result<[&str; 3], SecretError> {
    let body = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or_else(|| SecretError::Malformed("does not start with `sealed.`".into()))?;
    let parts: Vec<&str> = body.split('.').collect();
    match parts.as_slice() {
        [h, p, s] => Ok([h, p, s]),
        _ => Err(SecretError::Malformed(format!(
            "{} dot-separated parts after `sealed.`, expected 3",
            parts.len()
        ))),
    }
}

fn decode_json(what: &str, part: &str) -> Result<Value, SecretError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| SecretError::Malformed(format!("{what} is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| SecretError::Malformed(format!("{what} is not JSON: {e}")))
}

/// The header and payload of a sealed secret, unverified.
pub fn inspect(sealed: &str) -> Result<(Value, Value), SecretError> {
    let [h, p, _] = split(sealed)?;
    Ok((decode_json("header", h)?, decode_json("payload", p)?))
}

/// Checks the ES256 signature of `sealed` with `key`.
pub fn verify(sealed: &str, key: &VerifyingKey) -> Result<(), SecretError> {
    let [h, p, s] = split(sealed)?;
    let header = decode_json("header", h)?;
    if header["alg"] != SIGNING_ALG {
        return Err(SecretError::Malformed(format!(
            "header alg {}, expected {SIGNING_ALG}",
            header["alg"]
        )));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| SecretError::Malformed("signature is not 64 bytes of base64url".into()))?;
    key.verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| SecretError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's test key (`confidential-data-hub/hub/src/secret/tests/test-key.json`).
    const UPSTREAM_TEST_KEY: &str = r#"{
        "kty": "EC",
        "d": "7baJLiTk68NcLgYPv05jJvElqoAhbzi1ZWx4OyILUtA",
        "use": "sig",
        "crv": "P-256",
        "kid": "test-key",
        "x": "QT3_slJmispaOwnAo6hxebXGLRuiveFuRCLpS4j4S4k",
        "y": "jcDn4N4nRBQ-a7_D3qjqtb6hwOAXh_ve1wvibPSi1G0",
        "alg": "ES256"
    }"#;

    fn empty() -> Map<String, Value> {
        Map::new()
    }

    #[test]
    fn golden_header_and_payload() {
        assert_eq!(
            header_json("kbs:///default/signing/key"),
            r#"{"b64":true,"alg":"ES256","kid":"kbs:///default/signing/key"}"#
        );
        assert_eq!(
            vault_payload("kbs:///one/2/trois", "kbs", &empty(), &empty()),
            r#"{"version":"0.1.0","type":"vault","name":"kbs:///one/2/trois","provider":"kbs","provider_settings":{},"annotations":{}}"#
        );
        let key = signing_key_from_jwk(UPSTREAM_TEST_KEY).unwrap();
        let sealed = seal(
            &vault_payload("kbs:///one/2/trois", "kbs", &empty(), &empty()),
            &key,
            "test-key",
        );
        let [h, p, s] = split(&sealed).unwrap();
        assert_eq!(
            h,
            "eyJiNjQiOnRydWUsImFsZyI6IkVTMjU2Iiwia2lkIjoidGVzdC1rZXkifQ"
        );
        assert_eq!(
            p,
            "eyJ2ZXJzaW9uIjoiMC4xLjAiLCJ0eXBlIjoidmF1bHQiLCJuYW1lIjoia2JzOi8vL29uZS8yL3Ryb2lzIiwicHJvdmlkZXIiOiJrYnMiLCJwcm92aWRlcl9zZXR0aW5ncyI6e30sImFubm90YXRpb25zIjp7fX0"
        );
        // No padding anywhere; 64-byte raw signature.
        assert!(!sealed.contains('='));
        assert_eq!(URL_SAFE_NO_PAD.decode(s).unwrap().len(), 64);
        // RFC 6979: the same key and input give the same signature.
        assert_eq!(
            sealed,
            seal(
                &vault_payload("kbs:///one/2/trois", "kbs", &empty(), &empty()),
                &key,
                "test-key"
            )
        );
    }

    #[test]
    fn signature_verifies_with_p256() {
        let key = signing_key_from_jwk(UPSTREAM_TEST_KEY).unwrap();
        let sealed = seal(
            &vault_payload("kbs:///default/key/1", "kbs", &empty(), &empty()),
            &key,
            "kbs:///default/sealing/pub",
        );
        // Independently of `verify`: p256's VerifyingKey over the ASCII "<h>.<p>".
        let body = sealed.strip_prefix("sealed.").unwrap();
        let (input, sig) = body.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let vk = verifying_key_from_jwk(UPSTREAM_TEST_KEY).unwrap();
        vk.verify(input.as_bytes(), &sig).unwrap();
        assert!(verify(&sealed, &vk).is_ok());

        // Any change breaks it: header, payload, signature.
        for i in [10, 80, sealed.len() - 5] {
            let mut b = sealed.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            assert!(verify(&t, &vk).is_err(), "offset {i}");
        }
        // Another key does not verify it.
        let other = SigningKey::random(&mut rand_core::OsRng);
        assert!(matches!(
            verify(&sealed, other.verifying_key()),
            Err(SecretError::BadSignature)
        ));

        let (h, p) = inspect(&sealed).unwrap();
        assert_eq!(
            h,
            serde_json::json!({"b64": true, "alg": "ES256", "kid": "kbs:///default/sealing/pub"})
        );
        assert_eq!(p["name"], "kbs:///default/key/1");
        assert_eq!(p["type"], "vault");
    }

    #[test]
    fn keys_round_trip() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let private = private_jwk(&key, "k1");
        let public = public_jwk(&key, "k1");
        assert_eq!(private["kty"], "EC");
        assert_eq!(private["crv"], "P-256");
        assert_eq!(private["alg"], "ES256");
        assert_eq!(private["use"], "sig");
        assert_eq!(private["kid"], "k1");
        assert!(private["d"].is_string());
        assert!(public.get("d").is_none());
        assert_eq!((&private["x"], &private["y"]), (&public["x"], &public["y"]));
        let back = signing_key_from_jwk(&private.to_string()).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        assert_eq!(
            verifying_key_from_jwk(&public.to_string()).unwrap(),
            *key.verifying_key()
        );
        // Member order as upstream's keygen writes it.
        let text = serde_json::to_string(&Jwk {
            kty: "EC",
            crv: "P-256",
            alg: "ES256",
            use_: "sig",
            kid: "k",
            d: Some("D".into()),
            x: "X".into(),
            y: "Y".into(),
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"k","d":"D","x":"X","y":"Y"}"#
        );
    }

    #[test]
    fn refuses_bad_keys_and_arguments() {
        let public = UPSTREAM_TEST_KEY.replace(
            "\"d\": \"7baJLiTk68NcLgYPv05jJvElqoAhbzi1ZWx4OyILUtA\",",
            "",
        );
        assert!(matches!(
            signing_key_from_jwk(&public),
            Err(SecretError::Key(_))
        ));
        let mismatched = UPSTREAM_TEST_KEY.replace(
            "QT3_slJmispaOwnAo6hxebXGLRuiveFuRCLpS4j4S4k",
            "AT3_slJmispaOwnAo6hxebXGLRuiveFuRCLpS4j4S4k",
        );
        assert!(signing_key_from_jwk(&mismatched).is_err());
        assert!(signing_key_from_jwk(r#"{"kty":"RSA","n":"x","e":"AQAB"}"#).is_err());
        assert!(signing_key_from_jwk(&UPSTREAM_TEST_KEY.replace("ES256", "ES384")).is_err());
        assert!(signing_key_from_jwk("not json").is_err());

        for ok in [
            "kbs:///default/key/1",
            "kbs://host/a/b/c",
            "my-key",
            "keys/k1.json",
        ] {
            check_kid(ok).unwrap();
        }
        for bad in [
            "",
            "/etc/key",
            "../key",
            "a/../../b",
            "kbs:///a/b",
            "kbs:///a/../c",
        ] {
            assert!(check_kid(bad).is_err(), "{bad}");
        }
        for bad in ["default/key/1", "kbs://", "kbs:///a/b/c/d", "kbs:///a//c"] {
            assert!(check_kbs_uri("--resource", bad).is_err(), "{bad}");
        }
        assert!(json_object("x", Some("[1]")).is_err());
        assert!(json_object("x", Some("{")).is_err());
        assert_eq!(json_object("x", Some(r#"{"a":1}"#)).unwrap()["a"], 1);

        for bad in [
            "sealed.a.b",
            "unsealed.a.b.c",
            "sealed.!!.e30.AA",
            "sealed.e30.e30",
        ] {
            assert!(inspect(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keygen_writes_new_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let (private_out, public_out) = (dir.path().join("k.jwk"), dir.path().join("p.jwk"));
        let cmd = SecretCommand::Keygen {
            private_out: private_out.clone(),
            public_out: public_out.clone(),
            kid: DEFAULT_KEYGEN_KID.into(),
        };
        run(&cmd).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private_out)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let private = std::fs::read_to_string(&private_out).unwrap();
        assert!(
            private.starts_with("{\n  \"kty\": \"EC\",\n  \"crv\": \"P-256\","),
            "{private}"
        );
        assert!(private.ends_with("}\n"));
        let key = signing_key_from_jwk(&private).unwrap();
        let public = std::fs::read_to_string(&public_out).unwrap();
        assert_eq!(
            verifying_key_from_jwk(&public).unwrap(),
            *key.verifying_key()
        );
        assert!(matches!(run(&cmd), Err(SecretError::Exists { .. })));
        // The existing key was left alone.
        assert_eq!(std::fs::read_to_string(&private_out).unwrap(), private);
    }
}
