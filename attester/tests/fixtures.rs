#![allow(clippy::unwrap_used)]
//! Every fixture in `tests/fixtures/{snp,tdx}`: recorded on real hardware by upstream
//! projects (see `tests/fixtures/PROVENANCE.md`). Known values are cross-checked against
//! independent sources: the VCEK certificate's extensions, and the expectations in upstream
//! tests (Trustee `deps/verifier/src/tdx/claims.rs`, guest-components
//! `attestation-agent/attester/src/tdx/report.rs`).

use std::path::{Path, PathBuf};

use cocoon_attester::describe_file;
use cocoon_attester::parse::snp::{verify_report_signature, SnpReport};
use cocoon_attester::parse::tdx::{TdQuote, TdReport};
use cocoon_attester::parse::{detect, Parsed};
use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use x509_cert::der::asn1::{OctetString, Uint};
use x509_cert::der::Decode;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn milan_hex_report() -> Vec<u8> {
    let text = String::from_utf8(fixture("snp/sev-report_milan.hex")).unwrap();
    hex::decode(text.split_whitespace().collect::<String>()).unwrap()
}

fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(Path::new(FIXTURES).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {dir}");
    v
}

// ---------------------------------------------------------------------------------------
// Every file is recognised
// ---------------------------------------------------------------------------------------

#[test]
fn every_snp_fixture_is_recognised() {
    let mut reports = 0;
    for path in files_in("snp") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        if name.contains("report") {
            let text = describe_file(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                text.contains("SEV-SNP attestation report"),
                "{name}: {text}"
            );
            reports += 1;
        } else if name.ends_with(".der") {
            x509_cert::Certificate::from_der(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            Certificate::from_der(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.contains("cert_chain") {
            assert_eq!(pem_certs(&bytes).len(), 2, "{name}: ASK + ARK");
        } else {
            panic!("unexpected SNP fixture {name}: add a case for it");
        }
    }
    assert_eq!(reports, 3);
}

#[test]
fn every_tdx_fixture_is_recognised() {
    for path in files_in("tdx") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let parsed = detect(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        match (name.as_str(), &parsed) {
            ("gc-tdx_report_1.bin", Parsed::TdReport(_)) => {}
            (n, Parsed::TdQuote(q)) if n.starts_with("trustee-tdx_quote_") => {
                assert_eq!(q.total_len, bytes.len());
                assert!(q.signature_data_len > 0);
            }
            (n, p) => panic!("{n} recognised as the wrong kind: {p:?}"),
        }
        describe_file(&bytes).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// SEV-SNP reports: field values and signatures
// ---------------------------------------------------------------------------------------

/// The VCEK/VLEK certifies the chip ID and reported TCB: an independent check of our
/// field offsets and TCB decoding. OIDs from AMD's VCEK specification (pub. 57230).
fn check_against_certificate(report: &SnpReport, cert_der: &[u8], expect_hwid: bool) {
    let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    let exts = cert.tbs_certificate.extensions.unwrap();
    let ext = |oid: &str| {
        exts.iter()
            .find(|e| e.extn_id.to_string() == oid)
            .unwrap_or_else(|| panic!("no extension {oid}"))
            .extn_value
            .as_bytes()
            .to_vec()
    };
    let int = |oid: &str| {
        let v = Uint::from_der(&ext(oid)).unwrap();
        *v.as_bytes().last().unwrap()
    };
    let tcb = report.reported_tcb();
    assert_eq!(int("1.3.6.1.4.1.3704.1.3.1"), tcb.bootloader, "blSPL");
    assert_eq!(int("1.3.6.1.4.1.3704.1.3.2"), tcb.tee, "teeSPL");
    assert_eq!(int("1.3.6.1.4.1.3704.1.3.3"), tcb.snp, "snpSPL");
    assert_eq!(int("1.3.6.1.4.1.3704.1.3.8"), tcb.microcode, "ucodeSPL");
    if expect_hwid {
        let raw = ext("1.3.6.1.4.1.3704.1.4");
        let hwid = if raw.len() == 64 {
            raw
        } else {
            OctetString::from_der(&raw).unwrap().as_bytes().to_vec()
        };
        assert_eq!(hwid, report.chip_id.to_vec(), "hwID is the chip ID");
    }
}

#[test]
fn trustee_vcek_report_fields() {
    let bytes = fixture("snp/trustee-test-report.bin");
    let r = SnpReport::from_bytes(&bytes).unwrap();
    assert_eq!(r.version.get(), 2);
    assert_eq!(r.guest_svn.get(), 4);
    assert_eq!(r.policy.get(), 0x3_001f);
    assert_eq!(r.policy_abi(), (0, 0x1f));
    assert!(r.policy_smt_allowed());
    assert!(!r.policy_debug_allowed());
    assert_eq!(r.vmpl.get(), 0);
    assert_eq!(r.signature_algo.get(), 1);
    assert_eq!(r.signing_key(), "VCEK");
    assert!(!r.is_turin_like());
    let tcb = r.reported_tcb();
    assert_eq!(
        (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (3, 0, 8, 115)
    );
    assert_eq!(&r.chip_id[..4], &[0xc3, 0x84, 0x27, 0xa3]);
    check_against_certificate(&r, &fixture("snp/trustee-test-vcek.der"), true);

    // The sev crate agrees on every field we both model.
    let s = AttestationReport::from_bytes(&bytes).unwrap();
    assert_eq!(s.report_data.0, r.report_data);
    assert_eq!(s.measurement.0, r.measurement);
    assert_eq!(s.host_data.0, r.host_data);
    assert_eq!(s.chip_id.0, r.chip_id);
    assert_eq!(s.reported_tcb.microcode, tcb.microcode);
    assert_eq!(s.guest_svn, r.guest_svn.get());
}

#[test]
fn trustee_vlek_report_fields() {
    let bytes = fixture("snp/trustee-test-vlek-report.bin");
    let r = SnpReport::from_bytes(&bytes).unwrap();
    assert_eq!(r.version.get(), 3);
    assert_eq!(r.signing_key(), "VLEK");
    assert_eq!(
        (r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step),
        (0x19, 0x01, 0x01)
    );
    assert_eq!(r.chip_id, [0u8; 64], "VLEK reports mask the chip ID");
    let tcb = r.reported_tcb();
    assert_eq!(
        (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (4, 0, 0x18, 0xd9)
    );
    check_against_certificate(&r, &fixture("snp/trustee-test-vlek.der"), false);
}

#[test]
fn milan_hex_report_fields() {
    let bytes = milan_hex_report();
    let r = SnpReport::from_bytes(&bytes).unwrap();
    assert_eq!(r.version.get(), 2);
    assert_eq!(r.policy.get(), 0x3_0000);
    check_against_certificate(&r, &fixture("snp/sev-vcek_milan.der"), true);
}

#[test]
fn snp_signatures_verify_with_sev_and_with_ours() {
    let cases = [
        (
            fixture("snp/trustee-test-report.bin"),
            fixture("snp/trustee-test-vcek.der"),
        ),
        (
            fixture("snp/trustee-test-vlek-report.bin"),
            fixture("snp/trustee-test-vlek.der"),
        ),
        (milan_hex_report(), fixture("snp/sev-vcek_milan.der")),
    ];
    for (report, vek) in &cases {
        let cert = Certificate::from_der(vek).unwrap();
        let parsed = AttestationReport::from_bytes(report).unwrap();
        (&cert, &parsed).verify().unwrap();
        verify_report_signature(report, vek).unwrap();
    }
    // A report does not verify with another chip's key.
    let err = verify_report_signature(&cases[0].0, &cases[2].1).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[test]
fn a_flipped_byte_fails_the_signature() {
    let report = fixture("snp/trustee-test-report.bin");
    let vek = fixture("snp/trustee-test-vcek.der");
    let cert = Certificate::from_der(&vek).unwrap();
    // measurement, report_data, host_data, policy, reported TCB: through sev's types ...
    for at in [0x08usize, 0x50, 0x90, 0xC0, 0x180] {
        let mut bad = report.clone();
        bad[at] ^= 0x01;
        let parsed = AttestationReport::from_bytes(&bad).unwrap();
        assert!(
            (&cert, &parsed).verify().is_err(),
            "sev accepted a flip at {at:#x}"
        );
    }
    // ... and through our raw-bytes check, including reserved bytes sev does not model.
    for at in (0..0x2A0).step_by(29).chain([0x4C, 0x18B, 0x208]) {
        let mut bad = report.clone();
        bad[at] ^= 0x80;
        assert!(
            verify_report_signature(&bad, &vek).is_err(),
            "accepted a flip at {at:#x}"
        );
    }
    // A flip in the signature itself fails too.
    let mut bad = report.clone();
    bad[0x2A0] ^= 1;
    assert!(verify_report_signature(&bad, &vek).is_err());
}

fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(pem).unwrap();
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .map(|c| c.trim().as_bytes().to_vec())
        .collect()
}

#[test]
fn milan_chain_ark_ask_vcek_verifies() {
    let certs = pem_certs(&fixture("snp/sev-cert_chain_milan"));
    let ask = Certificate::from_pem(&certs[0]).unwrap();
    let ark = Certificate::from_pem(&certs[1]).unwrap();
    let vek = Certificate::from_der(&fixture("snp/sev-vcek_milan.der")).unwrap();
    let chain = Chain {
        ca: ca::Chain { ark, ask },
        vek,
    };
    let report = AttestationReport::from_bytes(&milan_hex_report()).unwrap();
    (&chain, &report).verify().unwrap();
}

// ---------------------------------------------------------------------------------------
// TDX
// ---------------------------------------------------------------------------------------

#[test]
fn tdreport_rtmrs_match_guest_components() {
    // Expected values from guest-components attester/src/tdx/report.rs tests (PCR 1 ->
    // RTMR0, PCR 2 -> RTMR1, PCR 8 -> RTMR2, PCR 16 -> RTMR3).
    let r = TdReport::from_bytes(&fixture("tdx/gc-tdx_report_1.bin")).unwrap();
    assert_eq!(
        hex::encode(r.td_info.rtmr[0]),
        "f4ec1a04670fe7926cd5de4aef9aaa7689ab4ceaa132d7c5242b47f67dfaaea64c372a17ad68fef9a6ac99aabbddabdc"
    );
    assert_eq!(
        hex::encode(r.td_info.rtmr[1]),
        "4e5f8826653198ab4bc5156fbe4bc99db054c0b8239a16c4b59249fb427f4acc50eed1b46a85c7d526c4e1e47621b14c"
    );
    assert_eq!(r.td_info.rtmr[2], [0u8; 48]);
    assert_eq!(r.td_info.rtmr[3], [0u8; 48]);
    assert_eq!(r.report_mac.report_type, 0x81);
    assert_eq!(&r.td_info.mrtd[..4], &[0x98, 0xbb, 0xc3, 0x9e]);
    assert_eq!(r.td_info.mrconfigid, [0u8; 48]);
}

#[test]
fn quote_v4_matches_trustee_claims() {
    // Expected values from Trustee deps/verifier/src/tdx/claims.rs `parse_tdx_claims`.
    let q = TdQuote::from_bytes(&fixture("tdx/trustee-tdx_quote_4.dat")).unwrap();
    assert_eq!(q.version(), 4);
    assert_eq!(q.header.att_key_type.get(), 2);
    assert_eq!(
        hex::encode(q.header.qe_vendor_id),
        "939a7233f79c4ca9940a0db3957f0607"
    );
    assert_eq!(
        hex::encode(q.header.user_data),
        "d099bfec0a477aa85a605dceabf2b10800000000"
    );
    let b = &q.body;
    assert_eq!(
        hex::encode(b.tee_tcb_svn),
        "03000500000000000000000000000000"
    );
    assert_eq!(
        hex::encode(b.mrseam),
        "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656"
    );
    assert_eq!(hex::encode(b.td_attributes), "0100001000000000");
    assert_eq!(hex::encode(b.xfam), "e742060000000000");
    assert_eq!(
        hex::encode(b.mrtd),
        "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"
    );
    assert_eq!(b.mrconfigid, [0u8; 48]);
    assert_eq!(
        hex::encode(b.rtmr[0]),
        "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288"
    );
    assert_eq!(
        hex::encode(b.rtmr[1]),
        "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596"
    );
    assert_eq!(
        hex::encode(b.report_data),
        "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429"
    );
    assert!(q.body15.is_none());
}

#[test]
fn quote_v5_has_a_td15_body() {
    let q = TdQuote::from_bytes(&fixture("tdx/trustee-tdx_quote_5.dat")).unwrap();
    assert_eq!(q.version(), 5);
    assert_eq!(q.v5_body_type, Some(3));
    assert!(q.body15.is_some());
    assert_eq!(hex::encode(&q.body.tee_tcb_svn[..4]), "05010200");
    // quote_6 is labelled v5 in PROVENANCE.md but its header says version 4.
    let q6 = TdQuote::from_bytes(&fixture("tdx/trustee-tdx_quote_6.dat")).unwrap();
    assert_eq!(q6.version(), 4);
}

#[test]
fn truncated_quote_is_an_error() {
    let bytes = fixture("tdx/trustee-tdx_quote_4.dat");
    for len in [10, 48, 600, 640, bytes.len() - 1] {
        assert!(
            TdQuote::from_bytes(&bytes[..len]).is_err(),
            "accepted {len} bytes"
        );
    }
    let mut sgx = bytes.clone();
    sgx[4] = 0; // tee_type SGX
    assert!(TdQuote::from_bytes(&sgx)
        .unwrap_err()
        .to_string()
        .contains("not TDX"));
}

#[test]
fn describe_accepts_hex_and_base64_text() {
    use base64::Engine;
    let report = fixture("snp/trustee-test-report.bin");
    let from_hex = describe_file(hex::encode(&report).as_bytes()).unwrap();
    assert!(from_hex.contains("decoded from hex"));
    assert!(from_hex.contains(&format!(
        "measurement          {}",
        hex::encode(&report[0x90..0xC0])
    )));
    let quote = fixture("tdx/trustee-tdx_quote_4.dat");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&quote);
    let text = describe_file(b64.as_bytes()).unwrap();
    assert!(text.contains("TDX quote v4"), "{text}");
    assert!(describe_file(b"hello world").is_err());
    assert!(describe_file(&[0u8; 100]).is_err());
}
