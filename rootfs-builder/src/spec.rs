//! Format constants, in one place, each with the document that defines it.

/// `newc` (SVR4 "new ASCII") cpio: the format the kernel unpacks as an initramfs.
///
/// Spec: <https://www.kernel.org/doc/html/latest/driver-api/early-userspace/buffer-format.html>
/// and `man 5 cpio` (libarchive) section "New ASCII Format".
pub mod newc {
    /// Magic of a `newc` header without checksums.
    pub const MAGIC: &[u8; 6] = b"070701";
    /// Magic of the `crc` variant (same layout, a checksum in `check`); read, never written.
    pub const MAGIC_CRC: &[u8; 6] = b"070702";
    /// Header length: 6 bytes magic + 13 fields of 8 hex digits.
    pub const HEADER_LEN: usize = 6 + 13 * 8;
    /// Header+name and file data are each padded to this many bytes.
    pub const ALIGN: usize = 4;
    /// Name of the entry that ends an archive.
    pub const TRAILER: &str = "TRAILER!!!";
}

/// `st_mode` file type bits (`man 7 inode`).
pub mod mode {
    pub const S_IFMT: u32 = 0o170_000;
    pub const S_IFDIR: u32 = 0o040_000;
    pub const S_IFREG: u32 = 0o100_000;
    pub const S_IFLNK: u32 = 0o120_000;
    pub const S_IFCHR: u32 = 0o020_000;
    /// Permission bits (including setuid/setgid/sticky).
    pub const PERM_MASK: u32 = 0o7777;
}

/// dm-verity, as the kernel's `dm-mod.create=` and `veritysetup` use it.
///
/// Spec: <https://docs.kernel.org/admin-guide/device-mapper/verity.html> and
/// <https://docs.kernel.org/admin-guide/device-mapper/dm-init.html>.
pub mod verity {
    /// Data and hash block size.
    pub const BLOCK_SIZE: u64 = 4096;
    /// dm-verity on-disk format version 1 (the one `veritysetup` writes by default).
    pub const FORMAT_VERSION: u32 = 1;
    /// Hash algorithm of the tree.
    pub const HASH: &str = "sha256";
    /// Sector size used by device-mapper tables.
    pub const SECTOR: u64 = 512;
}

/// Trustee reference value provider service (RVPS) "sample" message.
///
/// Spec: <https://github.com/confidential-containers/trustee/blob/main/rvps/README.md>
pub mod rvps {
    pub const MESSAGE_VERSION: &str = "0.1.0";
    pub const MESSAGE_TYPE: &str = "sample";
}
