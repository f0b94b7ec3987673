#![allow(clippy::unwrap_used)]
//! The ioctl paths. A test double stands behind the same traits the real `/dev/sev-guest`
//! and `/dev/tdx_guest` implement; the real implementations are exercised up to `open()`
//! (ENOENT here) and, on a regular file, through the ioctl itself (ENOTTY).

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use cocoon_attester::abi;
use cocoon_attester::snp::certs::build_cert_table;
use cocoon_attester::snp::device::{
    request_ext_report, SevGuestDevice, SnpExtReportReq, SnpGuestDevice, SnpIoctlError,
    SnpReportResp,
};
use cocoon_attester::snp::{SnpAttester, SnpTransport};
use cocoon_attester::tdx::device::{request_tdreport, TdxGuestDev, TdxGuestDevice, TdxReportReq};
use cocoon_attester::tdx::TdxAttester;
use cocoon_attester::{Attester, Error, Tee};
use nix::errno::Errno;
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::{CertTableEntry, CertType};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(rel)).unwrap()
}

/// One observed ioctl.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    certs_len: usize,
    user_data: [u8; 64],
    vmpl: u32,
}

/// Plays the sev-guest driver: answers with a fixture report (report data copied in) and
/// a certificate table, and says "too small" like the kernel when the buffer is short.
struct FakeSevGuest {
    report: Vec<u8>,
    cert_table: Vec<u8>,
    /// Overrides the length the "kernel" asks for after INVALID_LEN.
    claim_len: Option<u32>,
    /// Fail every call with this (errno, exitinfo2).
    fail: Option<(Errno, u64)>,
    /// MSG_REPORT_RSP status to return.
    status: u32,
    /// Put the requested report data into the report (a real PSP always does).
    echo: bool,
    calls: Mutex<Vec<Call>>,
}

impl FakeSevGuest {
    fn new(cert_table: Vec<u8>) -> Self {
        Self {
            report: fixture("snp/trustee-test-report.bin"),
            cert_table,
            claim_len: None,
            fail: None,
            status: 0,
            echo: true,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl SnpGuestDevice for FakeSevGuest {
    fn get_ext_report(
        &self,
        req: &mut SnpExtReportReq,
        certs: &mut [u8],
        resp: &mut SnpReportResp,
    ) -> Result<(), SnpIoctlError> {
        self.calls.lock().unwrap().push(Call {
            certs_len: certs.len(),
            user_data: req.data.user_data,
            vmpl: req.data.vmpl,
        });
        if let Some((errno, exitinfo2)) = self.fail {
            return Err(SnpIoctlError { errno, exitinfo2 });
        }
        let needed = self.cert_table.len().div_ceil(4096) * 4096;
        if certs.len() < needed {
            req.certs_len = self.claim_len.unwrap_or(needed as u32);
            return Err(SnpIoctlError {
                errno: Errno::EIO,
                exitinfo2: 1 << 32,
            });
        }
        certs[..self.cert_table.len()].copy_from_slice(&self.cert_table);
        let mut report = self.report.clone();
        if self.echo {
            report[0x50..0x90].copy_from_slice(&req.data.user_data);
        }
        resp.data[..4].copy_from_slice(&self.status.to_le_bytes());
        resp.data[4..8].copy_from_slice(&(report.len() as u32).to_le_bytes());
        resp.data[0x20..0x20 + report.len()].copy_from_slice(&report);
        Ok(())
    }
}

fn big_cert_table() -> Vec<u8> {
    // VCEK plus two 9000-byte blobs: more than the 16 KiB we offer first.
    build_cert_table(&[
        CertTableEntry::new(CertType::VCEK, fixture("snp/trustee-test-vcek.der")),
        CertTableEntry::new(CertType::ASK, vec![0xA5; 9000]),
        CertTableEntry::new(CertType::ARK, vec![0x5A; 9000]),
    ])
    .unwrap()
}

fn rd(s: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..s.len()].copy_from_slice(s);
    out
}

#[test]
fn cert_buffer_grows_and_the_request_is_retried() {
    let table = big_cert_table();
    assert!(table.len() > abi::SNP_CERTS_INITIAL_LEN);
    let dev = FakeSevGuest::new(table.clone());
    let ext = request_ext_report(&dev, &rd(b"nonce")).unwrap();
    let calls = dev.calls();
    assert_eq!(
        calls.iter().map(|c| c.certs_len).collect::<Vec<_>>(),
        // 96-byte header + 1360 + 2 x 9000 = 19456 bytes: the kernel asks for 5 pages.
        vec![abi::SNP_CERTS_INITIAL_LEN, 5 * 4096]
    );
    assert!(calls
        .iter()
        .all(|c| c.vmpl == 0 && c.user_data == rd(b"nonce")));
    assert_eq!(&ext.report[0x50..0x90], &rd(b"nonce"));
    assert_eq!(&ext.cert_table.unwrap()[..table.len()], &table[..]);
}

#[test]
fn evidence_through_the_device_double() {
    let dev = FakeSevGuest::new(big_cert_table());
    let attester = Attester::snp(SnpAttester::new(SnpTransport::Device(Box::new(dev))));
    assert_eq!(attester.tee(), Tee::Snp);
    let ev = attester.evidence(b"report data").unwrap();
    assert_eq!(ev.tee, Tee::Snp);

    #[derive(serde::Deserialize)]
    struct Trustee {
        attestation_report: AttestationReport,
        cert_chain: Option<Vec<CertTableEntry>>,
    }
    let t: Trustee = serde_json::from_str(&ev.json).unwrap();
    assert_eq!(t.attestation_report.report_data.0, rd(b"report data"));
    assert_eq!(t.attestation_report.vmpl, 0);
    let chain = t.cert_chain.unwrap();
    assert_eq!(
        chain
            .iter()
            .map(|c| c.cert_type.clone())
            .collect::<Vec<_>>(),
        vec![CertType::VCEK, CertType::ASK, CertType::ARK]
    );

    assert!(matches!(
        attester.evidence(&[0u8; 65]),
        Err(Error::ReportDataTooLong { len: 65 })
    ));
}

#[test]
fn evidence_generation_time_with_the_double() {
    let dev = FakeSevGuest::new(big_cert_table());
    let attester = Attester::snp(SnpAttester::new(SnpTransport::Device(Box::new(dev))));
    let n = 50;
    let start = Instant::now();
    for _ in 0..n {
        attester.evidence(&[7u8; 48]).unwrap();
    }
    let per = start.elapsed() / n;
    // Informational (run with --nocapture): serialisation cost without hardware.
    eprintln!("SNP evidence with the test double (2 ioctls, ~20 KB certs): {per:?} per call");
}

#[test]
fn a_report_without_our_report_data_is_refused() {
    let mut dev = FakeSevGuest::new(Vec::new());
    dev.echo = false;
    let attester = Attester::snp(SnpAttester::new(SnpTransport::Device(Box::new(dev))));
    let err = attester.evidence(b"fresh nonce").unwrap_err();
    assert!(matches!(err, Error::ReportDataMismatch { .. }), "{err}");
}

#[test]
fn no_certificates_from_the_host() {
    let mut dev = FakeSevGuest::new(Vec::new());
    dev.cert_table = Vec::new();
    let ext = request_ext_report(&dev, &rd(b"x")).unwrap();
    assert_eq!(ext.cert_table, None);
    assert_eq!(dev.calls().len(), 1);
}

#[test]
fn kernel_asking_for_no_more_room_is_an_error_not_a_loop() {
    let mut dev = FakeSevGuest::new(big_cert_table());
    dev.claim_len = Some(abi::SNP_CERTS_INITIAL_LEN as u32);
    let err = request_ext_report(&dev, &rd(b"x")).unwrap_err();
    assert!(matches!(err, Error::SnpBadResponse { .. }), "{err}");
    assert_eq!(dev.calls().len(), 1);
}

#[test]
fn absurd_certificate_size_is_refused() {
    let mut dev = FakeSevGuest::new(big_cert_table());
    dev.claim_len = Some(64 << 20);
    let err = request_ext_report(&dev, &rd(b"x")).unwrap_err();
    assert!(matches!(err, Error::SnpCertsTooLarge { .. }), "{err}");
}

#[test]
fn firmware_and_vmm_errors_are_reported() {
    let mut dev = FakeSevGuest::new(Vec::new());
    dev.fail = Some((Errno::EIO, 0x16));
    let err = request_ext_report(&dev, &rd(b"x")).unwrap_err();
    match &err {
        Error::SnpIoctl {
            errno,
            fw_error,
            vmm_error,
        } => assert_eq!((*errno, *fw_error, *vmm_error), (Errno::EIO, 0x16, 0)),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("firmware error 0x16"));

    let mut dev = FakeSevGuest::new(Vec::new());
    dev.status = 0x16;
    let err = request_ext_report(&dev, &rd(b"x")).unwrap_err();
    assert!(
        matches!(err, Error::SnpFirmwareStatus { status: 0x16 }),
        "{err}"
    );
}

#[test]
fn host_data_and_initdata_binding() {
    let dev = FakeSevGuest::new(Vec::new());
    let host_data = dev.report[0xC0..0xE0].to_vec();
    let attester = Attester::snp(SnpAttester::new(SnpTransport::Device(Box::new(dev))));
    let binding = attester.initdata_binding().unwrap().unwrap();
    assert_eq!(binding.register, "HOST_DATA");
    assert_eq!(binding.value, host_data);
    binding.check(&host_data).unwrap();
    // A longer digest is cut to 32 bytes, as upstream pads/truncates.
    let mut long = host_data.clone();
    long.extend_from_slice(&[0xEE; 16]);
    binding.check(&long).unwrap();
    let err = binding.check(&[0xAB; 48]).unwrap_err();
    assert!(matches!(
        err,
        Error::InitdataMismatch {
            register: "HOST_DATA",
            ..
        }
    ));

    let err = attester
        .extend_runtime_measurement(2, &[0u8; 48])
        .unwrap_err();
    assert!(
        err.to_string().contains("no runtime measurement register"),
        "{err}"
    );
}

#[test]
fn real_sev_guest_open_fails_with_enoent() {
    let dir = tempfile::tempdir().unwrap();
    let err = SevGuestDevice::open(dir.path().join("sev-guest")).unwrap_err();
    assert!(matches!(err, Error::NotSnpGuest { .. }), "{err:?}");
    if !Path::new(abi::SEV_GUEST_DEV).exists() {
        let err = SevGuestDevice::open(abi::SEV_GUEST_DEV).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no /dev/sev-guest: not an SEV-SNP guest"),
            "{err}"
        );
    }
}

#[test]
fn real_sev_guest_ioctl_runs_and_fails_on_a_regular_file() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let dev = SevGuestDevice::open(file.path()).unwrap();
    let err = request_ext_report(&dev, &rd(b"x")).unwrap_err();
    match err {
        Error::SnpIoctl { errno, .. } => assert_eq!(errno, Errno::ENOTTY),
        other => panic!("{other:?}"),
    }
}

/// Plays the tdx-guest driver with the guest-components TDREPORT fixture.
struct FakeTdxGuest {
    report: Vec<u8>,
}

impl TdxGuestDevice for FakeTdxGuest {
    fn get_report0(&self, req: &mut TdxReportReq) -> Result<(), Errno> {
        req.tdreport.copy_from_slice(&self.report);
        req.tdreport[128..192].copy_from_slice(&req.reportdata);
        Ok(())
    }
}

#[test]
fn tdreport_and_mrconfigid_through_the_double() {
    let report = fixture("tdx/gc-tdx_report_1.bin");
    let dev = FakeTdxGuest {
        report: report.clone(),
    };
    let raw = request_tdreport(&dev, &rd(b"td")).unwrap();
    assert_eq!(&raw[128..192], &rd(b"td"));
    let dir = tempfile::tempdir().unwrap();
    let tdx = TdxAttester::new(
        None,
        Some(Box::new(dev)),
        dir.path().join("CCEL"),
        dir.path().join("measurements"),
    );
    assert_eq!(
        tdx.tdreport(&rd(b"td")).unwrap().report_mac.report_data,
        rd(b"td")
    );
    let attester = Attester::tdx(tdx);
    let binding = attester.initdata_binding().unwrap().unwrap();
    assert_eq!(binding.register, "MRCONFIGID");
    assert_eq!(binding.value, report[512 + 64..512 + 112].to_vec());
    binding.check(&[]).unwrap(); // this TD's MRCONFIGID is all zero

    // No configfs-tsm: no quote, and the error says what is missing.
    let err = attester.evidence(b"x").unwrap_err();
    assert!(err.to_string().contains("configfs-tsm"), "{err}");
}

#[test]
fn real_tdx_guest_open_and_ioctl() {
    let dir = tempfile::tempdir().unwrap();
    let err = TdxGuestDev::open(dir.path().join("tdx_guest")).unwrap_err();
    assert!(matches!(err, Error::NotTdxGuest { .. }), "{err:?}");
    assert!(err.to_string().contains("not a TDX guest"));

    let file = tempfile::NamedTempFile::new().unwrap();
    let dev = TdxGuestDev::open(file.path()).unwrap();
    let err = request_tdreport(&dev, &rd(b"x")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TdxIoctl {
                errno: Errno::ENOTTY
            }
        ),
        "{err:?}"
    );
}

#[test]
fn rtmr_extension_through_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("measurements");
    let tdx = |m: &Path| Attester::tdx(TdxAttester::new(None, None, dir.path().join("CCEL"), m));

    // No sysfs interface (kernel < 6.16): a clear error.
    let err = tdx(&mdir)
        .extend_runtime_measurement(2, &[1u8; 48])
        .unwrap_err();
    assert!(matches!(err, Error::RtmrUnavailable { .. }), "{err}");

    std::fs::create_dir(&mdir).unwrap();
    std::fs::write(mdir.join("rtmr2:sha384"), b"").unwrap();
    std::fs::write(mdir.join("rtmr3:sha384"), b"").unwrap();
    let a = tdx(&mdir);
    a.extend_runtime_measurement(2, &[0x11; 48]).unwrap();
    a.extend_runtime_measurement(3, &[0x22; 48]).unwrap();
    assert_eq!(
        std::fs::read(mdir.join("rtmr2:sha384")).unwrap(),
        vec![0x11; 48]
    );
    assert_eq!(
        std::fs::read(mdir.join("rtmr3:sha384")).unwrap(),
        vec![0x22; 48]
    );

    for index in [0, 1, 4] {
        let err = a.extend_runtime_measurement(index, &[0u8; 48]).unwrap_err();
        assert!(matches!(err, Error::RtmrIndex { .. }), "{index}: {err}");
    }
}

#[test]
fn ccel_is_read_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let ccel = dir.path().join("CCEL");
    let tdx = TdxAttester::new(None, None, &ccel, dir.path());
    assert_eq!(tdx.eventlog().unwrap(), None);
    std::fs::write(&ccel, b"log").unwrap();
    assert_eq!(tdx.eventlog().unwrap(), Some(b"log".to_vec()));
}
