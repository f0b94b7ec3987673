//! The report-data binding: what the evidence's report data must be so the KBS knows the
//! evidence was made for *this* nonce and *this* TEE key.
//!
//! `report_data = SHA-384(JCS({"additional-evidence": "", "nonce": <nonce>,
//! "tee-pubkey": <JWK>}))`, RFC 8785 canonical JSON (see
//! `shared/reference/confidential.md`, "Report-data binding").
//!
//! # Why no JCS crate
//!
//! The only inputs are JSON objects whose keys we know and whose values are all strings
//! (an EC or RSA JWK has only string members). For such documents RFC 8785 reduces to:
//! members sorted by key (UTF-16 code units; our keys are ASCII, so byte order), no
//! whitespace, and strings escaped as ECMAScript `JSON.stringify` does: `"` and `\`
//! escaped, `\b \f \n \r \t` short forms, other controls below U+0020 as lowercase
//! `\u00xx`, everything else (including `/` and non-ASCII) literal. That is exactly what
//! `serde_json` writes for a string, so we write the keys in sorted order by hand and let
//! `serde_json` encode each string. Number canonicalisation, the hard part of JCS, never
//! arises. (We do not rely on `serde_json::Map` ordering, which changes if any crate in the
//! build enables serde_json's `preserve_order`.)

use kbs_types::TeePubKey;
use sha2::{Digest, Sha384};

use crate::kbs::protocol::NO_ADDITIONAL_EVIDENCE;

/// Length of the binding digest (SHA-384).
pub const REPORT_DATA_LEN: usize = 48;

/// The canonical (RFC 8785) text of the runtime data that the report data binds.
pub fn canonical_runtime_data(nonce: &str, tee_pubkey: &TeePubKey) -> String {
    let mut out = String::from("{");
    push_member(&mut out, "additional-evidence", NO_ADDITIONAL_EVIDENCE);
    out.push(',');
    push_member(&mut out, "nonce", nonce);
    out.push_str(",\"tee-pubkey\":{");
    // Members of each JWK kind, sorted by key.
    let members: Vec<(&str, &str)> = match tee_pubkey {
        TeePubKey::EC { crv, alg, x, y } => vec![
            ("alg", alg),
            ("crv", crv),
            ("kty", "EC"),
            ("x", x),
            ("y", y),
        ],
        TeePubKey::RSA { alg, k_mod, k_exp } => {
            vec![("alg", alg), ("e", k_exp), ("kty", "RSA"), ("n", k_mod)]
        }
        TeePubKey::AKP { alg, public_key } => {
            vec![("alg", alg), ("kty", "AKP"), ("pub", public_key)]
        }
    };
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_member(&mut out, k, v);
    }
    out.push_str("}}");
    out
}

fn push_member(out: &mut String, key: &str, value: &str) {
    push_string(out, key);
    out.push(':');
    push_string(out, value);
}

fn push_string(out: &mut String, s: &str) {
    // Serialising a &str cannot fail; fall back to an empty string rather than panic.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// The 48-byte report data binding `nonce` and `tee_pubkey`.
pub fn report_data(nonce: &str, tee_pubkey: &TeePubKey) -> [u8; REPORT_DATA_LEN] {
    Sha384::digest(canonical_runtime_data(nonce, tee_pubkey).as_bytes()).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn vector_jwk() -> TeePubKey {
        TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "XXXX".into(),
            y: "YYYY".into(),
        }
    }

    /// The test vector of `shared/reference/confidential.md`.
    #[test]
    fn reference_vector() {
        let text = canonical_runtime_data("NONCEbase64std=", &vector_jwk());
        assert_eq!(
            text,
            r#"{"additional-evidence":"","nonce":"NONCEbase64std=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"XXXX","y":"YYYY"}}"#
        );
        assert_eq!(
            hex(&report_data("NONCEbase64std=", &vector_jwk())),
            "38d9fa252683fc1a91457d267cc20900e5d8e6cbcfcf25c0aa0ccf977c2537b52dec94867ae52050b676422a122fb6b8"
        );
    }

    /// Our hand-written canonical form equals a sorted-key re-serialisation, and escapes
    /// strings like JCS.
    #[test]
    fn matches_sorted_serialisation_and_escapes() {
        let nonce = "a\"b\\c/d\u{1f}é\n";
        let text = canonical_runtime_data(nonce, &vector_jwk());
        assert!(text.contains(r#""nonce":"a\"b\\c/d\u001fé\n""#), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sorted: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_value(v).unwrap();
        let mut resorted = String::from("{");
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                resorted.push(',');
            }
            resorted.push_str(&serde_json::to_string(k).unwrap());
            resorted.push(':');
            let inner: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_value(v.clone()).unwrap_or_default();
            if inner.is_empty() {
                resorted.push_str(&serde_json::to_string(v).unwrap());
            } else {
                resorted.push_str(&serde_json::to_string(&inner).unwrap());
            }
        }
        resorted.push('}');
        assert_eq!(text, resorted);
    }

    #[test]
    fn binding_changes_with_inputs() {
        let a = report_data("n1", &vector_jwk());
        assert_ne!(a, report_data("n2", &vector_jwk()));
        let other = TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "XXXX".into(),
            y: "YYYZ".into(),
        };
        assert_ne!(a, report_data("n1", &other));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
