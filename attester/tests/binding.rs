#![allow(clippy::unwrap_used)]
//! `Probe::binding_attester`: the register that binds initdata comes from the hardware the
//! probe sees, whatever attester was chosen.

use std::path::Path;

use cocoon_attester::{AttesterChoice, Error, Paths, Probe, Tee};

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

#[test]
fn the_hardware_binds_even_when_sample_is_chosen() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    touch(&paths.sev_guest_dev);
    std::fs::create_dir_all(&paths.sev_guest_platform).unwrap();
    for choice in [
        AttesterChoice::Auto,
        AttesterChoice::Snp,
        AttesterChoice::Sample,
    ] {
        let probe = Probe::run(choice, "test", paths.clone());
        let a = probe.binding_attester().unwrap().unwrap();
        assert_eq!(a.tee(), Tee::Snp, "{choice}");
        // The register is read from the (fake, regular-file) device: an ioctl error, not
        // "no register".
        assert!(a.initdata_binding().is_err(), "{choice}");
    }
    // Asked for TDX on an SNP guest: the SNP register all the same.
    let probe = Probe::run(AttesterChoice::Tdx, "test", paths.clone());
    assert!(probe.attester().is_err());
    assert_eq!(probe.binding_attester().unwrap().unwrap().tee(), Tee::Snp);
}

#[test]
fn no_tee_has_no_binding_and_a_conflict_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    for choice in [
        AttesterChoice::Auto,
        AttesterChoice::Sample,
        AttesterChoice::Snp,
    ] {
        let probe = Probe::run(choice, "test", paths.clone());
        assert!(probe.binding_attester().unwrap().is_none(), "{choice}");
    }
    touch(&paths.sev_guest_dev);
    touch(&paths.tdx_guest_dev);
    let probe = Probe::run(AttesterChoice::Sample, "test", paths);
    assert!(matches!(
        probe.binding_attester(),
        Err(Error::Conflict { .. })
    ));
}
