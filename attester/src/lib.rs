//! Hardware evidence: everything the guest says about itself to a verifier.
//!
//! This crate owns TEE detection (SEV-SNP through `/dev/sev-guest`, TDX through
//! `/dev/tdx_guest` and configfs-tsm), the evidence JSON in exactly the shape Trustee's
//! verifiers parse, the initdata binding (SNP `HOST_DATA`, TDX `MRCONFIGID`), runtime
//! measurement extension, and parsers for the reports and quotes it produces. It depends
//! on no other Cocoon crate. With no TEE found it refuses, unless the `sample` attester
//! was asked for explicitly.
