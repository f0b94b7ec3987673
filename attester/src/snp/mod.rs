//! AMD SEV-SNP: reports through `/dev/sev-guest` (`SNP_GET_EXT_REPORT`, VMPL 0) or the
//! configfs-tsm `sev_guest` provider, and the evidence JSON Trustee's SNP verifier parses.
//!
//! SEV-SNP has no runtime measurement register: there is nothing to extend after launch.

pub mod certs;
pub mod device;

use serde::{Deserialize, Serialize};
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::CertTableEntry;

use crate::abi;
use crate::error::Error;
use crate::parse::snp::SnpReport;
use crate::tsm::TsmReport;
use device::{request_ext_report, SnpGuestDevice};

/// The evidence Trustee's SNP verifier deserialises: `sev` 6.3's serde form of the report
/// (byte arrays as JSON integer arrays) and the certificate table, or `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnpEvidence {
    /// The report as `sev` models it.
    pub attestation_report: AttestationReport,
    /// ARK / ASK / VCEK / VLEK / ... as the host supplied them, in table order.
    pub cert_chain: Option<Vec<CertTableEntry>>,
}

impl SnpEvidence {
    /// Build evidence from a raw report and an optional raw certificate table.
    pub fn from_raw(report: &[u8], cert_table: Option<&[u8]>) -> Result<Self, Error> {
        // Validate with our own layout first: a clearer error than sev's io::Error.
        SnpReport::from_bytes(report)?;
        let attestation_report =
            AttestationReport::from_bytes(report).map_err(|e| Error::SnpBadResponse {
                detail: format!("the sev crate cannot model this report: {e}"),
            })?;
        let cert_chain = match cert_table {
            Some(table) => Some(certs::parse_cert_table(table)?).filter(|c| !c.is_empty()),
            None => None,
        };
        Ok(Self {
            attestation_report,
            cert_chain,
        })
    }

    /// The JSON text sent as `primary_evidence`.
    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }
}

/// How this guest reaches the SNP firmware.
pub enum SnpTransport {
    /// `/dev/sev-guest` (or a test double).
    Device(Box<dyn SnpGuestDevice>),
    /// configfs-tsm with the `sev_guest` provider.
    Tsm(TsmReport),
}

impl std::fmt::Debug for SnpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Device(_) => f.write_str("Device"),
            Self::Tsm(t) => f.debug_tuple("Tsm").field(&t.root()).finish(),
        }
    }
}

impl std::fmt::Display for SnpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Device(_) => write!(f, "{} (SNP_GET_EXT_REPORT)", abi::SEV_GUEST_DEV),
            Self::Tsm(t) => write!(
                f,
                "configfs-tsm {} ({})",
                t.root().display(),
                abi::TSM_PROVIDER_SEV
            ),
        }
    }
}

/// SEV-SNP evidence source.
#[derive(Debug)]
pub struct SnpAttester {
    transport: SnpTransport,
}

impl SnpAttester {
    /// An attester over `transport`.
    pub fn new(transport: SnpTransport) -> Self {
        Self { transport }
    }

    /// The transport in use.
    pub fn transport(&self) -> &SnpTransport {
        &self.transport
    }

    /// A raw VMPL 0 report binding `report_data`, and the certificate table if any.
    pub fn raw_report(
        &self,
        report_data: &[u8; abi::REPORT_DATA_LEN],
    ) -> Result<device::ExtReport, Error> {
        match &self.transport {
            SnpTransport::Device(dev) => request_ext_report(dev.as_ref(), report_data),
            SnpTransport::Tsm(tsm) => {
                // privlevel defaults to 0 in a fresh entry: a VMPL 0 report.
                let out = tsm.generate(abi::TSM_PROVIDER_SEV, report_data, true)?;
                if out.outblob.len() != abi::SNP_REPORT_LEN {
                    return Err(Error::SnpBadResponse {
                        detail: format!(
                            "configfs-tsm outblob is {} bytes, expected {}",
                            out.outblob.len(),
                            abi::SNP_REPORT_LEN
                        ),
                    });
                }
                Ok(device::ExtReport {
                    report: out.outblob,
                    cert_table: out.auxblob,
                })
            }
        }
    }

    /// Evidence JSON for `report_data` (already padded to 64 bytes).
    pub fn evidence(&self, report_data: &[u8; abi::REPORT_DATA_LEN]) -> Result<String, Error> {
        let ext = self.raw_report(report_data)?;
        // Check what we send: our report data, at VMPL 0.
        let parsed = SnpReport::from_bytes(&ext.report)?;
        if parsed.report_data != *report_data {
            return Err(Error::ReportDataMismatch {
                tee: "SEV-SNP",
                expected: hex::encode(report_data),
                actual: hex::encode(parsed.report_data),
            });
        }
        if parsed.vmpl.get() != abi::SNP_VMPL {
            return Err(Error::SnpBadResponse {
                detail: format!("report is for VMPL {}, not 0", parsed.vmpl.get()),
            });
        }
        SnpEvidence::from_raw(&ext.report, ext.cert_table.as_deref())?.to_json()
    }

    /// `HOST_DATA` of this guest (where the host put the initdata digest at launch).
    pub fn host_data(&self) -> Result<[u8; abi::SNP_HOST_DATA_LEN], Error> {
        let ext = self.raw_report(&[0u8; abi::REPORT_DATA_LEN])?;
        Ok(SnpReport::from_bytes(&ext.report)?.host_data)
    }
}
