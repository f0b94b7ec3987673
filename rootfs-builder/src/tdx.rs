//! Intel TDX runtime measurement registers (RTMR 1 and 2) of a QEMU direct-boot guest
//! with TDVF (OVMF built for TDX), where they can be computed from the boot artefacts.
//!
//! What ends up in each register (TDX module spec, "Measurement registers"; TDVF design
//! guide, "TD Measurement": <https://cdrdv2.intel.com/v1/dl/getContent/733585>; and
//! edk2's `OvmfPkg/Library/X86QemuLoadImageLib`):
//! - RTMR1 (PCR 4): the Authenticode SHA-384 of the kernel PE image as QEMU patched it
//!   (setup header fields for the initrd and command line), then the events OVMF logs
//!   around it: "Calling EFI Application from Boot Option", the separator, "Exit Boot
//!   Services Invocation" and "Exit Boot Services Returned with Success".
//! - RTMR2 (PCR 8/9): the kernel's EFI stub measures its `LoadOptions` (the command line
//!   OVMF made: UTF-16LE, NUL-terminated, with `initrd=initrd ` in front when there is an
//!   initrd, as `X86QemuLoadImageLib` does in current edk2; older builds appended
//!   ` initrd=initrd` instead, see [`InitrdArg`]) and then the initrd bytes.
//!
//! RTMR0 and MRTD depend on the firmware build, ACPI tables and VM shape and are not
//! computed here. Each register is `SHA384(previous || event digest)` from zero.
//! Authenticode: <https://learn.microsoft.com/en-us/windows/win32/debug/pe-format> and
//! "Windows Authenticode Portable Executable Signature Format".

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

/// QEMU's reserve for ACPI tables below 4 GiB (`acpi_data_size` for q35 in
/// `hw/i386/x86.c`), which bounds where it places the initrd.
pub const QEMU_ACPI_DATA_SIZE: u32 = 0x28000;

/// Digests and registers, all hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxValues {
    pub rtmr_1: String,
    pub rtmr_2: String,
    /// Authenticode SHA-384 of the patched kernel (RTMR1's first event).
    pub kernel_authenticode_sha384: String,
    /// SHA-384 of the UTF-16LE command line OVMF passes (RTMR2's first event).
    pub cmdline_sha384: String,
    /// The command line as measured.
    pub measured_cmdline: String,
    pub memory_mib: u64,
    pub initrd_arg: InitrdArg,
}

#[derive(Debug, thiserror::Error)]
pub enum TdxError {
    #[error("kernel image: {0}")]
    Kernel(&'static str),
    #[error("not a PE image: {0}")]
    Pe(&'static str),
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

/// Extends a register from zero with each event digest in turn.
pub fn replay(events: &[[u8; 48]]) -> [u8; 48] {
    let mut mr = [0u8; 48];
    for e in events {
        let mut h = Sha384::new();
        h.update(mr);
        h.update(e);
        mr = h.finalize().into();
    }
    mr
}

fn le_u16(d: &[u8], off: usize) -> Result<u16, TdxError> {
    d.get(off..off + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(TdxError::Pe("truncated"))
}

fn le_u32(d: &[u8], off: usize) -> Result<u32, TdxError> {
    d.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(TdxError::Pe("truncated"))
}

fn put_u32(d: &mut [u8], off: usize, v: u32) {
    if let Some(b) = d.get_mut(off..off + 4) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// Applies the setup-header edits QEMU's `x86_load_linux` makes before handing the
/// kernel to the firmware (Linux boot protocol: `Documentation/arch/x86/boot.rst`).
pub fn qemu_patch_kernel(
    kernel: &[u8],
    initrd_size: u32,
    mem_size: u64,
) -> Result<Vec<u8>, TdxError> {
    if kernel.len() < 0x1000 {
        return Err(TdxError::Kernel("shorter than 4 KiB"));
    }
    let mut k = kernel.to_vec();
    let protocol = le_u16(&k, 0x206)?;
    let loadflags = k[0x211];
    let (real_addr, cmdline_addr) = if protocol < 0x200 || loadflags & 0x01 == 0 {
        (0x90000u32, 0x9a000u32)
    } else {
        (0x10000u32, 0x20000u32)
    };
    if protocol >= 0x200 {
        k[0x210] = 0xb0; // type_of_loader: QEMU
    }
    if protocol >= 0x201 {
        k[0x211] |= 0x80; // CAN_USE_HEAP
        put_u32(&mut k, 0x224, cmdline_addr - real_addr - 0x200); // heap_end_ptr
    }
    if protocol >= 0x202 {
        put_u32(&mut k, 0x228, cmdline_addr);
    } else {
        return Err(TdxError::Kernel("boot protocol older than 2.02"));
    }
    if initrd_size > 0 {
        let mut initrd_max = if protocol >= 0x20c && le_u16(&k, 0x236)? & 0x40 != 0 {
            u32::MAX // XLF_CAN_BE_LOADED_ABOVE_4G
        } else if protocol >= 0x203 {
            match le_u32(&k, 0x22c)? {
                0 => 0x37ff_ffff,
                max => max,
            }
        } else {
            0x37ff_ffff
        };
        let lowmem: u64 = if mem_size < 0xb000_0000 {
            0xb000_0000
        } else {
            0x8000_0000
        };
        let below_4g = u32::try_from(mem_size.min(lowmem)).unwrap_or(u32::MAX);
        let limit = below_4g.saturating_sub(QEMU_ACPI_DATA_SIZE);
        if initrd_max >= limit {
            initrd_max = limit.saturating_sub(1);
        }
        if initrd_size >= initrd_max {
            return Err(TdxError::Kernel("initrd too large for guest memory"));
        }
        put_u32(&mut k, 0x218, (initrd_max - initrd_size) & !4095); // ramdisk_image
        put_u32(&mut k, 0x21c, initrd_size); // ramdisk_size
    }
    Ok(k)
}

/// Authenticode SHA-384 of a PE/COFF image: the file without its checksum field, the
/// certificate-table directory entry and the certificate table itself, sections in
/// file order, zero-padded to 8 bytes as EDK2's `HashPeImage` does.
pub fn authenticode_sha384(d: &[u8]) -> Result<[u8; 48], TdxError> {
    let pe = le_u32(d, 0x3c)? as usize;
    if d.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(TdxError::Pe("no PE signature"));
    }
    let coff = pe + 4;
    let nsections = le_u16(d, coff + 2)? as usize;
    let opt_size = le_u16(d, coff + 16)? as usize;
    let opt = coff + 20;
    let dir_base = match le_u16(d, opt)? {
        0x10b => opt + 96,  // PE32
        0x20b => opt + 112, // PE32+
        _ => return Err(TdxError::Pe("unknown optional header magic")),
    };
    let checksum = opt + 64;
    let cert_dir = dir_base + 4 * 8; // IMAGE_DIRECTORY_ENTRY_SECURITY
    let size_of_headers = le_u32(d, opt + 60)? as usize;
    if size_of_headers > d.len() || cert_dir + 8 > size_of_headers {
        return Err(TdxError::Pe("headers out of range"));
    }
    let mut h = Sha384::new();
    h.update(&d[..checksum]);
    h.update(&d[checksum + 4..cert_dir]);
    h.update(&d[cert_dir + 8..size_of_headers]);
    let mut hashed = size_of_headers;
    let table = opt + opt_size;
    let mut sections = Vec::with_capacity(nsections);
    for i in 0..nsections {
        let s = table + i * 40;
        let raw_size = le_u32(d, s + 16)? as usize;
        let raw_ptr = le_u32(d, s + 20)? as usize;
        if raw_size > 0 {
            sections.push((raw_ptr, raw_size));
        }
    }
    sections.sort_unstable();
    for (ptr, size) in sections {
        let end = (ptr + size).min(d.len());
        if ptr < end {
            h.update(&d[ptr..end]);
        }
        hashed += size;
    }
    let cert_size = le_u32(d, cert_dir + 4)? as usize;
    if d.len() > hashed {
        let trailing = d.len() - hashed;
        let extra = trailing.saturating_sub(cert_size);
        if extra > 0 {
            h.update(&d[hashed..hashed + extra]);
        }
    }
    let rem = d.len() % 8;
    if rem != 0 {
        h.update(&[0u8; 8][..8 - rem]);
    }
    Ok(h.finalize().into())
}

/// Where the firmware puts `initrd=initrd` in the kernel's `LoadOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InitrdArg {
    /// `initrd=initrd <cmdline>` (edk2 `X86QemuLoadImageLib` today).
    #[default]
    Prefix,
    /// `<cmdline> initrd=initrd` (older edk2).
    Suffix,
    /// The command line alone.
    None,
}

/// The command line as OVMF hands it to the kernel.
pub fn measured_cmdline(cmdline: &str, has_initrd: bool, arg: InitrdArg) -> String {
    match (has_initrd, arg) {
        (true, InitrdArg::Prefix) => format!("initrd=initrd {cmdline}"),
        (true, InitrdArg::Suffix) => format!("{cmdline} initrd=initrd"),
        _ => cmdline.to_string(),
    }
}

/// RTMR1/RTMR2 for `kernel` booted with `initrd` and `cmdline` in `memory_mib` of RAM.
pub fn rtmrs(
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    memory_mib: u64,
    initrd_arg: InitrdArg,
) -> Result<TdxValues, TdxError> {
    let initrd_size = initrd.map_or(0, <[u8]>::len);
    let initrd_size =
        u32::try_from(initrd_size).map_err(|_| TdxError::Kernel("initrd over 4 GiB"))?;
    let patched = qemu_patch_kernel(kernel, initrd_size, memory_mib << 20)?;
    let kernel_hash = authenticode_sha384(&patched)?;
    let rtmr1 = replay(&[
        kernel_hash,
        sha384(b"Calling EFI Application from Boot Option"),
        sha384(&[0, 0, 0, 0]),
        sha384(b"Exit Boot Services Invocation"),
        sha384(b"Exit Boot Services Returned with Success"),
    ]);
    let measured = measured_cmdline(cmdline, initrd.is_some(), initrd_arg);
    let mut utf16: Vec<u8> = measured.encode_utf16().flat_map(u16::to_le_bytes).collect();
    utf16.extend_from_slice(&[0, 0]);
    let cmdline_hash = sha384(&utf16);
    let mut events = vec![cmdline_hash];
    if let Some(i) = initrd {
        events.push(sha384(i));
    }
    Ok(TdxValues {
        rtmr_1: hex::encode(rtmr1),
        rtmr_2: hex::encode(replay(&events)),
        kernel_authenticode_sha384: hex::encode(kernel_hash),
        cmdline_sha384: hex::encode(cmdline_hash),
        measured_cmdline: measured,
        memory_mib,
        initrd_arg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_matches_definition() {
        let e = sha384(b"x");
        let mut h = Sha384::new();
        h.update([0u8; 48]);
        h.update(e);
        let want: [u8; 48] = h.finalize().into();
        assert_eq!(replay(&[e]), want);
        assert_eq!(replay(&[]), [0u8; 48]);
    }

    /// A minimal PE32+ image: the checksum and certificate entry must not change the
    /// hash; section bytes must.
    #[test]
    fn authenticode_ignores_checksum_and_cert_entry() {
        let mut d = vec![0u8; 0x400];
        d[0x3c] = 0x80;
        d[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        d[coff + 2] = 1; // one section
        d[coff + 16] = 0xf0; // optional header size
        let opt = coff + 20;
        d[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        d[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
        let sec = opt + 0xf0;
        d[sec + 16..sec + 20].copy_from_slice(&0x200u32.to_le_bytes());
        d[sec + 20..sec + 24].copy_from_slice(&0x200u32.to_le_bytes());
        let base = authenticode_sha384(&d).unwrap();
        let mut c = d.clone();
        c[opt + 64] = 0xff; // checksum
        c[opt + 112 + 32] = 0xff; // certificate directory
        assert_eq!(authenticode_sha384(&c).unwrap(), base);
        c[0x300] ^= 1; // section data
        assert_ne!(authenticode_sha384(&c).unwrap(), base);
        assert!(authenticode_sha384(&d[..0x40]).is_err());
    }

    #[test]
    fn cmdline_gets_initrd_suffix() {
        assert_eq!(
            measured_cmdline("a", true, InitrdArg::Prefix),
            "initrd=initrd a"
        );
        assert_eq!(
            measured_cmdline("a", true, InitrdArg::Suffix),
            "a initrd=initrd"
        );
        assert_eq!(measured_cmdline("a", false, InitrdArg::Prefix), "a");
    }
}
