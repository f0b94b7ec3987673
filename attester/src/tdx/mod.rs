//! Intel TDX: quotes through configfs-tsm (`tdx_guest` provider), the TDREPORT through
//! `/dev/tdx_guest` (for MRCONFIGID), RTMR extension through sysfs where the kernel offers
//! it (Linux ≥ 6.16), and the evidence JSON Trustee's TDX verifier parses.

pub mod device;

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::abi;
use crate::error::Error;
use crate::parse::tdx::{TdQuote, TdReport};
use crate::tsm::TsmReport;
use device::TdxGuestDevice;

/// The evidence Trustee's TDX verifier deserialises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxEvidence {
    /// The CCEL ACPI table data, standard base64, or `null` when the firmware has none.
    pub cc_eventlog: Option<String>,
    /// The TD quote, standard base64.
    pub quote: String,
}

impl TdxEvidence {
    /// Wrap a quote and an optional event log.
    pub fn new(quote: &[u8], cc_eventlog: Option<&[u8]>) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            cc_eventlog: cc_eventlog.map(|l| b64.encode(l)),
            quote: b64.encode(quote),
        }
    }

    /// The quote bytes.
    pub fn quote_bytes(&self) -> Result<Vec<u8>, Error> {
        decode_b64("TDX evidence quote", &self.quote)
    }

    /// The event log bytes, if any.
    pub fn eventlog_bytes(&self) -> Result<Option<Vec<u8>>, Error> {
        self.cc_eventlog
            .as_deref()
            .map(|l| decode_b64("TDX evidence cc_eventlog", l))
            .transpose()
    }

    /// The JSON text sent as `primary_evidence`.
    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }
}

fn decode_b64(what: &'static str, s: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| Error::Malformed {
            what,
            detail: e.to_string(),
        })
}

/// TDX evidence source.
pub struct TdxAttester {
    tsm: Option<TsmReport>,
    device: Option<Box<dyn TdxGuestDevice>>,
    ccel: PathBuf,
    measurements: PathBuf,
}

impl std::fmt::Debug for TdxAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxAttester")
            .field("tsm", &self.tsm.as_ref().map(|t| t.root().to_path_buf()))
            .field("device", &self.device.is_some())
            .field("ccel", &self.ccel)
            .field("measurements", &self.measurements)
            .finish()
    }
}

impl TdxAttester {
    /// An attester with a quote source (configfs-tsm), an optional TDREPORT device, and the
    /// paths of the CCEL table and the sysfs measurement registers.
    pub fn new(
        tsm: Option<TsmReport>,
        device: Option<Box<dyn TdxGuestDevice>>,
        ccel: impl Into<PathBuf>,
        measurements: impl Into<PathBuf>,
    ) -> Self {
        Self {
            tsm,
            device,
            ccel: ccel.into(),
            measurements: measurements.into(),
        }
    }

    /// One-line description of how quotes and reports are obtained.
    pub fn describe_transport(&self) -> String {
        let quote = match &self.tsm {
            Some(t) => format!("quote via configfs-tsm {}", t.root().display()),
            None => "no quote source (configfs-tsm missing)".into(),
        };
        let report = if self.device.is_some() {
            format!("TDREPORT via {}", abi::TDX_GUEST_DEV)
        } else {
            "no TDREPORT device".into()
        };
        format!("{quote}; {report}")
    }

    /// A TD quote binding `report_data`.
    pub fn quote(&self, report_data: &[u8; abi::REPORT_DATA_LEN]) -> Result<Vec<u8>, Error> {
        let tsm = self.tsm.as_ref().ok_or(Error::Unsupported {
            what: "TDX quote generation without configfs-tsm (needs Linux >= 6.7 with \
                   /sys/kernel/config/tsm/report)",
        })?;
        Ok(tsm
            .generate(abi::TSM_PROVIDER_TDX, report_data, false)?
            .outblob)
    }

    /// The CCEL table, or `None` when the firmware published none.
    pub fn eventlog(&self) -> Result<Option<Vec<u8>>, Error> {
        match std::fs::read(&self.ccel) {
            Ok(log) => Ok(Some(log)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                what: "reading the CCEL event log",
                path: self.ccel.clone(),
                source,
            }),
        }
    }

    /// Evidence JSON for `report_data` (already padded to 64 bytes).
    pub fn evidence(&self, report_data: &[u8; abi::REPORT_DATA_LEN]) -> Result<String, Error> {
        let quote = self.quote(report_data)?;
        // Check what we send: a TD quote binding our report data.
        let parsed = TdQuote::from_bytes(&quote)?;
        if parsed.body.report_data != *report_data {
            return Err(Error::ReportDataMismatch {
                tee: "TDX",
                expected: hex::encode(report_data),
                actual: hex::encode(parsed.body.report_data),
            });
        }
        let log = self.eventlog()?;
        TdxEvidence::new(&quote, log.as_deref()).to_json()
    }

    /// The TDREPORT for `report_data`, from `/dev/tdx_guest`.
    pub fn tdreport(&self, report_data: &[u8; abi::REPORT_DATA_LEN]) -> Result<TdReport, Error> {
        let dev = self.device.as_deref().ok_or(Error::Unsupported {
            what: "a TDREPORT without /dev/tdx_guest",
        })?;
        TdReport::from_bytes(&device::request_tdreport(dev, report_data)?)
    }

    /// MRCONFIGID (where the host put the initdata digest at launch): from the TDREPORT
    /// when the device is there, else from a fresh quote.
    pub fn mrconfigid(&self) -> Result<[u8; abi::TDX_MRCONFIGID_LEN], Error> {
        let zero = [0u8; abi::REPORT_DATA_LEN];
        if self.device.is_some() {
            return Ok(self.tdreport(&zero)?.td_info.mrconfigid);
        }
        Ok(TdQuote::from_bytes(&self.quote(&zero)?)?.body.mrconfigid)
    }

    /// Extend RTMR `index` (2 or 3) with a SHA-384 `digest` through
    /// `<measurements>/rtmr<index>:sha384`.
    pub fn extend_rtmr(&self, index: u32, digest: &[u8; abi::TDX_MR_LEN]) -> Result<(), Error> {
        if !abi::TDX_EXTENDABLE_RTMRS.contains(&index) {
            return Err(Error::RtmrIndex { index });
        }
        if !self.measurements.is_dir() {
            return Err(Error::RtmrUnavailable {
                dir: self.measurements.clone(),
            });
        }
        let path = self.measurements.join(format!("rtmr{index}:sha384"));
        let io = |source| Error::Io {
            what: "extending an RTMR",
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(digest).map_err(io)
    }

    /// The sysfs measurement directory.
    pub fn measurements_dir(&self) -> &Path {
        &self.measurements
    }
}
