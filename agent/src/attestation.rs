//! The agent's use of `cocoon-attester`: the start-up probe (logged once, reported in
//! GetGuestDetails) and the `attest` debugging subcommand.

use std::path::PathBuf;

use anyhow::Context;
use cocoon_attester::{describe_file, report_data_from_hex, AttesterChoice, Probe};

/// Probes for a TEE with the configured choice (default: auto, which fails closed).
pub fn probe(choice: Option<AttesterChoice>, from_file: bool) -> Probe {
    let source = match (choice, from_file) {
        (None, _) => "default",
        (Some(_), true) => "agent config file",
        (Some(_), false) => "agent.attester",
    };
    Probe::system(choice.unwrap_or_default(), source)
}

/// The `extra_features` entry GetGuestDetails reports: `tee=snp`, `tee=sample`, or
/// `tee=none` when attestation will be refused.
pub fn tee_feature(probe: &Probe) -> String {
    match probe.tee() {
        Some(tee) => format!("tee={tee}"),
        None => "tee=none".to_string(),
    }
}

/// `cocoon-agent attest --report-data HEX | --parse FILE [--attester CHOICE]`.
pub fn attest_command(
    report_data: Option<String>,
    parse: Option<PathBuf>,
    attester: Option<String>,
) -> anyhow::Result<()> {
    if let Some(path) = parse {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        println!("{}", describe_file(&bytes)?);
        return Ok(());
    }
    let hex = report_data.context("give --report-data HEX or --parse FILE")?;
    let data = report_data_from_hex(&hex)?;
    let (choice, source) = match attester {
        Some(value) => (value.parse()?, "--attester"),
        None => {
            let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            (
                AttesterChoice::from_cmdline(&cmdline)?.unwrap_or_default(),
                "kernel command line",
            )
        }
    };
    let probe = Probe::system(choice, source);
    eprintln!("{probe}");
    let evidence = probe.attester()?.evidence(&data)?;
    let evidence_json: serde_json::Value = serde_json::from_str(&evidence.json)?;
    let out = serde_json::json!({ "tee": evidence.tee.to_string(), "evidence": evidence_json });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
