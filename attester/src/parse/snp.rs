//! The SEV-SNP `ATTESTATION_REPORT` (SNP firmware ABI, Table "ATTESTATION_REPORT
//! Structure"), as a little-endian zerocopy layout, plus signature verification against a
//! VCEK or VLEK certificate.

use std::fmt;

use p384::ecdsa::signature::Verifier;
use x509_cert::der::Decode;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::abi;
use crate::error::Error;

/// The 1184-byte SEV-SNP attestation report.
#[repr(C)]
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct SnpReport {
    /// Report format version (2, 3, 5, ...).
    pub version: U32,
    /// Guest SVN from the ID block.
    pub guest_svn: U32,
    /// Guest policy.
    pub policy: U64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// The VMPL the report was requested at.
    pub vmpl: U32,
    /// Signature algorithm (1 = ECDSA P-384 with SHA-384).
    pub signature_algo: U32,
    /// Current TCB.
    pub current_tcb: U64,
    /// Platform info bits (SMT, TSME, ...).
    pub platform_info: U64,
    /// Key info: author key enabled, mask chip key, signing key (VCEK/VLEK/none).
    pub key_info: U32,
    /// Reserved.
    pub reserved0: [u8; 4],
    /// Guest-supplied report data.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host-supplied data at launch (Kata: the initdata digest).
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key.
    pub author_key_digest: [u8; 48],
    /// Report ID of this guest.
    pub report_id: [u8; 32],
    /// Report ID of the migration agent.
    pub report_id_ma: [u8; 32],
    /// TCB used to derive the signing key.
    pub reported_tcb: U64,
    /// CPUID family (version ≥ 3).
    pub cpuid_fam_id: u8,
    /// CPUID model (version ≥ 3).
    pub cpuid_mod_id: u8,
    /// CPUID stepping (version ≥ 3).
    pub cpuid_step: u8,
    /// Reserved.
    pub reserved1: [u8; 21],
    /// Chip identifier (zero when masked).
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: U64,
    /// Current firmware version: build, minor, major.
    pub current_version: [u8; 3],
    /// Reserved.
    pub reserved2: u8,
    /// Committed firmware version: build, minor, major.
    pub committed_version: [u8; 3],
    /// Reserved.
    pub reserved3: u8,
    /// TCB at launch.
    pub launch_tcb: U64,
    /// Launch mitigation vector (version ≥ 5).
    pub launch_mit_vector: U64,
    /// Current mitigation vector (version ≥ 5).
    pub current_mit_vector: U64,
    /// Reserved.
    pub reserved4: [u8; 152],
    /// ECDSA `r`, little-endian, zero-extended to 72 bytes.
    pub signature_r: [u8; 72],
    /// ECDSA `s`, little-endian, zero-extended to 72 bytes.
    pub signature_s: [u8; 72],
    /// Reserved.
    pub reserved5: [u8; 368],
}

const _: () = assert!(std::mem::size_of::<SnpReport>() == abi::SNP_REPORT_LEN);
const _: () = assert!(std::mem::offset_of!(SnpReport, report_data) == 0x50);
const _: () = assert!(std::mem::offset_of!(SnpReport, measurement) == 0x90);
const _: () = assert!(std::mem::offset_of!(SnpReport, host_data) == 0xC0);
const _: () = assert!(std::mem::offset_of!(SnpReport, reported_tcb) == 0x180);
const _: () = assert!(std::mem::offset_of!(SnpReport, chip_id) == 0x1A0);
const _: () = assert!(std::mem::offset_of!(SnpReport, launch_tcb) == 0x1F0);
const _: () = assert!(std::mem::offset_of!(SnpReport, signature_r) == abi::SNP_REPORT_SIGNED_LEN);

/// A TCB version, decoded for the CPU generation that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcb {
    /// FMC SVN (Turin and later only).
    pub fmc: Option<u8>,
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
    /// The raw 64-bit value.
    pub raw: u64,
}

impl Tcb {
    /// Decode `raw`, in the Turin layout if `turin` else the Milan/Genoa one.
    pub fn decode(raw: u64, turin: bool) -> Self {
        let b = raw.to_le_bytes();
        if turin {
            Self {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
                raw,
            }
        } else {
            Self {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
                raw,
            }
        }
    }
}

impl fmt::Display for Tcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#018x} (bootloader {}, tee {}, snp {}, microcode {}",
            self.raw, self.bootloader, self.tee, self.snp, self.microcode
        )?;
        if let Some(fmc) = self.fmc {
            write!(f, ", fmc {fmc}")?;
        }
        f.write_str(")")
    }
}

impl SnpReport {
    /// Parse exactly [`abi::SNP_REPORT_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let report = Self::read_from_bytes(bytes).map_err(|_| Error::Malformed {
            what: "SEV-SNP report",
            detail: format!("{} bytes, expected {}", bytes.len(), abi::SNP_REPORT_LEN),
        })?;
        let version = report.version.get();
        if !(2..=31).contains(&version) {
            return Err(Error::Malformed {
                what: "SEV-SNP report",
                detail: format!("unknown report version {version}"),
            });
        }
        Ok(report)
    }

    /// Whether TCB values use the Turin layout (FMC byte first).
    pub fn is_turin_like(&self) -> bool {
        if self.version.get() >= 3 {
            self.cpuid_fam_id >= 0x1A
        } else {
            // Version 2 has no CPUID fields: Turin chip IDs are 8 bytes long.
            self.chip_id[8..].iter().all(|b| *b == 0) && self.chip_id.iter().any(|b| *b != 0)
        }
    }

    fn tcb(&self, raw: &U64) -> Tcb {
        Tcb::decode(raw.get(), self.is_turin_like())
    }

    /// Current TCB.
    pub fn current_tcb(&self) -> Tcb {
        self.tcb(&self.current_tcb)
    }

    /// TCB used to derive the signing key; what the VCEK certifies.
    pub fn reported_tcb(&self) -> Tcb {
        self.tcb(&self.reported_tcb)
    }

    /// Committed TCB.
    pub fn committed_tcb(&self) -> Tcb {
        self.tcb(&self.committed_tcb)
    }

    /// TCB at launch.
    pub fn launch_tcb(&self) -> Tcb {
        self.tcb(&self.launch_tcb)
    }

    /// Guest policy: ABI minor/major in bits 0-15.
    pub fn policy_abi(&self) -> (u8, u8) {
        let p = self.policy.get();
        (((p >> 8) & 0xff) as u8, (p & 0xff) as u8)
    }

    /// Guest policy bit 19: debugging allowed.
    pub fn policy_debug_allowed(&self) -> bool {
        self.policy.get() & (1 << 19) != 0
    }

    /// Guest policy bit 16: SMT allowed.
    pub fn policy_smt_allowed(&self) -> bool {
        self.policy.get() & (1 << 16) != 0
    }

    /// Guest policy bit 18: migration agent allowed.
    pub fn policy_migrate_ma(&self) -> bool {
        self.policy.get() & (1 << 18) != 0
    }

    /// Guest policy bit 20: single socket required.
    pub fn policy_single_socket(&self) -> bool {
        self.policy.get() & (1 << 20) != 0
    }

    /// Key info bits 2-4: which key signed (0 VCEK, 1 VLEK, 7 none).
    pub fn signing_key(&self) -> &'static str {
        match (self.key_info.get() >> 2) & 0x7 {
            0 => "VCEK",
            1 => "VLEK",
            7 => "none",
            _ => "reserved",
        }
    }

    /// The signature as big-endian `r ‖ s` (48 + 48 bytes), as P-384 expects.
    pub fn signature_be(&self) -> Result<[u8; 96], Error> {
        let mut out = [0u8; 96];
        for (dst, src) in out
            .chunks_exact_mut(48)
            .zip([&self.signature_r, &self.signature_s])
        {
            if src[48..].iter().any(|b| *b != 0) {
                return Err(Error::Signature {
                    detail: "signature component wider than 48 bytes".into(),
                });
            }
            for (d, b) in dst.iter_mut().zip(src[..48].iter().rev()) {
                *d = *b;
            }
        }
        Ok(out)
    }
}

/// Verify the report's ECDSA P-384 signature over its raw bytes `0..0x2A0` with the public
/// key of `vek_der` (a VCEK or VLEK certificate, DER). Any changed signed byte fails.
pub fn verify_report_signature(report: &[u8], vek_der: &[u8]) -> Result<(), Error> {
    let parsed = SnpReport::from_bytes(report)?;
    let cert = x509_cert::Certificate::from_der(vek_der).map_err(|e| Error::Signature {
        detail: format!("cannot parse the VEK certificate: {e}"),
    })?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(spki).map_err(|e| Error::Signature {
        detail: format!("the certificate's key is not a P-384 key: {e}"),
    })?;
    let sig = p384::ecdsa::Signature::from_slice(&parsed.signature_be()?).map_err(|e| {
        Error::Signature {
            detail: format!("malformed signature: {e}"),
        }
    })?;
    let signed = report
        .get(..abi::SNP_REPORT_SIGNED_LEN)
        .ok_or_else(|| Error::Signature {
            detail: "the report is shorter than its signed part".into(),
        })?;
    key.verify(signed, &sig).map_err(|_| Error::Signature {
        detail: "the report signature does not verify with this certificate".into(),
    })
}

fn hex_line(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    writeln!(f, "  {name:<20} {}", hex::encode(bytes))
}

impl fmt::Display for SnpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (abi_major, abi_minor) = self.policy_abi();
        writeln!(f, "SEV-SNP attestation report")?;
        writeln!(f, "  {:<20} {}", "version", self.version.get())?;
        writeln!(f, "  {:<20} {}", "guest_svn", self.guest_svn.get())?;
        writeln!(
            f,
            "  {:<20} {:#x} (abi {abi_major}.{abi_minor}, smt {}, migrate_ma {}, debug {}, single_socket {})",
            "policy",
            self.policy.get(),
            self.policy_smt_allowed(),
            self.policy_migrate_ma(),
            self.policy_debug_allowed(),
            self.policy_single_socket()
        )?;
        hex_line(f, "family_id", &self.family_id)?;
        hex_line(f, "image_id", &self.image_id)?;
        writeln!(f, "  {:<20} {}", "vmpl", self.vmpl.get())?;
        writeln!(
            f,
            "  {:<20} {}",
            "signature_algo",
            self.signature_algo.get()
        )?;
        writeln!(f, "  {:<20} {}", "signing_key", self.signing_key())?;
        writeln!(
            f,
            "  {:<20} {:#x}",
            "platform_info",
            self.platform_info.get()
        )?;
        hex_line(f, "report_data", &self.report_data)?;
        hex_line(f, "measurement", &self.measurement)?;
        hex_line(f, "host_data", &self.host_data)?;
        hex_line(f, "id_key_digest", &self.id_key_digest)?;
        hex_line(f, "author_key_digest", &self.author_key_digest)?;
        hex_line(f, "report_id", &self.report_id)?;
        hex_line(f, "report_id_ma", &self.report_id_ma)?;
        writeln!(f, "  {:<20} {}", "current_tcb", self.current_tcb())?;
        writeln!(f, "  {:<20} {}", "reported_tcb", self.reported_tcb())?;
        writeln!(f, "  {:<20} {}", "committed_tcb", self.committed_tcb())?;
        writeln!(f, "  {:<20} {}", "launch_tcb", self.launch_tcb())?;
        if self.version.get() >= 3 {
            writeln!(
                f,
                "  {:<20} family {:#x} model {:#x} stepping {:#x}",
                "cpuid", self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step
            )?;
        }
        hex_line(f, "chip_id", &self.chip_id)?;
        let [b, mi, ma] = self.current_version;
        writeln!(f, "  {:<20} {ma}.{mi}.{b}", "current_version")?;
        let [b, mi, ma] = self.committed_version;
        writeln!(f, "  {:<20} {ma}.{mi}.{b}", "committed_version")?;
        if self.version.get() >= 5 {
            writeln!(
                f,
                "  {:<20} {:#x}",
                "launch_mit_vector",
                self.launch_mit_vector.get()
            )?;
            writeln!(
                f,
                "  {:<20} {:#x}",
                "current_mit_vector",
                self.current_mit_vector.get()
            )?;
        }
        hex_line(f, "signature_r", &self.signature_r[..48])?;
        hex_line(f, "signature_s", &self.signature_s[..48])
    }
}
