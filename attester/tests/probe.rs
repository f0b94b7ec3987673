#![allow(clippy::unwrap_used)]
//! The probe fails closed: no TEE and no opt-in is an error that says how to opt in; the
//! sample attester only ever runs when configured. Emulated guests live in temp dirs.

use std::path::Path;

use base64::Engine;
use cocoon_attester::{AttesterChoice, Error, Paths, Probe, Tee, Verdict};

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

#[test]
fn no_tee_and_no_opt_in_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let probe = Probe::run(AttesterChoice::Auto, "default", Paths::under(root.path()));
    assert_eq!(probe.verdict, Verdict::NoTee);
    assert_eq!(probe.tee(), None);
    let shown = probe.to_string();
    assert!(shown.contains("no TEE found"), "{shown}");
    assert!(shown.contains("dev/sev-guest: absent"), "{shown}");
    assert!(shown.contains("tsm/report: absent"), "{shown}");

    let err = probe.attester().unwrap_err();
    assert!(matches!(err, Error::NoTee { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with("no TEE found"), "{msg}");
    assert!(msg.contains("agent.attester=sample"), "{msg}");
}

#[test]
fn explicit_sample_opt_in_gives_sample_evidence() {
    let root = tempfile::tempdir().unwrap();
    let probe = Probe::run(
        AttesterChoice::Sample,
        "kernel command line",
        Paths::under(root.path()),
    );
    assert_eq!(probe.verdict, Verdict::Sample { hardware: None });
    assert_eq!(probe.tee(), Some(Tee::Sample));
    assert!(probe.to_string().contains("explicitly configured"));
    let attester = probe.attester().unwrap();
    let ev = attester.evidence(b"digest").unwrap();
    assert_eq!(ev.tee, Tee::Sample);
    assert_eq!(ev.tee.to_string(), "sample");
    let v: serde_json::Value = serde_json::from_str(&ev.json).unwrap();
    assert_eq!(v["svn"], "1");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(v["report_data"].as_str().unwrap())
            .unwrap(),
        b"digest"
    );
    assert_eq!(attester.initdata_binding().unwrap(), None);
    assert!(attester.extend_runtime_measurement(3, &[0; 48]).is_err());
}

#[test]
fn the_real_machine_without_a_tee_is_refused() {
    // On CI and developer machines there is no TEE: the default probe must refuse.
    let real = Paths::default();
    if real.sev_guest_dev.exists()
        || real.tdx_guest_dev.exists()
        || real.sev_guest_platform.exists()
        || real.tsm_report.exists()
    {
        return; // a real or configfs-capable guest: nothing to assert here
    }
    let err = Probe::system(AttesterChoice::Auto, "default")
        .attester()
        .unwrap_err();
    assert!(matches!(err, Error::NoTee { .. }), "{err}");
}

#[test]
fn snp_guest_is_detected_and_uses_the_device() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    touch(&paths.sev_guest_dev); // a regular file: opens, but the ioctl is ENOTTY
    std::fs::create_dir_all(&paths.sev_guest_platform).unwrap();
    let probe = Probe::run(AttesterChoice::Auto, "default", paths);
    assert_eq!(probe.verdict, Verdict::Hardware(Tee::Snp));
    assert_eq!(probe.tee(), Some(Tee::Snp));
    let attester = probe.attester().unwrap();
    assert_eq!(attester.tee(), Tee::Snp);
    assert!(attester.describe().contains("SNP_GET_EXT_REPORT"));
    // The real ioctl runs against the file and fails: an error, never a fallback.
    let err = attester.evidence(b"x").unwrap_err();
    assert!(matches!(err, Error::SnpIoctl { .. }), "{err}");
}

#[test]
fn snp_platform_without_any_interface_says_so() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    std::fs::create_dir_all(&paths.sev_guest_platform).unwrap();
    let probe = Probe::run(AttesterChoice::Auto, "default", paths);
    assert_eq!(probe.verdict, Verdict::Hardware(Tee::Snp));
    let err = probe.attester().unwrap_err();
    assert!(matches!(err, Error::NoTransport { .. }), "{err}");
    assert!(err.to_string().contains("not an SEV-SNP guest"), "{err}");
}

#[test]
fn tdx_guest_via_configfs_provider() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    std::fs::create_dir_all(&paths.tsm_report).unwrap();
    // The probe mkdirs an entry and reads `provider`; a plain directory has none.
    let probe = Probe::run(AttesterChoice::Auto, "default", paths.clone());
    assert_eq!(probe.verdict, Verdict::NoTee);
    assert!(
        probe.findings_line().contains("error"),
        "{}",
        probe.findings_line()
    );

    touch(&paths.tdx_guest_dev);
    let probe = Probe::run(AttesterChoice::Auto, "default", paths);
    assert_eq!(probe.verdict, Verdict::Hardware(Tee::Tdx));
    let attester = probe.attester().unwrap();
    assert_eq!(attester.tee(), Tee::Tdx);
}

#[test]
fn conflicting_and_absent_choices_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    touch(&paths.sev_guest_dev);
    touch(&paths.tdx_guest_dev);
    let probe = Probe::run(AttesterChoice::Auto, "default", paths.clone());
    assert_eq!(probe.verdict, Verdict::Conflict);
    assert!(matches!(probe.attester(), Err(Error::Conflict { .. })));
    // Choosing resolves it.
    let probe = Probe::run(AttesterChoice::Tdx, "aa config", paths);
    assert_eq!(probe.verdict, Verdict::Hardware(Tee::Tdx));

    let empty = tempfile::tempdir().unwrap();
    let probe = Probe::run(AttesterChoice::Snp, "aa config", Paths::under(empty.path()));
    assert_eq!(probe.verdict, Verdict::RequestedAbsent(Tee::Snp));
    let err = probe.attester().unwrap_err();
    assert!(err.to_string().contains("`snp` was configured"), "{err}");
}

#[test]
fn sample_on_hardware_is_visible() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    touch(&paths.sev_guest_dev);
    let probe = Probe::run(AttesterChoice::Sample, "kernel command line", paths);
    assert_eq!(
        probe.verdict,
        Verdict::Sample {
            hardware: Some(Tee::Snp)
        }
    );
    assert!(
        probe.to_string().contains("hardware TEE snp NOT used"),
        "{probe}"
    );
}

#[test]
fn cmdline_opt_in() {
    let parse = AttesterChoice::from_cmdline;
    assert_eq!(parse("console=hvc0 quiet").unwrap(), None);
    assert_eq!(
        parse("console=hvc0 agent.attester=sample quiet").unwrap(),
        Some(AttesterChoice::Sample)
    );
    assert_eq!(
        parse("agent.attester=sample agent.attester=snp").unwrap(),
        Some(AttesterChoice::Snp)
    );
    assert_eq!(
        parse("agent.attester=tdx").unwrap(),
        Some(AttesterChoice::Tdx)
    );
    assert_eq!(
        parse("agent.attester=auto").unwrap(),
        Some(AttesterChoice::Auto)
    );
    // A typo is an error, not a silent `auto` (nor `sample`).
    assert!(matches!(
        parse("agent.attester=smaple"),
        Err(Error::InvalidChoice { .. })
    ));
    // Other keys that merely start alike are not ours.
    assert_eq!(parse("agent.attesterx=sample").unwrap(), None);
    assert_eq!(
        "sample".parse::<AttesterChoice>().unwrap(),
        AttesterChoice::Sample
    );
    assert_eq!(AttesterChoice::default(), AttesterChoice::Auto);
}
