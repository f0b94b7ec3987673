//! The one interface the agent uses: an [`Attester`] for the TEE the probe selected, giving
//! evidence for report data, the initdata binding, and runtime measurement extension.
//!
//! All calls block (ioctls, configfs, sysfs; a TDX quote goes through the host's quote
//! service and can take a second): call them from a blocking thread in async code.

use crate::abi::{self, Tee};
use crate::error::Error;
use crate::sample::SampleEvidence;
use crate::snp::SnpAttester;
use crate::tdx::TdxAttester;

/// Evidence for one report data value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The TEE name for the KBS `auth` request and `tee-evidence`.
    pub tee: Tee,
    /// The evidence JSON (`primary_evidence`), in exactly the shape Trustee parses.
    pub json: String,
}

/// The register that binds initdata, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitdataBinding {
    /// `HOST_DATA` (SEV-SNP) or `MRCONFIGID` (TDX).
    pub register: &'static str,
    /// The register's value (32 or 48 bytes).
    pub value: Vec<u8>,
}

impl InitdataBinding {
    /// Check `digest` (zero-padded, or cut, to the register width) against the register.
    pub fn check(&self, digest: &[u8]) -> Result<(), Error> {
        let expected = pad(digest, self.value.len());
        if expected == self.value {
            Ok(())
        } else {
            Err(Error::InitdataMismatch {
                register: self.register,
                expected: hex::encode(expected),
                actual: hex::encode(&self.value),
            })
        }
    }
}

/// `bytes` zero-padded (or cut) to `width`.
pub fn pad(bytes: &[u8], width: usize) -> Vec<u8> {
    bytes
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(width)
        .collect()
}

/// Report data zero-padded to 64 bytes; more than 64 is an error.
pub fn pad_report_data(report_data: &[u8]) -> Result<[u8; abi::REPORT_DATA_LEN], Error> {
    if report_data.len() > abi::REPORT_DATA_LEN {
        return Err(Error::ReportDataTooLong {
            len: report_data.len(),
        });
    }
    let mut out = [0u8; abi::REPORT_DATA_LEN];
    for (o, b) in out.iter_mut().zip(report_data) {
        *o = *b;
    }
    Ok(out)
}

/// Report data from hex text (`attest --report-data HEX`): at most 64 bytes.
pub fn report_data_from_hex(text: &str) -> Result<Vec<u8>, Error> {
    let data = hex::decode(text.trim()).map_err(|e| Error::Malformed {
        what: "report data hex",
        detail: e.to_string(),
    })?;
    pad_report_data(&data)?;
    Ok(data)
}

#[derive(Debug)]
enum Backend {
    Snp(SnpAttester),
    Tdx(TdxAttester),
    Sample,
}

/// Evidence source for the TEE this guest runs in. Build one with
/// [`crate::probe::Probe::attester`], or directly with a backend (tests).
#[derive(Debug)]
pub struct Attester {
    backend: Backend,
}

impl Attester {
    /// SEV-SNP.
    pub fn snp(snp: SnpAttester) -> Self {
        Self {
            backend: Backend::Snp(snp),
        }
    }

    /// TDX.
    pub fn tdx(tdx: TdxAttester) -> Self {
        Self {
            backend: Backend::Tdx(tdx),
        }
    }

    /// The sample attester. Only for an explicit opt-in.
    pub fn sample() -> Self {
        Self {
            backend: Backend::Sample,
        }
    }

    /// The TEE name on the wire.
    pub fn tee(&self) -> Tee {
        match self.backend {
            Backend::Snp(_) => Tee::Snp,
            Backend::Tdx(_) => Tee::Tdx,
            Backend::Sample => Tee::Sample,
        }
    }

    /// How evidence is obtained, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Snp(s) => format!("snp via {}", s.transport()),
            Backend::Tdx(t) => format!("tdx: {}", t.describe_transport()),
            Backend::Sample => "sample (no hardware; explicitly configured)".into(),
        }
    }

    /// Evidence binding `report_data` (at most 64 bytes; SNP and TDX zero-pad it to 64,
    /// the sample attester encodes it as given).
    pub fn evidence(&self, report_data: &[u8]) -> Result<Evidence, Error> {
        let padded = pad_report_data(report_data)?;
        let json = match &self.backend {
            Backend::Snp(s) => s.evidence(&padded)?,
            Backend::Tdx(t) => t.evidence(&padded)?,
            Backend::Sample => SampleEvidence::new(report_data).to_json()?,
        };
        Ok(Evidence {
            tee: self.tee(),
            json,
        })
    }

    /// The register that carries the initdata digest: SNP `HOST_DATA`, TDX `MRCONFIGID`.
    /// `None` for the sample attester, which has no such register.
    pub fn initdata_binding(&self) -> Result<Option<InitdataBinding>, Error> {
        Ok(match &self.backend {
            Backend::Snp(s) => Some(InitdataBinding {
                register: "HOST_DATA",
                value: s.host_data()?.to_vec(),
            }),
            Backend::Tdx(t) => Some(InitdataBinding {
                register: "MRCONFIGID",
                value: t.mrconfigid()?.to_vec(),
            }),
            Backend::Sample => None,
        })
    }

    /// Extend a runtime measurement register with a SHA-384 digest. TDX: RTMR 2 or 3,
    /// through sysfs (Linux ≥ 6.16). SEV-SNP has no runtime measurement register, and the
    /// sample attester none either: both return [`Error::Unsupported`].
    pub fn extend_runtime_measurement(
        &self,
        register: u32,
        digest: &[u8; abi::TDX_MR_LEN],
    ) -> Result<(), Error> {
        match &self.backend {
            Backend::Tdx(t) => t.extend_rtmr(register, digest),
            Backend::Snp(_) => Err(Error::Unsupported {
                what: "runtime measurement on SEV-SNP: the platform has no runtime \
                       measurement register (only the launch measurement and HOST_DATA)",
            }),
            Backend::Sample => Err(Error::Unsupported {
                what: "runtime measurement with the sample attester",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_hex() {
        assert_eq!(report_data_from_hex(" 00ff \n").unwrap(), vec![0, 255]);
        assert!(report_data_from_hex("0g").is_err());
        assert!(matches!(
            report_data_from_hex(&"00".repeat(65)),
            Err(Error::ReportDataTooLong { len: 65 })
        ));
        assert_eq!(pad_report_data(&[1]).unwrap()[..2], [1, 0]);
        assert_eq!(pad(&[1, 2, 3], 2), vec![1, 2]);
        assert_eq!(pad(&[1], 3), vec![1, 0, 0]);
    }
}
