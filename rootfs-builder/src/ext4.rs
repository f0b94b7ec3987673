//! Fixes the clock-dependent fields of ext4 superblocks that e2fsprogs 1.47.0 writes
//! from `time()` whatever the environment says (`s_wtime` on every close,
//! `s_mkfs_time`, `s_lastcheck`), then restores each copy's checksum.
//!
//! Layout: <https://docs.kernel.org/filesystems/ext4/super.html>; the checksum is CRC32C
//! (Castagnoli) seeded with `!0`, without final inversion, over the bytes before
//! `s_checksum`.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::tools::ToolError;

/// Offset of the primary superblock.
const PRIMARY: u64 = 1024;
const SB_LEN: usize = 1024;
const MAGIC_OFF: usize = 0x38;
const MAGIC: u16 = 0xef53;
const CHECKSUM_OFF: usize = 0x3fc;
const RO_COMPAT_OFF: usize = 0x64;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
/// (low 32-bit field, high 8-bit field) of each timestamp to pin.
const TIMES: [(usize, usize); 3] = [
    (0x30, 0x274),  // s_wtime, s_wtime_hi
    (0x40, 0x277),  // s_lastcheck, s_lastcheck_hi
    (0x108, 0x276), // s_mkfs_time, s_mkfs_time_hi
];

/// CRC32C, reflected polynomial 0x82F63B78, no final XOR (as ext4 stores it).
pub fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn has_backup(group: u64, sparse: bool) -> bool {
    if !sparse || group <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut p = base;
        while p < group {
            p *= base;
        }
        p == group
    })
}

/// Pins the timestamps of every superblock copy in `image` to `epoch`.
pub fn normalise_superblocks(image: &Path, epoch: u32) -> Result<(), ToolError> {
    let io = |e| ToolError::Io(image.to_path_buf(), e);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io)?;
    let mut sb = [0u8; SB_LEN];
    f.seek(SeekFrom::Start(PRIMARY)).map_err(io)?;
    f.read_exact(&mut sb).map_err(io)?;
    if u16::from_le_bytes([sb[MAGIC_OFF], sb[MAGIC_OFF + 1]]) != MAGIC {
        return Err(ToolError::Invalid(format!("{}: not ext4", image.display())));
    }
    let blocks = u64::from(u32_at(&sb, 0x04));
    let first_data_block = u64::from(u32_at(&sb, 0x14));
    let block_size = 1024u64 << u32_at(&sb, 0x18);
    let per_group = u64::from(u32_at(&sb, 0x20)).max(1);
    let ro_compat = u32_at(&sb, RO_COMPAT_OFF);
    let sparse = ro_compat & RO_COMPAT_SPARSE_SUPER != 0;
    let csum = ro_compat & RO_COMPAT_METADATA_CSUM != 0;
    let groups = (blocks - first_data_block).div_ceil(per_group);
    for g in 0..groups {
        let off = if g == 0 {
            PRIMARY
        } else if has_backup(g, sparse) {
            (first_data_block + g * per_group) * block_size
        } else {
            continue;
        };
        f.seek(SeekFrom::Start(off)).map_err(io)?;
        f.read_exact(&mut sb).map_err(io)?;
        if u16::from_le_bytes([sb[MAGIC_OFF], sb[MAGIC_OFF + 1]]) != MAGIC {
            continue;
        }
        if csum && crc32c_raw(!0, &sb[..CHECKSUM_OFF]) != u32_at(&sb, CHECKSUM_OFF) {
            return Err(ToolError::Invalid(format!(
                "{}: superblock at {off} has a checksum this code does not reproduce",
                image.display()
            )));
        }
        for (lo, hi) in TIMES {
            sb[lo..lo + 4].copy_from_slice(&epoch.to_le_bytes());
            sb[hi] = 0;
        }
        if csum {
            let c = crc32c_raw(!0, &sb[..CHECKSUM_OFF]);
            sb[CHECKSUM_OFF..].copy_from_slice(&c.to_le_bytes());
        }
        f.seek(SeekFrom::Start(off)).map_err(io)?;
        f.write_all(&sb).map_err(io)?;
    }
    f.flush().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C is for the inverted form.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn backup_groups() {
        let with: Vec<u64> = (0..30).filter(|&g| has_backup(g, true)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27]);
    }
}
