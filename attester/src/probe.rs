//! Which TEE is this guest in? The probe looks at every interface in a fixed order, records
//! what it saw, and selects an attester — or refuses. It never falls back to `sample` on its
//! own: with no TEE found, [`Probe::attester`] fails unless `sample` was configured.
//!
//! Order: configfs-tsm provider, `/dev/tdx_guest`, `/dev/sev-guest`, the `sev-guest`
//! platform device. The result's [`Display`](std::fmt::Display) is one line meant for the
//! start-up log and `GetGuestDetails`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::abi::{self, Tee};
use crate::error::Error;
use crate::evidence::Attester;
use crate::snp::device::SevGuestDevice;
use crate::snp::{SnpAttester, SnpTransport};
use crate::tdx::device::{TdxGuestDev, TdxGuestDevice};
use crate::tdx::TdxAttester;
use crate::tsm::TsmReport;

/// Which attester was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttesterChoice {
    /// Use the hardware TEE the probe finds; fail if there is none.
    #[default]
    Auto,
    /// SEV-SNP; fail if this is not an SNP guest.
    Snp,
    /// TDX; fail if this is not a TDX guest.
    Tdx,
    /// The sample attester (no hardware). Only ever by explicit choice.
    Sample,
}

impl FromStr for AttesterChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "auto" | "" => Ok(Self::Auto),
            "snp" => Ok(Self::Snp),
            "tdx" => Ok(Self::Tdx),
            "sample" => Ok(Self::Sample),
            other => Err(Error::InvalidChoice {
                value: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for AttesterChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Snp => "snp",
            Self::Tdx => "tdx",
            Self::Sample => "sample",
        })
    }
}

impl AttesterChoice {
    /// The value of `agent.attester=` on a kernel command line (the last one wins), or
    /// `None` when the key is absent. An unknown value is an error, not `auto`.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<Self>, Error> {
        let key = abi::CMDLINE_ATTESTER_KEY;
        cmdline
            .split_whitespace()
            .filter_map(|word| word.strip_prefix(key)?.strip_prefix('='))
            .next_back()
            .map(str::parse)
            .transpose()
    }
}

/// Where the probe and the attesters look. [`Paths::default`] is the real system;
/// [`Paths::under`] re-roots everything for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// configfs-tsm report root.
    pub tsm_report: PathBuf,
    /// `/dev/sev-guest`.
    pub sev_guest_dev: PathBuf,
    /// `/sys/devices/platform/sev-guest`.
    pub sev_guest_platform: PathBuf,
    /// `/dev/tdx_guest`.
    pub tdx_guest_dev: PathBuf,
    /// `/sys/class/misc/tdx_guest/measurements`.
    pub tdx_measurements: PathBuf,
    /// `/sys/firmware/acpi/tables/data/CCEL`.
    pub ccel: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            tsm_report: abi::TSM_REPORT_DIR.into(),
            sev_guest_dev: abi::SEV_GUEST_DEV.into(),
            sev_guest_platform: abi::SEV_GUEST_PLATFORM.into(),
            tdx_guest_dev: abi::TDX_GUEST_DEV.into(),
            tdx_measurements: abi::TDX_MEASUREMENTS_DIR.into(),
            ccel: abi::CCEL_TABLE.into(),
        }
    }
}

impl Paths {
    /// Every system path re-rooted under `root` (e.g. `root/dev/sev-guest`).
    pub fn under(root: &Path) -> Self {
        let at = |p: &str| root.join(p.trim_start_matches('/'));
        Self {
            tsm_report: at(abi::TSM_REPORT_DIR),
            sev_guest_dev: at(abi::SEV_GUEST_DEV),
            sev_guest_platform: at(abi::SEV_GUEST_PLATFORM),
            tdx_guest_dev: at(abi::TDX_GUEST_DEV),
            tdx_measurements: at(abi::TDX_MEASUREMENTS_DIR),
            ccel: at(abi::CCEL_TABLE),
        }
    }
}

/// One thing the probe looked at and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was looked at (a path or interface).
    pub source: String,
    /// What was seen.
    pub seen: String,
}

/// The probe's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A hardware TEE, selected.
    Hardware(Tee),
    /// The sample attester, configured explicitly; `hardware` is what the probe saw anyway.
    Sample {
        /// A hardware TEE the probe found but was told not to use.
        hardware: Option<Tee>,
    },
    /// No TEE and no opt-in: attestation is refused.
    NoTee,
    /// Signs of both SNP and TDX.
    Conflict,
    /// A TEE was configured but not found.
    RequestedAbsent(Tee),
}

/// What the start-up probe found. Log it once; report [`Probe::tee`] in `GetGuestDetails`.
#[derive(Debug, Clone)]
pub struct Probe {
    /// What was asked for.
    pub choice: AttesterChoice,
    /// Where the choice came from (`kernel command line`, `aa config`, `default`).
    pub choice_source: String,
    /// Everything looked at, in probe order.
    pub findings: Vec<Finding>,
    /// The verdict.
    pub verdict: Verdict,
    tsm_provider: Option<String>,
    paths: Paths,
}

impl Probe {
    /// Probe the interfaces under `paths`. Never fails: what went wrong is in the findings
    /// and the verdict; [`Probe::attester`] turns a refusal into an error.
    pub fn run(choice: AttesterChoice, choice_source: &str, paths: Paths) -> Self {
        let mut findings = Vec::new();
        let tsm = TsmReport::new(&paths.tsm_report);
        let tsm_provider = if tsm.is_present() {
            match tsm.provider() {
                Ok(p) => {
                    findings.push(finding(&paths.tsm_report, format!("provider {p}")));
                    Some(p)
                }
                Err(e) => {
                    findings.push(finding(&paths.tsm_report, format!("error: {e}")));
                    None
                }
            }
        } else {
            findings.push(finding(&paths.tsm_report, "absent".into()));
            None
        };
        let tdx_dev = exists(&mut findings, &paths.tdx_guest_dev);
        let sev_dev = exists(&mut findings, &paths.sev_guest_dev);
        let sev_platform = exists(&mut findings, &paths.sev_guest_platform);

        let tdx = tdx_dev || tsm_provider.as_deref() == Some(abi::TSM_PROVIDER_TDX);
        let snp = sev_dev || sev_platform || tsm_provider.as_deref() == Some(abi::TSM_PROVIDER_SEV);
        let hardware = match (snp, tdx) {
            (true, false) => Some(Tee::Snp),
            (false, true) => Some(Tee::Tdx),
            _ => None,
        };
        let verdict = match choice {
            AttesterChoice::Sample => Verdict::Sample { hardware },
            AttesterChoice::Snp if snp => Verdict::Hardware(Tee::Snp),
            AttesterChoice::Snp => Verdict::RequestedAbsent(Tee::Snp),
            AttesterChoice::Tdx if tdx => Verdict::Hardware(Tee::Tdx),
            AttesterChoice::Tdx => Verdict::RequestedAbsent(Tee::Tdx),
            AttesterChoice::Auto if snp && tdx => Verdict::Conflict,
            AttesterChoice::Auto => hardware.map_or(Verdict::NoTee, Verdict::Hardware),
        };
        Self {
            choice,
            choice_source: choice_source.to_owned(),
            findings,
            verdict,
            tsm_provider,
            paths,
        }
    }

    /// Probe the real system.
    pub fn system(choice: AttesterChoice, choice_source: &str) -> Self {
        Self::run(choice, choice_source, Paths::default())
    }

    /// The TEE evidence will be produced for, if any: the value for `GetGuestDetails`.
    pub fn tee(&self) -> Option<Tee> {
        match self.verdict {
            Verdict::Hardware(t) => Some(t),
            Verdict::Sample { .. } => Some(Tee::Sample),
            _ => None,
        }
    }

    /// The findings as one line.
    pub fn findings_line(&self) -> String {
        self.findings
            .iter()
            .map(|f| format!("{}: {}", f.source, f.seen))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Build the attester for the verdict, or the error that says why there is none.
    pub fn attester(&self) -> Result<Attester, Error> {
        let findings = self.findings_line();
        match self.verdict {
            Verdict::Hardware(Tee::Snp) => self.snp_attester(),
            Verdict::Hardware(_) => Ok(self.tdx_attester()),
            Verdict::Sample { hardware } => {
                if let Some(hw) = hardware {
                    tracing::warn!(hardware = %hw, "sample attester configured on a guest that looks like a hardware TEE");
                }
                Ok(Attester::sample())
            }
            Verdict::NoTee => Err(Error::NoTee { findings }),
            Verdict::Conflict => Err(Error::Conflict { findings }),
            Verdict::RequestedAbsent(t) => Err(Error::RequestedTeeAbsent {
                requested: t.to_string(),
                findings,
            }),
        }
    }

    /// The attester whose register binds initdata (SNP `HOST_DATA`, TDX `MRCONFIGID`):
    /// the hardware the probe sees, whatever attester was chosen — with `sample` chosen on
    /// a guest that looks like a TEE the register is still checked, so the choice cannot
    /// turn the check off. `None` only when there is no sign of a TEE at all.
    pub fn binding_attester(&self) -> Result<Option<Attester>, Error> {
        let auto;
        let probe = if self.choice == AttesterChoice::Auto {
            self
        } else {
            auto = Probe::run(
                AttesterChoice::Auto,
                &self.choice_source,
                self.paths.clone(),
            );
            &auto
        };
        match probe.verdict {
            Verdict::NoTee => Ok(None),
            _ => probe.attester().map(Some),
        }
    }

    fn snp_attester(&self) -> Result<Attester, Error> {
        let tsm_ok = self.tsm_provider.as_deref() == Some(abi::TSM_PROVIDER_SEV);
        match SevGuestDevice::open(&self.paths.sev_guest_dev) {
            Ok(dev) => Ok(Attester::snp(SnpAttester::new(SnpTransport::Device(
                Box::new(dev),
            )))),
            Err(e) if tsm_ok => {
                tracing::info!(error = %e, "using configfs-tsm for SEV-SNP reports");
                Ok(Attester::snp(SnpAttester::new(SnpTransport::Tsm(
                    TsmReport::new(&self.paths.tsm_report),
                ))))
            }
            Err(e) => Err(Error::NoTransport {
                detail: format!(
                    "SEV-SNP guest, but no way to ask for a report: {e}; and configfs-tsm has \
                     no sev_guest provider ({})",
                    self.findings_line()
                ),
            }),
        }
    }

    fn tdx_attester(&self) -> Attester {
        let tsm = (self.tsm_provider.as_deref() == Some(abi::TSM_PROVIDER_TDX))
            .then(|| TsmReport::new(&self.paths.tsm_report));
        let device = match TdxGuestDev::open(&self.paths.tdx_guest_dev) {
            Ok(d) => Some(Box::new(d) as Box<dyn TdxGuestDevice>),
            Err(e) => {
                tracing::info!(error = %e, "no TDREPORT device; MRCONFIGID will come from a quote");
                None
            }
        };
        Attester::tdx(TdxAttester::new(
            tsm,
            device,
            &self.paths.ccel,
            &self.paths.tdx_measurements,
        ))
    }
}

fn finding(path: &Path, seen: String) -> Finding {
    Finding {
        source: path.display().to_string(),
        seen,
    }
}

fn exists(findings: &mut Vec<Finding>, path: &Path) -> bool {
    let present = path.exists();
    findings.push(finding(
        path,
        if present { "present" } else { "absent" }.into(),
    ));
    present
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Hardware(t) => format!("TEE {t}"),
            Verdict::Sample { hardware: None } => {
                "sample attester (explicitly configured, no TEE found)".into()
            }
            Verdict::Sample { hardware: Some(t) } => {
                format!("sample attester (explicitly configured; hardware TEE {t} NOT used)")
            }
            Verdict::NoTee => "no TEE found: attestation will be refused".into(),
            Verdict::Conflict => "conflicting TEE indications: attestation will be refused".into(),
            Verdict::RequestedAbsent(t) => {
                format!("{t} configured but not found: attestation will be refused")
            }
        };
        write!(
            f,
            "attester={} ({}): {verdict} [{}]",
            self.choice,
            self.choice_source,
            self.findings_line()
        )
    }
}
