#![allow(clippy::unwrap_used)]
//! Golden evidence JSON: the shapes Trustee's verifiers deserialise.
//!
//! SNP: Trustee deserialises `{"attestation_report": sev::AttestationReport, "cert_chain":
//! Option<Vec<sev::CertTableEntry>>}` with sev 6.3's serde derive. We check that our JSON
//! deserialises with those types into the very report `sev` parses from the fixture, and,
//! independently of the crate version we build with, that the field names, their order and
//! the value encodings are the 6.3 ones (hand-written below).

use std::path::Path;

use base64::Engine;
use cocoon_attester::sample::SampleEvidence;
use cocoon_attester::snp::certs::build_cert_table;
use cocoon_attester::snp::SnpEvidence;
use cocoon_attester::tdx::TdxEvidence;
use serde::Deserialize;
use sev::certs::snp::Certificate;
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::{CertTableEntry, CertType};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(rel)).unwrap()
}

/// What Trustee's SNP verifier declares (deps/verifier/src/snp/mod.rs).
#[derive(Deserialize)]
struct TrusteeSnpEvidence {
    attestation_report: AttestationReport,
    cert_chain: Option<Vec<CertTableEntry>>,
}

/// The sev 6.3 `AttestationReport` serde field order.
const SEV63_REPORT_FIELDS: &[&str] = &[
    "version",
    "guest_svn",
    "policy",
    "family_id",
    "image_id",
    "vmpl",
    "sig_algo",
    "current_tcb",
    "plat_info",
    "key_info",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "reported_tcb",
    "cpuid_fam_id",
    "cpuid_mod_id",
    "cpuid_step",
    "chip_id",
    "committed_tcb",
    "current",
    "committed",
    "launch_tcb",
    "launch_mit_vector",
    "current_mit_vector",
    "signature",
];

fn cert_entries() -> Vec<CertTableEntry> {
    let pem = String::from_utf8(fixture("snp/sev-cert_chain_milan")).unwrap();
    let der: Vec<Vec<u8>> = pem
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|c| c.contains("BEGIN"))
        .map(|c| {
            Certificate::from_pem(c.trim().as_bytes())
                .unwrap()
                .to_der()
                .unwrap()
        })
        .collect();
    vec![
        CertTableEntry::new(CertType::VCEK, fixture("snp/sev-vcek_milan.der")),
        CertTableEntry::new(CertType::ASK, der[0].clone()),
        CertTableEntry::new(CertType::ARK, der[1].clone()),
    ]
}

/// Positions of `"key":` in order; panics if a key is missing or out of order.
fn assert_key_order(json: &str, keys: &[&str]) {
    let mut from = 0;
    for key in keys {
        let needle = format!("\"{key}\":");
        let at = json[from..]
            .find(&needle)
            .unwrap_or_else(|| panic!("{key} missing or out of order"));
        from += at + needle.len();
    }
}

#[test]
fn snp_evidence_deserialises_with_sev_types_into_the_same_report() {
    let raw = fixture("snp/trustee-test-report.bin");
    let table = build_cert_table(&cert_entries()).unwrap();
    let json = SnpEvidence::from_raw(&raw, Some(&table))
        .unwrap()
        .to_json()
        .unwrap();

    let theirs: TrusteeSnpEvidence = serde_json::from_str(&json).unwrap();
    assert_eq!(
        theirs.attestation_report,
        AttestationReport::from_bytes(&raw).unwrap()
    );
    assert_eq!(theirs.cert_chain.unwrap(), cert_entries());

    // Re-encoding the deserialised report gives back the signed bytes.
    let mut again = Vec::new();
    theirs.attestation_report.write_bytes(&mut again).unwrap();
    assert_eq!(again[..0x2A0], raw[..0x2A0]);
}

#[test]
fn snp_evidence_has_the_sev_6_3_shape() {
    let raw = fixture("snp/trustee-test-report.bin");
    let table = build_cert_table(&cert_entries()).unwrap();
    let json = SnpEvidence::from_raw(&raw, Some(&table))
        .unwrap()
        .to_json()
        .unwrap();

    assert!(json.starts_with("{\"attestation_report\":{\"version\":2,\"guest_svn\":4,"));
    assert_key_order(&json, &["attestation_report"]);
    assert_key_order(&json, SEV63_REPORT_FIELDS);
    assert_key_order(&json, &["signature", "r", "s", "cert_chain"]);

    // Hand-written 6.3 encodings: bitfields as integers, byte arrays as integer arrays,
    // TCB and version as objects, absent v3/v5 fields as null.
    for golden in [
        "\"policy\":196639,",
        "\"family_id\":[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],",
        "\"vmpl\":0,\"sig_algo\":1,",
        "\"reported_tcb\":{\"fmc\":null,\"bootloader\":3,\"tee\":0,\"snp\":8,\"microcode\":115},",
        "\"cpuid_fam_id\":null,\"cpuid_mod_id\":null,\"cpuid_step\":null,",
        "\"chip_id\":[195,132,39,163,",
        "\"current\":{\"major\":1,\"minor\":52,\"build\":4},",
        "\"launch_mit_vector\":null,\"current_mit_vector\":null,",
        "\"signature\":{\"r\":[",
        "\"cert_chain\":[{\"cert_type\":\"VCEK\",\"data\":[48,130,",
        "{\"cert_type\":\"ASK\",\"data\":[",
        "{\"cert_type\":\"ARK\",\"data\":[",
    ] {
        assert!(json.contains(golden), "missing {golden} in {json}");
    }

    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let report = &v["attestation_report"];
    assert_eq!(report.as_object().unwrap().len(), SEV63_REPORT_FIELDS.len());
    let bytes = |k: &str| -> Vec<u8> {
        report[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} is not an array"))
            .iter()
            .map(|n| u8::try_from(n.as_u64().unwrap()).unwrap())
            .collect()
    };
    assert_eq!(bytes("report_data"), raw[0x50..0x90]);
    assert_eq!(bytes("measurement"), raw[0x90..0xC0]);
    assert_eq!(bytes("host_data"), raw[0xC0..0xE0]);
    assert_eq!(bytes("chip_id"), raw[0x1A0..0x1E0]);
    assert_eq!(report["signature"]["r"].as_array().unwrap().len(), 72);
}

#[test]
fn snp_evidence_v3_report_and_no_certs() {
    let raw = fixture("snp/trustee-test-vlek-report.bin");
    let json = SnpEvidence::from_raw(&raw, None)
        .unwrap()
        .to_json()
        .unwrap();
    assert!(json.ends_with(",\"cert_chain\":null}"), "{json}");
    assert!(json.contains("\"cpuid_fam_id\":25,\"cpuid_mod_id\":1,\"cpuid_step\":1,"));
    // An all-zero table (host gave no certificates) is also `null`.
    let json = SnpEvidence::from_raw(&raw, Some(&[0u8; 4096]))
        .unwrap()
        .to_json()
        .unwrap();
    assert!(json.ends_with(",\"cert_chain\":null}"));
}

#[test]
fn snp_evidence_rejects_garbage() {
    assert!(SnpEvidence::from_raw(&[0u8; 100], None).is_err());
    let mut raw = fixture("snp/trustee-test-report.bin");
    raw[0] = 0; // version 0
    assert!(SnpEvidence::from_raw(&raw, None).is_err());
}

#[test]
fn tdx_evidence_round_trips_to_the_fixture_bytes() {
    let quote = fixture("tdx/trustee-tdx_quote_5.dat");
    let ccel = fixture("eventlog/trustee-CCEL_data");
    let json = TdxEvidence::new(&quote, Some(&ccel)).to_json().unwrap();
    assert!(json.starts_with("{\"cc_eventlog\":\""));
    assert_key_order(&json, &["cc_eventlog", "quote"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2);
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(v["quote"].as_str().unwrap()).unwrap(), quote);
    assert_eq!(
        b64.decode(v["cc_eventlog"].as_str().unwrap()).unwrap(),
        ccel
    );

    let back: TdxEvidence = serde_json::from_str(&json).unwrap();
    assert_eq!(back.quote_bytes().unwrap(), quote);

    let no_log = TdxEvidence::new(&quote, None).to_json().unwrap();
    assert!(no_log.starts_with("{\"cc_eventlog\":null,\"quote\":\""));
}

#[test]
fn sample_evidence_is_exact() {
    let digest: Vec<u8> = (0u8..48).collect();
    let json = SampleEvidence::new(&digest).to_json().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&digest);
    assert_eq!(json, format!("{{\"svn\":\"1\",\"report_data\":\"{b64}\"}}"));
}

#[test]
fn describe_file_reads_our_evidence_json() {
    let raw = fixture("snp/trustee-test-report.bin");
    let table = build_cert_table(&cert_entries()).unwrap();
    let json = SnpEvidence::from_raw(&raw, Some(&table))
        .unwrap()
        .to_json()
        .unwrap();
    let text = cocoon_attester::describe_file(json.as_bytes()).unwrap();
    assert!(text.contains(&hex::encode(&raw[0x90..0xC0])), "{text}");
    assert!(text.contains("VCEK, 1360 bytes"), "{text}");

    let quote = fixture("tdx/trustee-tdx_quote_4.dat");
    let json = TdxEvidence::new(&quote, None).to_json().unwrap();
    let text = cocoon_attester::describe_file(json.as_bytes()).unwrap();
    assert!(text.contains("705ee9381b8633a9"), "{text}");
    assert!(text.contains("cc_eventlog          null"), "{text}");

    let json = SampleEvidence::new(b"abc").to_json().unwrap();
    let text = cocoon_attester::describe_file(json.as_bytes()).unwrap();
    assert!(text.contains("616263"), "{text}");
}
