//! Deterministic compression of the initrd: gzip (no name, mtime 0) or zstd (single
//! thread, fixed level). Both are formats the kernel unpacks (`CONFIG_RD_GZIP`,
//! `CONFIG_RD_ZSTD`).

use std::io::{self, Read, Write};

use serde::Serialize;

/// Output compression of an initrd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    /// Plain cpio, for debugging.
    None,
}

impl Compression {
    /// The level used when none is given: best for gzip, 19 for zstd (the largest that
    /// keeps the window small enough for the kernel's streaming decompressor).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 9,
            Compression::Zstd => 19,
            Compression::None => 0,
        }
    }

    pub fn compress(self, data: &[u8], level: Option<i32>) -> io::Result<Vec<u8>> {
        let level = level.unwrap_or(self.default_level());
        match self {
            Compression::Gzip => {
                let level = u32::try_from(level.clamp(1, 9)).unwrap_or(9);
                // GzBuilder writes mtime 0 and no file name unless told otherwise.
                let mut enc =
                    flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(level));
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::Encoder::new(Vec::new(), level)?;
                enc.include_checksum(true)?;
                enc.include_contentsize(true)?;
                enc.set_pledged_src_size(Some(data.len() as u64))?;
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::None => Ok(data.to_vec()),
        }
    }
}

/// Decompresses an initrd by sniffing its magic (gzip, zstd or plain cpio).
pub fn decompress_any(data: &[u8]) -> io::Result<Vec<u8>> {
    const GZIP: &[u8] = &[0x1f, 0x8b];
    const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    let mut out = Vec::new();
    if data.starts_with(GZIP) {
        flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    } else if data.starts_with(ZSTD) {
        out = zstd::stream::decode_all(data)?;
    } else {
        out = data.to_vec();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_deterministic() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let a = c.compress(&data, Some(3)).unwrap();
            let b = c.compress(&data, Some(3)).unwrap();
            assert_eq!(a, b);
            assert_eq!(decompress_any(&a).unwrap(), data);
        }
    }
}
