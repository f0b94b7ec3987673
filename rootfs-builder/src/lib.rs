//! `rootfs-builder`: bakes what the Kata runtime boots.
//!
//! A host-side library and CLI (no root, no docker) that writes deterministic `newc`
//! initrds and dm-verity protected ext4/erofs rootfs images around the static agent
//! (kernel modules in dependency order, pause bundle, policy, CA certificates, optional
//! busybox), and computes the reference values (digests, kernel command line, SEV-SNP
//! launch measurement, TDX RTMRs) that the KBS owner puts into the attestation policy.
//! It links no guest code.

pub mod compress;
pub mod content;
pub mod cpio;
pub mod ext4;
pub mod initrd;
pub mod modules;
pub mod pause;
pub mod reference;
pub mod rootfs;
pub mod snp;
pub mod spec;
pub mod tdx;
pub mod tools;
pub mod tree;
pub mod verity;

/// `SOURCE_DATE_EPOCH` (<https://reproducible-builds.org/specs/source-date-epoch/>), or 0.
pub fn source_date_epoch() -> Result<u32, std::num::ParseIntError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse(),
        _ => Ok(0),
    }
}
