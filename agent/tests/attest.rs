//! The `attest` debugging subcommand and the start-up probe, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{call, temp_socket, AgentProcess, AGENT};

fn attest(args: &[&str]) -> std::process::Output {
    Command::new(AGENT)
        .arg("attest")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn no_tee_and_no_opt_in_is_refused_with_how_to_opt_in() {
    let out = attest(&["--report-data", "00ff", "--attester", "auto"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no TEE found"), "{stderr}");
    assert!(stderr.contains("agent.attester=sample"), "{stderr}");
}

#[test]
fn sample_only_when_asked() {
    let out = attest(&["--report-data", "00ff", "--attester", "sample"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tee"], "sample");
    assert_eq!(v["evidence"]["svn"], "1");
    assert!(v["evidence"]["report_data"].is_string());
}

#[test]
fn parse_pretty_prints_a_recorded_snp_report() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../attester/tests/fixtures/snp/trustee-test-report.bin"
    );
    let out = attest(&["--parse", fixture]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("measurement"), "{text}");
    assert!(
        text.contains("report_data") || text.contains("report data"),
        "{text}"
    );

    let out = attest(&["--parse", "/nonexistent/report.bin"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/report.bin"));
}

#[test]
fn guest_details_report_what_the_probe_found() {
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let agent = AgentProcess::start_unix(&sock);
    let addr = format!("unix://{}", sock.display());
    let details = call(&addr, "GetGuestDetails", "{}").unwrap();
    let features = details["agent_details"]["extra_features"]
        .as_array()
        .unwrap();
    // This build machine has no TEE and the test opted into nothing.
    assert!(
        features.contains(&serde_json::json!("tee=none")),
        "{features:?}"
    );
    assert!(
        agent
            .seen
            .iter()
            .any(|l| l.contains("attestation probe") && l.contains("no TEE found")),
        "{:?}",
        agent.seen
    );
}
