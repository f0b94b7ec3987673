#![allow(clippy::unwrap_used)]
//! configfs-tsm against an emulated tree in a temp dir. A test thread plays the kernel:
//! `inblob` and `outblob` are FIFOs, so our write to `inblob` blocks until the "kernel"
//! reads it, and our read of `outblob` blocks until the "kernel" answers — the same
//! ordering configfs gives.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use cocoon_attester::snp::SnpEvidence;
use cocoon_attester::tsm::{TsmError, TsmReport};
use nix::sys::stat::Mode;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(rel)).unwrap()
}

/// What the emulated kernel does after `inblob` is written.
struct KernelAnswer {
    /// `generation` after the write (1 is honest; more means someone else wrote too).
    generation: u64,
    /// What `outblob` returns.
    outblob: Vec<u8>,
    /// `auxblob`, if the provider has one.
    auxblob: Option<Vec<u8>>,
}

/// The attributes configfs creates with the directory.
fn emulate_mkdir(entry: &Path, provider: &str) {
    std::fs::write(entry.join("provider"), format!("{provider}\n")).unwrap();
    std::fs::write(entry.join("generation"), "0\n").unwrap();
    nix::unistd::mkfifo(&entry.join("inblob"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    nix::unistd::mkfifo(&entry.join("outblob"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
}

/// The kernel side of one request: read inblob, bump generation, answer. Returns inblob.
fn kernel(entry: &Path, answer: KernelAnswer) -> JoinHandle<Vec<u8>> {
    let entry: PathBuf = entry.to_path_buf();
    std::thread::spawn(move || {
        let inblob = std::fs::read(entry.join("inblob")).unwrap();
        std::fs::write(entry.join("generation"), format!("{}\n", answer.generation)).unwrap();
        if let Some(aux) = &answer.auxblob {
            std::fs::write(entry.join("auxblob"), aux).unwrap();
        }
        std::fs::write(entry.join("outblob"), &answer.outblob).unwrap();
        inblob
    })
}

fn report_data() -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..5].copy_from_slice(b"hello");
    rd
}

#[test]
fn tdx_quote_through_configfs() {
    let root = tempfile::tempdir().unwrap();
    let tsm = TsmReport::new(root.path());
    let quote = fixture("tdx/trustee-tdx_quote_4.dat");

    let entry = tsm.create_entry().unwrap();
    assert!(entry.path().starts_with(root.path()));
    emulate_mkdir(entry.path(), "tdx_guest");
    let k = kernel(
        entry.path(),
        KernelAnswer {
            generation: 1,
            outblob: quote.clone(),
            auxblob: None,
        },
    );
    let out = entry.generate("tdx_guest", &report_data(), false).unwrap();
    assert_eq!(
        k.join().unwrap(),
        report_data(),
        "the kernel saw our 64 bytes"
    );
    assert_eq!(out.provider, "tdx_guest");
    assert_eq!(out.outblob, quote);
    assert_eq!(out.auxblob, None);
}

#[test]
fn snp_report_and_certificates_through_configfs() {
    let root = tempfile::tempdir().unwrap();
    let tsm = TsmReport::new(root.path());
    let report = fixture("snp/trustee-test-report.bin");
    let table =
        cocoon_attester::snp::certs::build_cert_table(&[sev::firmware::host::CertTableEntry::new(
            sev::firmware::host::CertType::VCEK,
            fixture("snp/trustee-test-vcek.der"),
        )])
        .unwrap();

    let entry = tsm.create_entry().unwrap();
    emulate_mkdir(entry.path(), "sev_guest");
    let k = kernel(
        entry.path(),
        KernelAnswer {
            generation: 1,
            outblob: report.clone(),
            auxblob: Some(table.clone()),
        },
    );
    let out = entry.generate("sev_guest", &report_data(), true).unwrap();
    k.join().unwrap();
    assert_eq!(out.outblob, report);
    assert_eq!(out.auxblob.as_deref(), Some(&table[..]));
    let ev = SnpEvidence::from_raw(&out.outblob, out.auxblob.as_deref()).unwrap();
    assert_eq!(ev.cert_chain.unwrap().len(), 1);
}

#[test]
fn empty_outblob_is_its_own_error() {
    let root = tempfile::tempdir().unwrap();
    let entry = TsmReport::new(root.path()).create_entry().unwrap();
    emulate_mkdir(entry.path(), "tdx_guest");
    let k = kernel(
        entry.path(),
        KernelAnswer {
            generation: 1,
            outblob: Vec::new(),
            auxblob: None,
        },
    );
    let err = entry
        .generate("tdx_guest", &report_data(), false)
        .unwrap_err();
    k.join().unwrap();
    assert!(matches!(err, TsmError::EmptyOutblob { .. }), "{err:?}");
    assert!(err.to_string().contains("outblob is empty"));
}

#[test]
fn generation_race_is_its_own_error() {
    let root = tempfile::tempdir().unwrap();
    let entry = TsmReport::new(root.path()).create_entry().unwrap();
    emulate_mkdir(entry.path(), "tdx_guest");
    // Another writer hit the same entry between our inblob write and our outblob read.
    let k = kernel(
        entry.path(),
        KernelAnswer {
            generation: 2,
            outblob: fixture("tdx/trustee-tdx_quote_4.dat"),
            auxblob: None,
        },
    );
    let err = entry
        .generate("tdx_guest", &report_data(), false)
        .unwrap_err();
    k.join().unwrap();
    match err {
        TsmError::GenerationRace { expected, found } => assert_eq!((expected, found), (1, 2)),
        other => panic!("expected a generation race, got {other:?}"),
    }
}

#[test]
fn wrong_provider_is_its_own_error_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let entry = TsmReport::new(root.path()).create_entry().unwrap();
    std::fs::write(entry.path().join("provider"), "sev_guest\n").unwrap();
    // No inblob/outblob here: a write or read would fail with another error.
    let err = entry
        .generate("tdx_guest", &report_data(), false)
        .unwrap_err();
    match &err {
        TsmError::WrongProvider { expected, found } => {
            assert_eq!(
                (expected.as_str(), found.as_str()),
                ("tdx_guest", "sev_guest")
            )
        }
        other => panic!("expected wrong provider, got {other:?}"),
    }
    assert!(!entry.path().join("inblob").exists());
}

#[test]
fn bad_generation_and_inblob_length() {
    let root = tempfile::tempdir().unwrap();
    let entry = TsmReport::new(root.path()).create_entry().unwrap();
    std::fs::write(entry.path().join("provider"), "tdx_guest\n").unwrap();
    std::fs::write(entry.path().join("generation"), "many\n").unwrap();
    let err = entry
        .generate("tdx_guest", &report_data(), false)
        .unwrap_err();
    assert!(matches!(err, TsmError::BadGeneration { .. }), "{err:?}");
    let err = entry.generate("tdx_guest", &[0u8; 65], false).unwrap_err();
    assert!(
        matches!(err, TsmError::InblobLength { len: 65, .. }),
        "{err:?}"
    );
    let err = entry.generate("tdx_guest", &[], false).unwrap_err();
    assert!(
        matches!(err, TsmError::InblobLength { len: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn missing_root_and_cleanup() {
    let root = tempfile::tempdir().unwrap();
    let missing = TsmReport::new(root.path().join("nope"));
    assert!(!missing.is_present());
    let err = missing.create_entry().unwrap_err();
    assert!(matches!(err, TsmError::Unavailable { .. }));
    assert!(err.to_string().contains("needs Linux >= 6.7"));

    // An entry is rmdir'ed when dropped (configfs would remove its attributes with it).
    let tsm = TsmReport::new(root.path());
    let path = {
        let entry = tsm.create_entry().unwrap();
        entry.path().to_path_buf()
    };
    assert!(!path.exists());

    // Two entries never share a directory.
    let a = tsm.create_entry().unwrap();
    let b = tsm.create_entry().unwrap();
    assert_ne!(a.path(), b.path());
}

#[test]
fn provider_probe_reads_without_generating() {
    let root = tempfile::tempdir().unwrap();
    let tsm = TsmReport::new(root.path());
    let entry = tsm.create_entry().unwrap();
    std::fs::write(entry.path().join("provider"), "tdx_guest\n").unwrap();
    assert_eq!(entry.provider().unwrap(), "tdx_guest");
    assert_eq!(
        std::fs::read_dir(entry.path()).unwrap().count(),
        1,
        "only provider was touched"
    );
}
