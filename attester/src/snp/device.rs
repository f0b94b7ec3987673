//! `/dev/sev-guest`: the `SNP_GET_EXT_REPORT` ioctl, behind a trait so tests can put a
//! double where the kernel is.
//!
//! The uapi structs are declared `#[repr(C)]` with their sizes asserted at compile time
//! against `include/uapi/linux/sev-guest.h`. The retry logic — grow the certificate buffer
//! when the host says it is too small — lives in [`request_ext_report`], above the trait,
//! so the double exercises exactly the code the real device runs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::abi;
use crate::error::Error;

/// `struct snp_report_req`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SnpReportReq {
    /// Report data the guest wants bound into the report.
    pub user_data: [u8; abi::REPORT_DATA_LEN],
    /// The VMPL to report at.
    pub vmpl: u32,
    /// Reserved, zero.
    pub rsvd: [u8; 28],
}

/// `struct snp_ext_report_req`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SnpExtReportReq {
    /// The plain report request.
    pub data: SnpReportReq,
    /// User address of the certificate buffer (0: no certificates wanted).
    pub certs_address: u64,
    /// Its length, a page multiple. The kernel writes the needed length here when the
    /// buffer is too small.
    pub certs_len: u32,
    /// Tail padding of the C struct, made explicit.
    pub pad: u32,
}

/// `struct snp_report_resp`: the decrypted `MSG_REPORT_RSP`.
#[repr(C)]
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SnpReportResp {
    /// status (u32), report size (u32), 24 reserved bytes, then the report.
    pub data: [u8; abi::SNP_REPORT_RESP_SIZE],
}

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SnpGuestRequestIoctl {
    /// Message version, must be non-zero.
    pub msg_version: u8,
    /// Padding before the first u64, made explicit.
    pub pad: [u8; 7],
    /// User address of the request struct.
    pub req_data: u64,
    /// User address of the response struct.
    pub resp_data: u64,
    /// Firmware error (low 32 bits) and VMM error (high 32 bits).
    pub exitinfo2: u64,
}

const _: () = assert!(std::mem::size_of::<SnpReportReq>() == abi::SNP_REPORT_REQ_SIZE);
const _: () = assert!(std::mem::size_of::<SnpExtReportReq>() == abi::SNP_EXT_REPORT_REQ_SIZE);
const _: () = assert!(std::mem::size_of::<SnpReportResp>() == abi::SNP_REPORT_RESP_SIZE);
const _: () =
    assert!(std::mem::size_of::<SnpGuestRequestIoctl>() == abi::SNP_GUEST_REQUEST_IOCTL_SIZE);
const _: () = assert!(std::mem::offset_of!(SnpExtReportReq, certs_address) == 96);
const _: () = assert!(std::mem::offset_of!(SnpExtReportReq, certs_len) == 104);
const _: () = assert!(std::mem::offset_of!(SnpGuestRequestIoctl, req_data) == 8);
const _: () = assert!(std::mem::offset_of!(SnpGuestRequestIoctl, exitinfo2) == 24);

impl SnpExtReportReq {
    /// A request for `report_data` at `vmpl`; certificate fields are set by the device.
    pub fn new(report_data: &[u8; abi::REPORT_DATA_LEN], vmpl: u32) -> Self {
        let mut req = Self::new_zeroed();
        req.data.user_data = *report_data;
        req.data.vmpl = vmpl;
        req
    }
}

/// How one ioctl failed: the errno and the `exitinfo2` the kernel copied back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpIoctlError {
    /// The ioctl's errno.
    pub errno: nix::errno::Errno,
    /// Firmware error (low 32 bits) and VMM error (high 32 bits).
    pub exitinfo2: u64,
}

impl SnpIoctlError {
    /// The VMM error half of `exitinfo2`.
    pub fn vmm_error(&self) -> u32 {
        (self.exitinfo2 >> abi::SNP_VMM_ERR_SHIFT) as u32
    }

    /// The firmware error half of `exitinfo2`.
    pub fn fw_error(&self) -> u32 {
        (self.exitinfo2 & 0xffff_ffff) as u32
    }
}

/// The seam between our logic and the kernel: one `SNP_GET_EXT_REPORT` round trip.
///
/// The implementation points the request at `certs` (setting `certs_address` and
/// `certs_len` from it, or zero for an empty slice) and at `resp`, and issues the ioctl.
/// When the kernel reports that the buffer is too small it has written the needed length
/// to `req.certs_len`; the implementation must leave it there for the caller and return an
/// error whose `exitinfo2` carries VMM error 1 (`SNP_GUEST_VMM_ERR_INVALID_LEN`), whatever
/// the kernel version's return code was.
pub trait SnpGuestDevice: Send + Sync {
    /// Issue one extended report request.
    fn get_ext_report(
        &self,
        req: &mut SnpExtReportReq,
        certs: &mut [u8],
        resp: &mut SnpReportResp,
    ) -> Result<(), SnpIoctlError>;
}

mod ioctl {
    use super::SnpGuestRequestIoctl;
    use crate::abi;

    nix::ioctl_readwrite!(
        snp_get_ext_report,
        abi::SNP_IOC_TYPE,
        abi::SNP_GET_EXT_REPORT_NR,
        SnpGuestRequestIoctl
    );
}

/// The real `/dev/sev-guest`.
#[derive(Debug)]
pub struct SevGuestDevice {
    file: File,
    path: PathBuf,
}

impl SevGuestDevice {
    /// Open the device at `path` (normally [`abi::SEV_GUEST_DEV`]).
    ///
    /// A missing node is [`Error::NotSnpGuest`]: this is not an SEV-SNP guest, or the
    /// `sev-guest` driver is not loaded.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        match File::options().read(true).write(true).open(&path) {
            Ok(file) => Ok(Self { file, path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotSnpGuest { path }),
            Err(source) => Err(Error::Device { path, source }),
        }
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SnpGuestDevice for SevGuestDevice {
    fn get_ext_report(
        &self,
        req: &mut SnpExtReportReq,
        certs: &mut [u8],
        resp: &mut SnpReportResp,
    ) -> Result<(), SnpIoctlError> {
        if certs.is_empty() {
            req.certs_address = 0;
            req.certs_len = 0;
        } else {
            req.certs_address = certs.as_mut_ptr() as u64;
            req.certs_len = u32::try_from(certs.len()).map_err(|_| SnpIoctlError {
                errno: nix::errno::Errno::EINVAL,
                exitinfo2: 0,
            })?;
        }
        let mut arg = SnpGuestRequestIoctl::new_zeroed();
        arg.msg_version = abi::SNP_MSG_VERSION;
        arg.req_data = req as *mut SnpExtReportReq as u64;
        arg.resp_data = resp as *mut SnpReportResp as u64;
        // SAFETY: `arg` is a valid `snp_guest_request_ioctl` (size asserted above) that
        // points at `req` (a valid `snp_ext_report_req`), `resp` (4000 writable bytes) and,
        // through `req.certs_address`/`certs_len`, at `certs`, which is exclusively
        // borrowed for the duration of the call. The kernel writes only within those
        // bounds, and all three outlive the ioctl.
        let rc = unsafe { ioctl::snp_get_ext_report(self.file.as_raw_fd(), &mut arg) };
        match rc {
            // Some kernels (5.19-era) return success with "buffer too small" in exitinfo2:
            // report that the way current kernels do, so callers see one behaviour.
            Ok(_)
                if (arg.exitinfo2 >> abi::SNP_VMM_ERR_SHIFT) as u32
                    == abi::SNP_VMM_ERR_INVALID_LEN =>
            {
                Err(SnpIoctlError {
                    errno: nix::errno::Errno::EIO,
                    exitinfo2: arg.exitinfo2,
                })
            }
            Ok(_) => Ok(()),
            Err(errno) => Err(SnpIoctlError {
                errno,
                exitinfo2: arg.exitinfo2,
            }),
        }
    }
}

/// A report and the raw certificate table that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtReport {
    /// The `ATTESTATION_REPORT` bytes (1184).
    pub report: Vec<u8>,
    /// The GHCB certificate table, if the host supplied one (all-zero means none).
    pub cert_table: Option<Vec<u8>>,
}

/// Ask `dev` for a VMPL 0 report binding `report_data`, growing the certificate buffer and
/// retrying when the kernel says it is too small.
pub fn request_ext_report(
    dev: &dyn SnpGuestDevice,
    report_data: &[u8; abi::REPORT_DATA_LEN],
) -> Result<ExtReport, Error> {
    let mut certs_len = abi::SNP_CERTS_INITIAL_LEN;
    for _ in 0..abi::SNP_CERTS_MAX_TRIES {
        let mut req = SnpExtReportReq::new(report_data, abi::SNP_VMPL);
        let mut certs = vec![0u8; certs_len];
        let mut resp = SnpReportResp::new_zeroed();
        match dev.get_ext_report(&mut req, &mut certs, &mut resp) {
            Ok(()) => {
                let report = report_from_response(&resp)?;
                let cert_table = if certs.iter().all(|b| *b == 0) {
                    None
                } else {
                    Some(certs)
                };
                return Ok(ExtReport { report, cert_table });
            }
            Err(e) if e.vmm_error() == abi::SNP_VMM_ERR_INVALID_LEN => {
                let needed = req.certs_len as usize;
                if needed <= certs_len {
                    return Err(Error::SnpBadResponse {
                        detail: format!(
                            "kernel says the {certs_len}-byte certificate buffer is too small \
                             but asks for {needed} bytes"
                        ),
                    });
                }
                if needed > abi::SNP_CERTS_MAX_LEN {
                    return Err(Error::SnpCertsTooLarge {
                        needed,
                        max: abi::SNP_CERTS_MAX_LEN,
                    });
                }
                certs_len = needed.div_ceil(abi::PAGE_SIZE) * abi::PAGE_SIZE;
                tracing::debug!(certs_len, "SNP certificate buffer too small, retrying");
            }
            Err(e) => {
                return Err(Error::SnpIoctl {
                    errno: e.errno,
                    fw_error: e.fw_error(),
                    vmm_error: e.vmm_error(),
                })
            }
        }
    }
    Err(Error::SnpCertsRetriesExhausted {
        tries: abi::SNP_CERTS_MAX_TRIES,
    })
}

/// The head of `MSG_REPORT_RSP` (SNP firmware ABI): status, report size, reserved.
#[repr(C)]
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
struct MsgReportRspHeader {
    status: U32,
    report_size: U32,
    reserved: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<MsgReportRspHeader>() == abi::SNP_MSG_REPORT_RSP_HEADER);

/// Take the report out of a `MSG_REPORT_RSP`, checking status and size.
pub fn report_from_response(resp: &SnpReportResp) -> Result<Vec<u8>, Error> {
    let (header, body) =
        MsgReportRspHeader::ref_from_prefix(&resp.data).map_err(|_| Error::SnpBadResponse {
            detail: "response shorter than its header".into(),
        })?;
    let status = header.status.get();
    if status != 0 {
        return Err(Error::SnpFirmwareStatus { status });
    }
    let size = header.report_size.get() as usize;
    if size != abi::SNP_REPORT_LEN {
        return Err(Error::SnpBadResponse {
            detail: format!("report size is {size}, expected {}", abi::SNP_REPORT_LEN),
        });
    }
    body.get(..size)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::SnpBadResponse {
            detail: format!(
                "report size is {size}, but the response has {} bytes",
                body.len()
            ),
        })
}
