//! `--accept-evidence snp-test`: SEV-SNP evidence in a TEST MODE that checks the
//! report-data and init-data bindings and NOT THE SIGNATURE.
//!
//! Made for the fake SEV-SNP devices of `tests/qemu/fake-tee/` (a recorded real report with
//! the request's report data patched in, which breaks its signature). Never point anything
//! but a test at a KBS in this mode: any 1184 bytes with the right report data pass.
//!
//! What Trustee's SNP verifier (`deps/verifier/src/snp/mod.rs` at 78962cd4) does, and what
//! this mode does of it:
//!
//! | Trustee | here |
//! | --- | --- |
//! | deserialise `{"attestation_report": sev 6.3 AttestationReport, "cert_chain": Option<Vec<CertTableEntry>>}` ("Deserialize SNP Evidence failed") | the same field names, all required ones required (our own serde types) |
//! | `version` in 3..=5 | 2..=5: the recorded real reports we have are version 2 (their processor generation, which 3 adds, matters only for the chain) |
//! | ARK/ASK/VCEK chain, report signature, TCB vs VCEK | **NOT CHECKED** |
//! | `vmpl == 0` ("VMPL Check Failed") | the same |
//! | `report_data` == the binding, zero-padded to 64 ("Report Data Mismatch") | the same |
//! | with `init-data` (`format` `toml`, else "Unsupported initdata format"): the TOML (`version`, `algorithm`, `data`) parsed, its text digested with `algorithm`, `host_data` == the digest cut/padded to 32 ("Host Data Mismatch") | the same (`sm3` unsupported) |

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// `ATTESTATION_REPORT.REPORT_DATA` width.
pub const REPORT_DATA_LEN: usize = 64;
/// Report versions this mode takes (Trustee: 3..=5, see the module docs).
pub const VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;
/// `ATTESTATION_REPORT.HOST_DATA` width.
pub const HOST_DATA_LEN: usize = 32;

/// Trustee's `Initdata` (attestation-service/src/lib.rs): what `init-data.body` must be.
#[derive(Deserialize)]
#[allow(dead_code)] // parsed for shape only
struct Initdata {
    version: String,
    algorithm: String,
    data: HashMap<String, String>,
}

/// The digest Trustee binds for `init-data` `{format, body}`: `body` parsed as its
/// `Initdata` TOML, then the whole text hashed with its `algorithm`.
pub fn init_data_digest(format: &str, body: &str) -> Result<Vec<u8>, String> {
    if format != "toml" {
        return Err(format!("Unsupported initdata format: {format}"));
    }
    let init: Initdata = toml::from_str(body)
        .map_err(|e| format!("parse init data: parse TOML structured data: {e}"))?;
    let bytes = body.as_bytes();
    Ok(match init.algorithm.as_str() {
        "sha256" => Sha256::digest(bytes).to_vec(),
        "sha384" => Sha384::digest(bytes).to_vec(),
        "sha512" => Sha512::digest(bytes).to_vec(),
        other => {
            return Err(format!(
                "parse init data: algorithm {other:?} (snp-test: sha256/384/512)"
            ))
        }
    })
}

/// The evidence shape Trustee deserialises (`SnpEvidence`).
#[derive(Deserialize)]
struct SnpEvidence {
    attestation_report: AttestationReport,
    cert_chain: Option<Vec<CertTableEntry>>,
}

/// sev 6.3's `CertTableEntry` serde form.
#[derive(Deserialize)]
#[allow(dead_code)] // parsed for shape only
struct CertTableEntry {
    cert_type: Value,
    data: Vec<u8>,
}

/// sev 6.3's `AttestationReport` serde form: byte arrays are JSON arrays of integers; the
/// fields read here are typed, the others only required (missing one fails like Trustee).
#[derive(Deserialize)]
#[allow(dead_code)] // parsed for shape only
struct AttestationReport {
    version: u32,
    guest_svn: u32,
    policy: Value,
    family_id: Vec<u8>,
    image_id: Vec<u8>,
    vmpl: u32,
    sig_algo: u32,
    current_tcb: Value,
    plat_info: Value,
    key_info: Value,
    report_data: Vec<u8>,
    measurement: Vec<u8>,
    host_data: Vec<u8>,
    id_key_digest: Vec<u8>,
    author_key_digest: Vec<u8>,
    report_id: Vec<u8>,
    report_id_ma: Vec<u8>,
    reported_tcb: Value,
    chip_id: Vec<u8>,
    committed_tcb: Value,
    current: Value,
    committed: Value,
    launch_tcb: Value,
    signature: Value,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks `evidence` (the `primary_evidence` value) against `binding` (the SHA-384 of the
/// runtime data; zero-padded to 64 as Trustee's `regularize_data` does) and, given one,
/// `init_data_digest` against HOST_DATA (cut or zero-padded to 32). THE SIGNATURE IS
/// NOT VERIFIED. `Ok` holds the claims for the token's `evidence` member.
pub fn verify_test_mode(
    evidence: &Value,
    binding: &[u8],
    init_data_digest: Option<&[u8]>,
) -> Result<Value, String> {
    let ev: SnpEvidence = serde_json::from_value(evidence.clone())
        .map_err(|e| format!("Deserialize SNP Evidence failed: {e}"))?;
    let r = &ev.attestation_report;
    if !VERSIONS.contains(&r.version) {
        return Err(format!(
            "Unexpected attestation report version {} (snp-test takes {}..={})",
            r.version,
            VERSIONS.start(),
            VERSIONS.end()
        ));
    }
    if r.report_data.len() != REPORT_DATA_LEN {
        return Err(format!(
            "Deserialize SNP Evidence failed: report_data is {} bytes",
            r.report_data.len()
        ));
    }
    // NO signature, certificate chain or TCB check: this is the test mode.
    if r.vmpl != 0 {
        return Err("VMPL Check Failed".into());
    }
    let mut expected = binding.to_vec();
    expected.resize(REPORT_DATA_LEN, 0);
    if r.report_data != expected {
        return Err(format!(
            "Report Data Mismatch. Given: {}, Expected: {}",
            hex(&r.report_data),
            hex(&expected)
        ));
    }
    if let Some(digest) = init_data_digest {
        let mut expected = digest.to_vec();
        expected.resize(HOST_DATA_LEN, 0);
        if r.host_data != expected {
            return Err(format!(
                "Host Data Mismatch. Given: {}, Expected: {}",
                hex(&r.host_data),
                hex(&expected)
            ));
        }
    }
    Ok(json!({
        "report_data": hex(&r.report_data),
        "measurement": hex(&r.measurement),
        "host_data": hex(&r.host_data),
        "cert_chain": ev.cert_chain.map(|c| c.len()).unwrap_or(0),
        "signature_verified": false,
        "test_mode": "snp-test: report data checked, signature NOT verified",
    }))
}
