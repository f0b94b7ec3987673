//! Trustee's KBS wire protocol (RCAR: Request, Challenge, Attestation, Response),
//! version 0.4.0: every constant and request shape in one place.
//!
//! Spec: Trustee's KBS protocol,
//! <https://github.com/confidential-containers/trustee/blob/main/kbs/docs/kbs_attestation_protocol.md>,
//! and the `kbs-types` crate (0.18) for the message types; the project's summary of the
//! wire facts is `shared/reference/confidential.md` ("KBS protocol, RCAR").

use kbs_types::{Attestation, CompositeEvidence, InitData, Request, RuntimeData, Tee, TeePubKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The protocol version we speak. Trustee answers 401 to any other string.
pub const PROTOCOL_VERSION: &str = "0.4.0";
/// The session cookie set by `auth` and sent back on `attest` and resource requests.
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// Hash algorithms offered in `auth`'s `extra-params`.
pub const SUPPORTED_HASH_ALGORITHMS: [&str; 3] = ["sha256", "sha384", "sha512"];
/// `POST`: the Request; answers the Challenge.
pub const AUTH_PATH: &str = "/kbs/v0/auth";
/// `POST`: the Attestation; answers `{"token"}`.
pub const ATTEST_PATH: &str = "/kbs/v0/attest";
/// `GET` `<prefix>/<repo>/<type>/<tag>`: a resource as a flattened JWE.
pub const RESOURCE_PATH_PREFIX: &str = "/kbs/v0/resource";
/// `additional_evidence` when there is no secondary TEE: the empty JSON *string*.
pub const NO_ADDITIONAL_EVIDENCE: &str = "";
/// `init-data.format` for initdata documents.
pub const INIT_DATA_FORMAT_TOML: &str = "toml";
/// The scheme of resource URIs, `kbs:///<repo>/<type>/<tag>` (the host part is ignored).
pub const RESOURCE_URI_SCHEME: &str = "kbs://";

/// JWK / JWE names for the TEE key and resource encryption.
pub mod jose {
    /// JWK `kty` of the TEE key.
    pub const KTY_EC: &str = "EC";
    /// JWK `crv` of the TEE key.
    pub const CRV_P256: &str = "P-256";
    /// JWK `alg` of the TEE key and JWE `alg` of resources.
    pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
    /// JWE `enc` of resources.
    pub const ENC_A256GCM: &str = "A256GCM";
}

/// The `auth` request body.
pub fn auth_request(tee: Tee) -> Request {
    Request {
        version: PROTOCOL_VERSION.to_owned(),
        tee,
        extra_params: serde_json::json!({
            "supported-hash-algorithms": SUPPORTED_HASH_ALGORITHMS,
        }),
    }
}

/// The `attest` request body. `evidence_json` is the attester's `primary_evidence` text;
/// it must be JSON (it is embedded as a value, not a string).
pub fn attest_request(
    nonce: &str,
    tee_pubkey: TeePubKey,
    evidence_json: &str,
    init_data_toml: Option<&str>,
) -> Result<Attestation, serde_json::Error> {
    Ok(Attestation {
        init_data: init_data_toml.map(|body| InitData {
            format: INIT_DATA_FORMAT_TOML.to_owned(),
            body: body.to_owned(),
        }),
        runtime_data: RuntimeData {
            nonce: nonce.to_owned(),
            tee_pubkey,
        },
        tee_evidence: CompositeEvidence {
            primary_evidence: serde_json::from_str(evidence_json)?,
            additional_evidence: NO_ADDITIONAL_EVIDENCE.to_owned(),
        },
    })
}

/// The `attest` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestResponse {
    /// The attestation token (a JWT), also usable as a bearer token.
    pub token: String,
}

/// A resource answer: the flattened JWE JSON serialisation, with the fields kept as
/// received (the AAD is the `protected` string's bytes exactly as sent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlattenedJwe {
    /// base64url of the protected header JSON.
    pub protected: String,
    /// base64url of the wrapped content key.
    pub encrypted_key: String,
    /// base64url of the GCM IV.
    pub iv: String,
    /// base64url of the ciphertext.
    pub ciphertext: String,
    /// base64url of the GCM tag.
    pub tag: String,
    /// Optional extra AAD (JWE JSON `aad` member), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<String>,
}

/// A KBS resource path: `<repo>/<type>/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    /// Repository (e.g. `default`).
    pub repo: String,
    /// Type (e.g. `key`).
    pub kind: String,
    /// Tag (e.g. `1`).
    pub tag: String,
}

impl ResourcePath {
    /// Parses `kbs:///<repo>/<type>/<tag>` (any host part is ignored, as upstream does).
    pub fn from_uri(uri: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BadResourceUri {
            uri: uri.to_owned(),
            reason,
        };
        let rest = uri
            .strip_prefix(RESOURCE_URI_SCHEME)
            .ok_or_else(|| bad("must start with kbs://"))?;
        // Drop the authority: everything up to the first '/'.
        let path = rest
            .find('/')
            .map(|i| &rest[i + 1..])
            .ok_or_else(|| bad("no path: want kbs:///<repo>/<type>/<tag>"))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [repo, kind, tag] => Self::new(repo, kind, tag).map_err(|_| bad(SEGMENT_RULE)),
            _ => Err(bad("want exactly three segments <repo>/<type>/<tag>")),
        }
    }

    /// A path from its three segments, each non-empty, without `/`, `.`/`..`, `?` or `#`.
    pub fn new(repo: &str, kind: &str, tag: &str) -> Result<Self, Error> {
        for segment in [repo, kind, tag] {
            if !valid_segment(segment) {
                return Err(Error::BadResourceUri {
                    uri: format!("{repo}/{kind}/{tag}"),
                    reason: SEGMENT_RULE,
                });
            }
        }
        Ok(Self {
            repo: repo.to_owned(),
            kind: kind.to_owned(),
            tag: tag.to_owned(),
        })
    }

    /// The request path, `/kbs/v0/resource/<repo>/<type>/<tag>`.
    pub fn request_path(&self) -> String {
        format!("{RESOURCE_PATH_PREFIX}/{self}")
    }
}

const SEGMENT_RULE: &str =
    "each of <repo>/<type>/<tag> must be non-empty, not . or .., without / ? # % or whitespace";

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '%') || c.is_whitespace() || c.is_control())
}

impl std::fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn jwk() -> TeePubKey {
        TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "XXXX".into(),
            y: "YYYY".into(),
        }
    }

    #[test]
    fn auth_request_bytes() {
        let text = serde_json::to_string(&auth_request(Tee::Snp)).unwrap();
        assert_eq!(
            text,
            r#"{"version":"0.4.0","tee":"snp","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512"]}}"#
        );
    }

    #[test]
    fn attest_request_shape() {
        // One member, so the golden bytes do not depend on serde_json's map ordering.
        let evidence = r#"{"report_data":"AAAA"}"#;
        let req = attest_request("NONCE", jwk(), evidence, None).unwrap();
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"init-data":null,"#,
                r#""runtime-data":{"nonce":"NONCE","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"XXXX","y":"YYYY"}},"#,
                r#""tee-evidence":{"primary_evidence":{"report_data":"AAAA"},"additional_evidence":""}}"#
            )
        );
        let with_init = attest_request("N", jwk(), evidence, Some("a = 1\n")).unwrap();
        let v = serde_json::to_value(&with_init).unwrap();
        assert_eq!(
            v["init-data"],
            serde_json::json!({"format": "toml", "body": "a = 1\n"})
        );
        // additional_evidence is a JSON string, primary_evidence a JSON value.
        assert!(v["tee-evidence"]["additional_evidence"].is_string());
        assert!(v["tee-evidence"]["primary_evidence"].is_object());
    }

    #[test]
    fn evidence_must_be_json() {
        assert!(attest_request("N", jwk(), "not json", None).is_err());
    }

    #[test]
    fn resource_uris() {
        let p = ResourcePath::from_uri("kbs:///default/key/1").unwrap();
        assert_eq!(p.to_string(), "default/key/1");
        assert_eq!(p.request_path(), "/kbs/v0/resource/default/key/1");
        let p = ResourcePath::from_uri("kbs://ignored.host:8080/a/b/c").unwrap();
        assert_eq!(p.to_string(), "a/b/c");
        for bad in [
            "http:///a/b/c",
            "kbs://",
            "kbs:///a/b",
            "kbs:///a/b/c/d",
            "kbs:///a//c",
            "kbs:///a/../c",
            "kbs:///a/b/c?x=1",
        ] {
            assert!(ResourcePath::from_uri(bad).is_err(), "{bad}");
        }
    }
}
