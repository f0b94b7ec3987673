//! Hardware evidence: everything the guest says about itself to a verifier.
//!
//! This crate owns TEE detection (SEV-SNP through `/dev/sev-guest` or configfs-tsm, TDX
//! through configfs-tsm and `/dev/tdx_guest`), the evidence JSON in exactly the shape
//! Trustee's verifiers parse (TEE names from `kbs-types`), the initdata binding (SNP
//! `HOST_DATA`, TDX `MRCONFIGID`), runtime measurement extension (TDX RTMR 2/3 through
//! sysfs; SEV-SNP has none), and parsers for the reports and quotes it produces. It depends
//! on no other Cocoon crate. With no TEE found it refuses, unless the `sample` attester was
//! asked for explicitly — there is no silent fallback.
//!
//! # Using it from the agent
//!
//! ```no_run
//! use cocoon_attester::{AttesterChoice, Probe};
//!
//! # fn main() -> Result<(), cocoon_attester::Error> {
//! // 1. At start-up: the opt-in from the kernel command line (or the aa config).
//! let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
//! let choice = AttesterChoice::from_cmdline(&cmdline)?.unwrap_or_default();
//! let probe = Probe::system(choice, "kernel command line");
//! tracing::info!("attestation probe: {probe}"); // once; `probe.tee()` for GetGuestDetails
//! let attester = probe.attester()?; // fails closed: no TEE and no opt-in is an error
//!
//! // 2. Evidence for up to 64 bytes of report data.
//! let evidence = attester.evidence(&[0u8; 48])?;
//! println!("{} {}", evidence.tee, evidence.json);
//!
//! // 3. The initdata binding (HOST_DATA / MRCONFIGID), and checking a digest against it.
//! if let Some(binding) = attester.initdata_binding()? {
//!     binding.check(&[0u8; 48])?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! For the `attest` debugging subcommand: `attest --report-data HEX` is
//! [`report_data_from_hex`] then [`Attester::evidence`] after a probe; `attest --parse FILE` is [`describe_file`], which
//! recognises a raw SEV-SNP report, TDREPORT or TD quote v4/v5, the same as hex or base64
//! text, or evidence JSON, and pretty-prints it. [`parse::snp::verify_report_signature`]
//! checks a report against a VCEK/VLEK certificate.
//!
//! All I/O is blocking; call it from a blocking thread in async code.

// Guest code: a panic here takes the agent (PID 1) and the VM down. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod abi;
pub mod error;
pub mod evidence;
pub mod parse;
pub mod probe;
pub mod sample;
pub mod snp;
pub mod tdx;
pub mod tsm;

pub use abi::Tee;
pub use error::Error;
pub use evidence::{report_data_from_hex, Attester, Evidence, InitdataBinding};
pub use parse::describe_file;
pub use probe::{AttesterChoice, Paths, Probe, Verdict};
