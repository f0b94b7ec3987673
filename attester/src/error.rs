//! The crate's error type. Every failure names what was tried and why it failed; none is
//! silently turned into a fallback.

use std::path::PathBuf;

use crate::tsm::TsmError;

/// Errors from probing, evidence generation, initdata binding and parsing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing indicates a TEE and the sample attester was not asked for.
    #[error(
        "no TEE found ({findings}); refusing to produce evidence. To attest without hardware \
         (tests only), opt into the sample attester explicitly: `agent.attester=sample` on the \
         kernel command line, or `attester = \"sample\"` in the attestation-agent config"
    )]
    NoTee {
        /// What the probe saw.
        findings: String,
    },
    /// Signs of both SEV-SNP and TDX: something is wrong with this guest or its emulation.
    #[error(
        "conflicting TEE indications ({findings}); set `agent.attester=snp` or `=tdx` to choose"
    )]
    Conflict {
        /// What the probe saw.
        findings: String,
    },
    /// A TEE was configured explicitly but the probe found no sign of it.
    #[error(
        "attester `{requested}` was configured but this guest shows no sign of it ({findings})"
    )]
    RequestedTeeAbsent {
        /// The configured TEE.
        requested: String,
        /// What the probe saw.
        findings: String,
    },
    /// The attester setting has a value we do not know.
    #[error("unknown attester `{value}`: expected one of auto, snp, tdx, sample")]
    InvalidChoice {
        /// The value given.
        value: String,
    },
    /// The TEE is there but no interface to reach it is.
    #[error("{detail}")]
    NoTransport {
        /// What is missing.
        detail: String,
    },
    /// Report data longer than 64 bytes.
    #[error("report data is {len} bytes; at most 64 are allowed")]
    ReportDataTooLong {
        /// Length offered.
        len: usize,
    },
    /// `/dev/sev-guest` does not exist.
    #[error("no {}: not an SEV-SNP guest (or the sev-guest driver is not loaded)", path.display())]
    NotSnpGuest {
        /// The device path.
        path: PathBuf,
    },
    /// `/dev/tdx_guest` does not exist.
    #[error("no {}: not a TDX guest (or the tdx-guest driver is not loaded)", path.display())]
    NotTdxGuest {
        /// The device path.
        path: PathBuf,
    },
    /// A device node exists but cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    Device {
        /// The device path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `SNP_GET_EXT_REPORT` failed.
    #[error("SNP_GET_EXT_REPORT failed: {errno} (firmware error {fw_error:#x}, VMM error {vmm_error:#x})")]
    SnpIoctl {
        /// The ioctl errno.
        errno: nix::errno::Errno,
        /// Low half of `exitinfo2`.
        fw_error: u32,
        /// High half of `exitinfo2`.
        vmm_error: u32,
    },
    /// The firmware answered with a non-zero status.
    #[error("SEV-SNP firmware refused the report request: status {status:#x}")]
    SnpFirmwareStatus {
        /// `MSG_REPORT_RSP.status`.
        status: u32,
    },
    /// The response or report is not what the ABI promises.
    #[error("unexpected SEV-SNP response: {detail}")]
    SnpBadResponse {
        /// What was wrong.
        detail: String,
    },
    /// The host asks for an absurd certificate buffer.
    #[error("the host wants a {needed}-byte certificate buffer; refusing more than {max}")]
    SnpCertsTooLarge {
        /// Requested size.
        needed: usize,
        /// Our limit.
        max: usize,
    },
    /// The certificate buffer kept being too small.
    #[error("the certificate buffer was still too small after {tries} tries")]
    SnpCertsRetriesExhausted {
        /// How many requests we made.
        tries: usize,
    },
    /// The certificate table is malformed.
    #[error("malformed SEV-SNP certificate table: {detail}")]
    SnpCertTable {
        /// What was wrong.
        detail: String,
    },
    /// `TDX_CMD_GET_REPORT0` failed.
    #[error("TDX_CMD_GET_REPORT0 failed: {errno}")]
    TdxIoctl {
        /// The ioctl errno.
        errno: nix::errno::Errno,
    },
    /// configfs-tsm failed.
    #[error(transparent)]
    Tsm(#[from] TsmError),
    /// The operation does not exist for this TEE or this kernel.
    #[error("not supported: {what}")]
    Unsupported {
        /// What is not supported, and why.
        what: &'static str,
    },
    /// Only RTMR 2 and 3 may be extended after boot.
    #[error("RTMR {index} cannot be extended: only RTMR 2 and 3 are for software after boot")]
    RtmrIndex {
        /// The index asked for.
        index: u32,
    },
    /// The kernel has no sysfs RTMR interface.
    #[error("this kernel offers no TDX RTMR extension: {} is missing (needs Linux >= 6.16)", dir.display())]
    RtmrUnavailable {
        /// The directory we looked for.
        dir: PathBuf,
    },
    /// The initdata digest does not match the hardware binding.
    #[error("initdata does not match {register}: expected {expected}, the TEE reports {actual}")]
    InitdataMismatch {
        /// `HOST_DATA` or `MRCONFIGID`.
        register: &'static str,
        /// Hex of the padded digest.
        expected: String,
        /// Hex of the register.
        actual: String,
    },
    /// The report or quote does not carry the report data we asked for.
    #[error("the {tee} report does not carry our report data: asked for {expected}, got {actual}")]
    ReportDataMismatch {
        /// Which TEE.
        tee: &'static str,
        /// Hex of what we asked for.
        expected: String,
        /// Hex of what came back.
        actual: String,
    },
    /// Input that is not a report, quote or evidence we know.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What we tried to parse.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A report signature does not verify.
    #[error("signature check failed: {detail}")]
    Signature {
        /// What was wrong.
        detail: String,
    },
    /// A file operation failed.
    #[error("{what}: {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// JSON (de)serialisation failed.
    #[error("evidence JSON: {0}")]
    Json(#[from] serde_json::Error),
}
