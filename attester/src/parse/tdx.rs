//! TDX structures: the `TDREPORT_STRUCT` that `TDX_CMD_GET_REPORT0` returns (TDX module
//! ABI) and the TD quote, versions 4 and 5 (Intel DCAP `sgx_quote_4.h`, `sgx_quote_5.h`),
//! as little-endian zerocopy layouts.

use std::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::abi;
use crate::error::Error;

type Mr = [u8; abi::TDX_MR_LEN];

/// `REPORTMACSTRUCT`: the MAC-protected head of the TDREPORT (256 bytes).
#[repr(C)]
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct ReportMac {
    /// Report type (0x81 = TDX).
    pub report_type: u8,
    /// Report subtype.
    pub report_subtype: u8,
    /// Report version.
    pub report_version: u8,
    /// Reserved.
    pub reserved_type: u8,
    /// Reserved.
    pub reserved1: [u8; 12],
    /// CPU SVN.
    pub cpu_svn: [u8; 16],
    /// SHA-384 of `TEE_TCB_INFO`.
    pub tee_tcb_info_hash: Mr,
    /// SHA-384 of `TDINFO_STRUCT`.
    pub tee_info_hash: Mr,
    /// Report data the guest asked for.
    pub report_data: [u8; 64],
    /// Reserved.
    pub reserved2: [u8; 32],
    /// The MAC.
    pub mac: [u8; 32],
}

/// `TDINFO_STRUCT`: the TD's measurements and configuration (512 bytes).
#[repr(C)]
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct TdInfo {
    /// TD attributes (bit 0: DEBUG).
    pub attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// Build-time measurement.
    pub mrtd: Mr,
    /// Host-set configuration ID (Kata: the initdata digest).
    pub mrconfigid: Mr,
    /// Owner ID.
    pub mrowner: Mr,
    /// Owner configuration.
    pub mrownerconfig: Mr,
    /// RTMR 0-3.
    pub rtmr: [Mr; 4],
    /// Hash of bound service TDs.
    pub servtd_hash: Mr,
    /// Reserved.
    pub reserved: [u8; 64],
}

/// `TDREPORT_STRUCT` (1024 bytes).
#[repr(C)]
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct TdReport {
    /// MAC-protected head.
    pub report_mac: ReportMac,
    /// `TEE_TCB_INFO`.
    pub tee_tcb_info: [u8; 239],
    /// Reserved.
    pub reserved: [u8; 17],
    /// Measurements.
    pub td_info: TdInfo,
}

const _: () = assert!(std::mem::size_of::<ReportMac>() == 256);
const _: () = assert!(std::mem::size_of::<TdInfo>() == 512);
const _: () = assert!(std::mem::size_of::<TdReport>() == abi::TDX_REPORT_LEN);
const _: () = assert!(std::mem::offset_of!(TdReport, td_info) == 512);

impl TdReport {
    /// Parse exactly [`abi::TDX_REPORT_LEN`] bytes of a TDX TDREPORT.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let report = Self::read_from_bytes(bytes).map_err(|_| Error::Malformed {
            what: "TDREPORT",
            detail: format!("{} bytes, expected {}", bytes.len(), abi::TDX_REPORT_LEN),
        })?;
        if report.report_mac.report_type != abi::TDX_REPORT_TYPE_TDX {
            return Err(Error::Malformed {
                what: "TDREPORT",
                detail: format!(
                    "report type {:#x}, expected {:#x} (TDX)",
                    report.report_mac.report_type,
                    abi::TDX_REPORT_TYPE_TDX
                ),
            });
        }
        Ok(report)
    }
}

impl fmt::Display for TdReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.report_mac;
        let i = &self.td_info;
        writeln!(f, "TDX TDREPORT")?;
        writeln!(
            f,
            "  {:<20} type {:#x} subtype {} version {}",
            "header", m.report_type, m.report_subtype, m.report_version
        )?;
        line(f, "cpu_svn", &m.cpu_svn)?;
        line(f, "tee_tcb_info_hash", &m.tee_tcb_info_hash)?;
        line(f, "tee_info_hash", &m.tee_info_hash)?;
        line(f, "report_data", &m.report_data)?;
        line(f, "attributes", &i.attributes)?;
        writeln!(f, "  {:<20} {}", "debug", i.attributes[0] & 1 != 0)?;
        line(f, "xfam", &i.xfam)?;
        line(f, "mrtd", &i.mrtd)?;
        line(f, "mrconfigid", &i.mrconfigid)?;
        line(f, "mrowner", &i.mrowner)?;
        line(f, "mrownerconfig", &i.mrownerconfig)?;
        for (n, r) in i.rtmr.iter().enumerate() {
            line(f, &format!("rtmr{n}"), r)?;
        }
        line(f, "servtd_hash", &i.servtd_hash)
    }
}

/// The quote header shared by versions 4 and 5 (48 bytes).
#[repr(C)]
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct QuoteHeader {
    /// Quote version (4 or 5).
    pub version: U16,
    /// Attestation key type (2 = ECDSA P-256).
    pub att_key_type: U16,
    /// TEE type (0x81 = TDX, 0 = SGX).
    pub tee_type: U32,
    /// Reserved.
    pub reserved: [u8; 4],
    /// QE vendor ID.
    pub qe_vendor_id: [u8; 16],
    /// User data (first 16 bytes: platform identifier).
    pub user_data: [u8; 20],
}

/// TD report body 1.0 (`sgx_report2_body_t`, 584 bytes): what quote v4 carries.
#[repr(C)]
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct TdQuoteBody {
    /// TEE TCB SVN.
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    pub mrseam: Mr,
    /// Signer of the TDX module.
    pub mrsignerseam: Mr,
    /// SEAM attributes.
    pub seam_attributes: [u8; 8],
    /// TD attributes (bit 0: DEBUG).
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// Build-time measurement.
    pub mrtd: Mr,
    /// Host-set configuration ID (Kata: the initdata digest).
    pub mrconfigid: Mr,
    /// Owner ID.
    pub mrowner: Mr,
    /// Owner configuration.
    pub mrownerconfig: Mr,
    /// RTMR 0-3.
    pub rtmr: [Mr; 4],
    /// Report data.
    pub report_data: [u8; 64],
}

/// The extra fields of TD report body 1.5 (quote v5, body type 3).
#[repr(C)]
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct TdQuoteBody15Ext {
    /// TEE TCB SVN 2.
    pub tee_tcb_svn2: [u8; 16],
    /// Hash of bound service TDs.
    pub mrservicetd: Mr,
}

#[repr(C)]
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
struct V5Descriptor {
    body_type: U16,
    size: U32,
}

const _: () = assert!(std::mem::size_of::<QuoteHeader>() == abi::TDX_QUOTE_HEADER_LEN);
const _: () = assert!(std::mem::size_of::<TdQuoteBody>() == abi::TDX_QUOTE_BODY_V10_LEN);
const _: () = assert!(
    std::mem::size_of::<TdQuoteBody>() + std::mem::size_of::<TdQuoteBody15Ext>()
        == abi::TDX_QUOTE_BODY_V15_LEN
);
const _: () = assert!(std::mem::size_of::<V5Descriptor>() == abi::TDX_QUOTE_V5_DESCRIPTOR_LEN);
const _: () = assert!(std::mem::offset_of!(TdQuoteBody, mrtd) == 136);
const _: () = assert!(std::mem::offset_of!(TdQuoteBody, report_data) == 520);

/// A parsed TD quote (the signed part; the signature data is only measured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdQuote {
    /// Header.
    pub header: QuoteHeader,
    /// v5 body type (2 = TD 1.0, 3 = TD 1.5); `None` for v4.
    pub v5_body_type: Option<u16>,
    /// The TD report body.
    pub body: TdQuoteBody,
    /// TD 1.5 extension fields (v5 body type 3).
    pub body15: Option<TdQuoteBody15Ext>,
    /// Declared length of the signature data that follows the body.
    pub signature_data_len: u32,
    /// Total length of the quote.
    pub total_len: usize,
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        what: "TD quote",
        detail,
    }
}

impl TdQuote {
    /// Parse a TD quote, version 4 or 5.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (header, rest) = QuoteHeader::read_from_prefix(bytes)
            .map_err(|_| malformed(format!("{} bytes is shorter than the header", bytes.len())))?;
        if header.tee_type.get() != abi::TDX_QUOTE_TEE_TYPE {
            return Err(malformed(format!(
                "tee_type {:#x} is not TDX ({:#x})",
                header.tee_type.get(),
                abi::TDX_QUOTE_TEE_TYPE
            )));
        }
        let short = |what: &str| malformed(format!("too short for the {what}"));
        let (v5_body_type, body, body15, rest) = match header.version.get() {
            4 => {
                let (body, rest) =
                    TdQuoteBody::read_from_prefix(rest).map_err(|_| short("v4 body"))?;
                (None, body, None, rest)
            }
            5 => {
                let (desc, rest) =
                    V5Descriptor::ref_from_prefix(rest).map_err(|_| short("v5 body descriptor"))?;
                let (ty, size) = (desc.body_type.get(), desc.size.get() as usize);
                let expected = match ty {
                    abi::TDX_QUOTE_V5_TYPE_TDX10 => abi::TDX_QUOTE_BODY_V10_LEN,
                    abi::TDX_QUOTE_V5_TYPE_TDX15 => abi::TDX_QUOTE_BODY_V15_LEN,
                    other => return Err(malformed(format!("unknown v5 body type {other}"))),
                };
                if size != expected {
                    return Err(malformed(format!(
                        "v5 body type {ty} declares {size} bytes, expected {expected}"
                    )));
                }
                let (body, rest) =
                    TdQuoteBody::read_from_prefix(rest).map_err(|_| short("v5 body"))?;
                let (body15, rest) = if ty == abi::TDX_QUOTE_V5_TYPE_TDX15 {
                    let (ext, rest) = TdQuoteBody15Ext::read_from_prefix(rest)
                        .map_err(|_| short("v5 TD 1.5 body"))?;
                    (Some(ext), rest)
                } else {
                    (None, rest)
                };
                (Some(ty), body, body15, rest)
            }
            other => return Err(malformed(format!("unsupported quote version {other}"))),
        };
        let (sig_len, sig) = U32::read_from_prefix(rest).map_err(|_| short("signature length"))?;
        let signature_data_len = sig_len.get();
        if sig.len() < signature_data_len as usize {
            return Err(malformed(format!(
                "signature data declares {signature_data_len} bytes, {} present",
                sig.len()
            )));
        }
        Ok(Self {
            header,
            v5_body_type,
            body,
            body15,
            signature_data_len,
            total_len: bytes.len(),
        })
    }

    /// Quote version (4 or 5).
    pub fn version(&self) -> u16 {
        self.header.version.get()
    }
}

fn line(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    writeln!(f, "  {name:<20} {}", hex::encode(bytes))
}

impl fmt::Display for TdQuote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let b = &self.body;
        write!(f, "TDX quote v{}", self.version())?;
        match self.v5_body_type {
            Some(abi::TDX_QUOTE_V5_TYPE_TDX10) => writeln!(f, " (TD report 1.0 body)")?,
            Some(_) => writeln!(f, " (TD report 1.5 body)")?,
            None => writeln!(f)?,
        }
        writeln!(f, "  {:<20} {}", "att_key_type", h.att_key_type.get())?;
        writeln!(f, "  {:<20} {:#x}", "tee_type", h.tee_type.get())?;
        line(f, "qe_vendor_id", &h.qe_vendor_id)?;
        line(f, "user_data", &h.user_data)?;
        line(f, "tee_tcb_svn", &b.tee_tcb_svn)?;
        line(f, "mrseam", &b.mrseam)?;
        line(f, "mrsignerseam", &b.mrsignerseam)?;
        line(f, "seam_attributes", &b.seam_attributes)?;
        line(f, "td_attributes", &b.td_attributes)?;
        writeln!(f, "  {:<20} {}", "debug", b.td_attributes[0] & 1 != 0)?;
        line(f, "xfam", &b.xfam)?;
        line(f, "mrtd", &b.mrtd)?;
        line(f, "mrconfigid", &b.mrconfigid)?;
        line(f, "mrowner", &b.mrowner)?;
        line(f, "mrownerconfig", &b.mrownerconfig)?;
        for (n, r) in b.rtmr.iter().enumerate() {
            line(f, &format!("rtmr{n}"), r)?;
        }
        line(f, "report_data", &b.report_data)?;
        if let Some(ext) = &self.body15 {
            line(f, "tee_tcb_svn2", &ext.tee_tcb_svn2)?;
            line(f, "mrservicetd", &ext.mrservicetd)?;
        }
        writeln!(
            f,
            "  {:<20} {} bytes (quote is {} bytes)",
            "signature_data", self.signature_data_len, self.total_len
        )
    }
}
