//! Canonical JSON (RFC 8785 for the values the protocol carries: keys sorted by UTF-16 code
//! units, no whitespace, serde_json's string escaping, which matches ECMAScript's) and the
//! report-data binding Trustee's attestation service computes.

use serde_json::{json, Value};
use sha2::{Digest, Sha384};

/// The canonical text of `v`. Floats are printed by serde_json, which agrees with RFC 8785
/// for integers (the protocol carries no floats).
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(inner) = m.get(*k) {
                    write(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, inner) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(inner, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What the primary evidence's report data must be: SHA-384 of the canonical
/// `{"additional-evidence": <string>, "nonce": <nonce>, "tee-pubkey": <JWK>}`.
pub fn primary_report_data(nonce: &str, tee_pubkey: &Value, additional_evidence: &str) -> Vec<u8> {
    let doc = json!({
        "tee-pubkey": tee_pubkey,
        "nonce": nonce,
        "additional-evidence": additional_evidence,
    });
    Sha384::digest(canonical(&doc).as_bytes()).to_vec()
}

/// What additional (secondary-device) evidence binds: `{"nonce", "tee-pubkey"}` only.
pub fn additional_report_data(nonce: &str, tee_pubkey: &Value) -> Vec<u8> {
    let doc = json!({"tee-pubkey": tee_pubkey, "nonce": nonce});
    Sha384::digest(canonical(&doc).as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The vector of `shared/reference/confidential.md`.
    #[test]
    fn binding_test_vector() {
        let jwk = json!({"y":"YYYY","x":"XXXX","kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW"});
        let doc = json!({"nonce":"NONCEbase64std=","tee-pubkey":jwk,"additional-evidence":""});
        assert_eq!(
            canonical(&doc),
            r#"{"additional-evidence":"","nonce":"NONCEbase64std=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"XXXX","y":"YYYY"}}"#
        );
        let digest = primary_report_data("NONCEbase64std=", &jwk, "");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "38d9fa252683fc1a91457d267cc20900e5d8e6cbcfcf25c0aa0ccf977c2537b52dec94867ae52050b676422a122fb6b8"
        );
    }

    /// Trustee's attestation-service test vector (`parse_runtime_data`, structured case).
    #[test]
    fn trustee_as_vector() {
        let doc = json!({"b": 1, "a": "test", "c": {"d": "e"}});
        assert_eq!(canonical(&doc), r#"{"a":"test","b":1,"c":{"d":"e"}}"#);
        let hex: String = Sha384::digest(canonical(&doc).as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
        );
    }

    #[test]
    fn utf16_order_and_escapes() {
        // By code point U+E000 < U+1F600, but in UTF-16 the surrogate 0xD83D < 0xE000.
        let doc: Value = serde_json::from_str(r#"{"\ue000":1,"😀":2,"a\n":[true,null]}"#).unwrap();
        assert_eq!(
            canonical(&doc),
            "{\"a\\n\":[true,null],\"😀\":2,\"\u{e000}\":1}"
        );
    }
}
