//! The expected AMD SEV-SNP launch measurement of a QEMU direct-boot guest.
//!
//! The computation is the `sev` crate's (`sev::measurement::snp`), which implements the
//! algorithm of `sev-snp-measure` (<https://github.com/virtee/sev-snp-measure>): the
//! launch digest over OVMF's pages, the sections its SEV metadata declares (zero pages,
//! secrets, CPUID, the kernel hashes table QEMU fills in from the kernel, initrd and
//! command line), and one VMSA page per vCPU for the chosen CPU model. Spec: AMD SEV-SNP
//! ABI, "PAGE_INFO" and SNP_LAUNCH_UPDATE
//! (<https://www.amd.com/content/dam/amd/en/documents/epyc-technical-docs/specifications/56860.pdf>).
//! Test vectors: `sev-snp-measure`'s and the `sev` crate's published values (see tests).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sev::measurement::{
    snp::{snp_calc_launch_digest, SnpMeasurementArgs},
    vcpu_types::CpuType,
    vmsa::{GuestFeatures, VMMType},
};

/// `sev-snp-measure`'s default guest features: SNPActive only.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;
/// The CPU model Kata's QEMU SNP configuration uses by default.
pub const DEFAULT_VCPU_TYPE: &str = "EPYC-v4";

/// Inputs of the measurement, kept in the reference values so `verify` can redo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpInput {
    pub ovmf: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub initrd: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cmdline: Option<String>,
    pub vcpus: u32,
    pub vcpu_type: String,
    /// Hex, e.g. `0x1`.
    pub guest_features: String,
    /// `qemu` or `ec2`.
    pub vmm: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    #[error("SEV-SNP measurement: {0}")]
    Measurement(String),
    #[error("guest features {0:?} are not a hex number")]
    Features(String),
}

fn m(e: impl std::fmt::Display) -> SnpError {
    SnpError::Measurement(e.to_string())
}

/// Parses `0x21` or `21` as hex.
pub fn parse_features(s: &str) -> Result<u64, SnpError> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| SnpError::Features(s.into()))
}

/// The launch measurement (hex, 48 bytes) for `input`.
pub fn launch_measurement(input: &SnpInput) -> Result<String, SnpError> {
    let vcpu_type = CpuType::try_from(input.vcpu_type.as_str()).map_err(m)?;
    let vmm: VMMType = input.vmm.parse().map_err(m)?;
    let features = parse_features(&input.guest_features)?;
    let args = SnpMeasurementArgs {
        vcpus: input.vcpus,
        vcpu_type,
        ovmf_file: input.ovmf.clone(),
        guest_features: GuestFeatures(features),
        kernel_file: input.kernel.clone(),
        initrd_file: input.initrd.clone(),
        append: input.cmdline.as_deref(),
        ovmf_hash_str: None,
        vmm_type: Some(vmm),
    };
    let ld = snp_calc_launch_digest(args).map_err(m)?;
    Ok(ld.get_hex_ld())
}
