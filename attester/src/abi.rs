//! Protocol constants: paths, ioctl numbers, sizes and names fixed by the kernel uapi, the
//! AMD and Intel specifications, or the KBS wire protocol. Nothing here is a tunable.
//!
//! Sources:
//! - Linux `include/uapi/linux/sev-guest.h` (SEV-SNP guest ioctls and structs)
//! - Linux `include/uapi/linux/tdx-guest.h` (TDX guest ioctl and struct)
//! - Linux `Documentation/ABI/testing/configfs-tsm` (configfs-tsm report interface, ≥ 6.7)
//! - Linux `Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest` (TDX MRs, ≥ 6.16)
//! - AMD SEV-SNP Firmware ABI specification (pub. 56860), `ATTESTATION_REPORT` and
//!   `MSG_REPORT_RSP`; GHCB specification (pub. 56421) for the certificate table
//! - Intel TDX Module ABI (`TDREPORT_STRUCT`) and Intel DCAP `sgx_quote_4.h` / `sgx_quote_5.h`
//! - kbs-types `Tee` (<https://github.com/virtee/kbs-types>) for the TEE names on the wire

/// TEE names on the wire come from kbs-types; re-exported so callers need not depend on it.
pub use kbs_types::Tee;

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

/// configfs-tsm report directory (Linux ≥ 6.7).
pub const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";
/// SEV-SNP guest device node (`sev-guest` driver).
pub const SEV_GUEST_DEV: &str = "/dev/sev-guest";
/// The SEV-SNP guest platform device; present on SNP guests even before the driver binds.
pub const SEV_GUEST_PLATFORM: &str = "/sys/devices/platform/sev-guest";
/// TDX guest device node (`tdx-guest` driver).
pub const TDX_GUEST_DEV: &str = "/dev/tdx_guest";
/// TDX measurement registers in sysfs (Linux ≥ 6.16): `rtmrN:sha384` is writable to extend.
pub const TDX_MEASUREMENTS_DIR: &str = "/sys/class/misc/tdx_guest/measurements";
/// ACPI CC event log (CCEL) table data.
pub const CCEL_TABLE: &str = "/sys/firmware/acpi/tables/data/CCEL";

// ---------------------------------------------------------------------------------------
// configfs-tsm
// ---------------------------------------------------------------------------------------

/// `provider` value of the TDX guest driver (without the trailing newline).
pub const TSM_PROVIDER_TDX: &str = "tdx_guest";
/// `provider` value of the SEV-SNP guest driver (without the trailing newline).
pub const TSM_PROVIDER_SEV: &str = "sev_guest";
/// Largest `inblob` the kernel accepts (`TSM_INBLOB_MAX`).
pub const TSM_INBLOB_MAX: usize = 64;

// ---------------------------------------------------------------------------------------
// Report data
// ---------------------------------------------------------------------------------------

/// Report data is at most 64 bytes and is zero-padded to 64 for SNP and TDX.
pub const REPORT_DATA_LEN: usize = 64;
/// SNP `HOST_DATA` width: the initdata digest is zero-padded (or cut) to this.
pub const SNP_HOST_DATA_LEN: usize = 32;
/// TDX `MRCONFIGID` width: the initdata digest is zero-padded (or cut) to this.
pub const TDX_MRCONFIGID_LEN: usize = 48;
/// Width of one TDX measurement register (SHA-384).
pub const TDX_MR_LEN: usize = 48;

// ---------------------------------------------------------------------------------------
// SEV-SNP (`sev-guest.h`, SNP firmware ABI)
// ---------------------------------------------------------------------------------------

/// ioctl type byte of `/dev/sev-guest` (`SNP_GUEST_REQ_IOC_TYPE`).
pub const SNP_IOC_TYPE: u8 = b'S';
/// `SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub const SNP_GET_REPORT_NR: u8 = 0;
/// `SNP_GET_EXT_REPORT = _IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
pub const SNP_GET_EXT_REPORT_NR: u8 = 2;
/// `sizeof(struct snp_report_req)`.
pub const SNP_REPORT_REQ_SIZE: usize = 96;
/// `sizeof(struct snp_ext_report_req)` (96 + u64 + u32, padded to 8).
pub const SNP_EXT_REPORT_REQ_SIZE: usize = 112;
/// `sizeof(struct snp_report_resp)`.
pub const SNP_REPORT_RESP_SIZE: usize = 4000;
/// `sizeof(struct snp_guest_request_ioctl)`.
pub const SNP_GUEST_REQUEST_IOCTL_SIZE: usize = 32;
/// Message version we send (the kernel rejects 0).
pub const SNP_MSG_VERSION: u8 = 1;
/// We always ask for a VMPL 0 report: Trustee rejects any other VMPL.
pub const SNP_VMPL: u32 = 0;
/// Upper 32 bits of `exitinfo2`: the VMM error. 1 = certificate buffer too small.
pub const SNP_VMM_ERR_SHIFT: u32 = 32;
/// `SNP_GUEST_VMM_ERR_INVALID_LEN`: the kernel wrote the needed size to `certs_len`.
pub const SNP_VMM_ERR_INVALID_LEN: u32 = 1;
/// `SNP_GUEST_VMM_ERR_BUSY`.
pub const SNP_VMM_ERR_BUSY: u32 = 2;
/// Certificate buffer lengths must be page multiples.
pub const PAGE_SIZE: usize = 4096;
/// First certificate buffer we offer: ARK + ASK + VCEK and the table fit in 4 pages.
pub const SNP_CERTS_INITIAL_LEN: usize = 4 * PAGE_SIZE;
/// We refuse to allocate more than this for certificates, whatever the host says.
pub const SNP_CERTS_MAX_LEN: usize = 256 * PAGE_SIZE;
/// How many times we grow the certificate buffer before giving up.
pub const SNP_CERTS_MAX_TRIES: usize = 4;
/// `MSG_REPORT_RSP`: status (u32), report size (u32), 24 reserved bytes, then the report.
pub const SNP_MSG_REPORT_RSP_HEADER: usize = 0x20;
/// `ATTESTATION_REPORT` size.
pub const SNP_REPORT_LEN: usize = 1184;
/// The signature covers bytes `0..0x2A0` of the report.
pub const SNP_REPORT_SIGNED_LEN: usize = 0x2A0;
/// Bytes of one certificate table entry: GUID (16), offset (u32), length (u32).
pub const SNP_CERT_TABLE_ENTRY_LEN: usize = 24;

/// Certificate table GUIDs (GHCB spec, "SNP Extended Guest Request"), canonical byte order.
pub mod snp_cert_guid {
    /// AMD Root Key.
    pub const ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
    /// AMD SEV Key.
    pub const ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
    /// Versioned Chip Endorsement Key.
    pub const VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
    /// Versioned Loaded Endorsement Key.
    pub const VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
    /// Certificate revocation list.
    pub const CRL: &str = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea";
}

// ---------------------------------------------------------------------------------------
// TDX (`tdx-guest.h`, TDX module ABI, DCAP quote headers)
// ---------------------------------------------------------------------------------------

/// ioctl type byte of `/dev/tdx_guest`.
pub const TDX_IOC_TYPE: u8 = b'T';
/// `TDX_CMD_GET_REPORT0 = _IOWR('T', 1, struct tdx_report_req)`.
pub const TDX_CMD_GET_REPORT0_NR: u8 = 1;
/// `TDX_REPORTDATA_LEN`.
pub const TDX_REPORTDATA_LEN: usize = 64;
/// `TDX_REPORT_LEN`: size of `TDREPORT_STRUCT`.
pub const TDX_REPORT_LEN: usize = 1024;
/// `TDREPORT_STRUCT.REPORTMACSTRUCT.type.type` for TDX.
pub const TDX_REPORT_TYPE_TDX: u8 = 0x81;
/// Quote header `tee_type` for TDX.
pub const TDX_QUOTE_TEE_TYPE: u32 = 0x81;
/// Quote header size.
pub const TDX_QUOTE_HEADER_LEN: usize = 48;
/// Quote v4 body (TD report 1.0) size.
pub const TDX_QUOTE_BODY_V10_LEN: usize = 584;
/// Quote v5 body (TD report 1.5) size.
pub const TDX_QUOTE_BODY_V15_LEN: usize = 648;
/// Quote v5 body descriptor: type (u16) + size (u32).
pub const TDX_QUOTE_V5_DESCRIPTOR_LEN: usize = 6;
/// Quote v5 body type: TD report 1.0.
pub const TDX_QUOTE_V5_TYPE_TDX10: u16 = 2;
/// Quote v5 body type: TD report 1.5.
pub const TDX_QUOTE_V5_TYPE_TDX15: u16 = 3;
/// The RTMRs that software after boot may extend (0 and 1 belong to firmware and kernel).
pub const TDX_EXTENDABLE_RTMRS: std::ops::RangeInclusive<u32> = 2..=3;

// ---------------------------------------------------------------------------------------
// Sample attester
// ---------------------------------------------------------------------------------------

/// The `svn` the sample attester reports.
pub const SAMPLE_SVN: &str = "1";

// ---------------------------------------------------------------------------------------
// Opt-in configuration
// ---------------------------------------------------------------------------------------

/// Kernel command line key that selects the attester (`auto`, `snp`, `tdx`, `sample`).
pub const CMDLINE_ATTESTER_KEY: &str = "agent.attester";
