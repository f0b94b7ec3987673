//! `rootfs-builder`: bakes what the Kata runtime boots.
//!
//! A host-side CLI (no root, no docker) that writes deterministic `newc` initrds and
//! dm-verity protected rootfs images around the static agent, and prints the reference
//! values (digests, kernel command line, SEV-SNP launch measurement, TDX RTMRs) that the
//! KBS owner puts into the attestation policy. It links no guest code.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("rootfs-builder: not built yet")
}
