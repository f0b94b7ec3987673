//! `/dev/tdx_guest`: the `TDX_CMD_GET_REPORT0` ioctl (TDREPORT, for MRCONFIGID and the
//! RTMRs), behind a trait so tests can substitute a double.
//!
//! The uapi struct is `#[repr(C)]` with its size asserted against
//! `include/uapi/linux/tdx-guest.h`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::abi;
use crate::error::Error;

/// `struct tdx_report_req`.
#[repr(C)]
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct TdxReportReq {
    /// Report data to bind (`TDX_REPORTDATA_LEN`).
    pub reportdata: [u8; abi::TDX_REPORTDATA_LEN],
    /// The TDREPORT the module returns (`TDX_REPORT_LEN`).
    pub tdreport: [u8; abi::TDX_REPORT_LEN],
}

const _: () =
    assert!(std::mem::size_of::<TdxReportReq>() == abi::TDX_REPORTDATA_LEN + abi::TDX_REPORT_LEN);
const _: () = assert!(std::mem::offset_of!(TdxReportReq, tdreport) == abi::TDX_REPORTDATA_LEN);

/// The seam between our logic and the kernel: one `TDX_CMD_GET_REPORT0`.
pub trait TdxGuestDevice: Send + Sync {
    /// Fill `req.tdreport` for `req.reportdata`.
    fn get_report0(&self, req: &mut TdxReportReq) -> Result<(), nix::errno::Errno>;
}

mod ioctl {
    use super::TdxReportReq;
    use crate::abi;

    nix::ioctl_readwrite!(
        tdx_get_report0,
        abi::TDX_IOC_TYPE,
        abi::TDX_CMD_GET_REPORT0_NR,
        TdxReportReq
    );
}

/// The real `/dev/tdx_guest`.
#[derive(Debug)]
pub struct TdxGuestDev {
    file: File,
    path: PathBuf,
}

impl TdxGuestDev {
    /// Open the device at `path` (normally [`abi::TDX_GUEST_DEV`]). A missing node is
    /// [`Error::NotTdxGuest`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        match File::options().read(true).write(true).open(&path) {
            Ok(file) => Ok(Self { file, path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotTdxGuest { path }),
            Err(source) => Err(Error::Device { path, source }),
        }
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl TdxGuestDevice for TdxGuestDev {
    fn get_report0(&self, req: &mut TdxReportReq) -> Result<(), nix::errno::Errno> {
        // SAFETY: `req` is an exclusively borrowed, fully initialised `tdx_report_req`
        // whose size (1088) matches the one encoded in the ioctl number; the kernel reads
        // `reportdata` and writes `tdreport`, both within the struct.
        unsafe { ioctl::tdx_get_report0(self.file.as_raw_fd(), req) }.map(|_| ())
    }
}

/// Ask `dev` for a TDREPORT binding `report_data`.
pub fn request_tdreport(
    dev: &dyn TdxGuestDevice,
    report_data: &[u8; abi::TDX_REPORTDATA_LEN],
) -> Result<[u8; abi::TDX_REPORT_LEN], Error> {
    let mut req = TdxReportReq::new_zeroed();
    req.reportdata = *report_data;
    dev.get_report0(&mut req)
        .map_err(|errno| Error::TdxIoctl { errno })?;
    Ok(req.tdreport)
}
