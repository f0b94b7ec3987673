//! A `newc` cpio writer and reader (see [`crate::spec::newc`] for the format).
//!
//! The writer is deliberately minimal: it writes exactly the header fields it is given, so
//! the caller decides every byte (inode numbers, owners, mtimes) and the output is
//! deterministic. The reader parses what the writer (or GNU cpio) produces, for tests and
//! `verify`.

use std::io::{self, Write};

use crate::spec::{mode, newc};

/// One archive member as stored in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, without a leading `/`.
    pub name: String,
    pub ino: u32,
    /// Full `st_mode`: file type bits and permissions.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// File contents, or the target of a symlink.
    pub data: Vec<u8>,
}

impl Entry {
    /// The file type bits of `mode`.
    pub fn file_type(&self) -> u32 {
        self.mode & mode::S_IFMT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio I/O: {0}")]
    Io(#[from] io::Error),
    #[error("cpio entry {name:?}: {what} does not fit the 32-bit newc field")]
    TooLarge { name: String, what: &'static str },
    #[error("cpio entry name {0:?} is empty, absolute or contains NUL")]
    BadName(String),
    #[error("cpio: bad magic at offset {0}")]
    BadMagic(usize),
    #[error("cpio: truncated archive at offset {0}")]
    Truncated(usize),
    #[error("cpio: field {field} at offset {offset} is not hex")]
    BadField { field: &'static str, offset: usize },
    #[error("cpio: no trailer")]
    NoTrailer,
}

/// Writes `newc` members in the order given and the trailer at [`NewcWriter::finish`].
pub struct NewcWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    /// Appends one member.
    pub fn append(&mut self, e: &Entry) -> Result<(), CpioError> {
        if e.name.is_empty() || e.name.starts_with('/') || e.name.contains('\0') {
            return Err(CpioError::BadName(e.name.clone()));
        }
        self.write_member(e)
    }

    fn write_member(&mut self, e: &Entry) -> Result<(), CpioError> {
        let too_large = |what| CpioError::TooLarge {
            name: e.name.clone(),
            what,
        };
        let filesize = u32::try_from(e.data.len()).map_err(|_| too_large("file size"))?;
        let namesize = u32::try_from(e.name.len() + 1).map_err(|_| too_large("name size"))?;
        let fields: [u32; 13] = [
            e.ino,
            e.mode,
            e.uid,
            e.gid,
            e.nlink,
            e.mtime,
            filesize,
            0, // devmajor: of the filesystem holding the file; meaningless here
            0, // devminor
            e.rdev_major,
            e.rdev_minor,
            namesize,
            0, // check: always 0 for 070701
        ];
        let mut header = Vec::with_capacity(newc::HEADER_LEN + e.name.len() + 4);
        header.extend_from_slice(newc::MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        header.extend_from_slice(e.name.as_bytes());
        header.push(0);
        pad_vec(&mut header);
        self.out.write_all(&header)?;
        self.out.write_all(&e.data)?;
        let pad = padding(e.data.len());
        self.out.write_all(&[0u8; newc::ALIGN][..pad])?;
        self.written += (header.len() + e.data.len() + pad) as u64;
        Ok(())
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        let trailer = Entry {
            name: newc::TRAILER.to_string(),
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            rdev_major: 0,
            rdev_minor: 0,
            data: Vec::new(),
        };
        self.write_member(&trailer)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

fn padding(len: usize) -> usize {
    (newc::ALIGN - len % newc::ALIGN) % newc::ALIGN
}

fn pad_vec(v: &mut Vec<u8>) {
    let pad = padding(v.len());
    v.extend(std::iter::repeat_n(0u8, pad));
}

/// Parses a whole `newc` archive (uncompressed) up to its trailer.
///
/// Members after the trailer (concatenated archives, as the kernel accepts) are ignored.
pub fn read_archive(buf: &[u8]) -> Result<Vec<Entry>, CpioError> {
    const NAMES: [&str; 13] = [
        "ino",
        "mode",
        "uid",
        "gid",
        "nlink",
        "mtime",
        "filesize",
        "devmajor",
        "devminor",
        "rdevmajor",
        "rdevminor",
        "namesize",
        "check",
    ];
    let mut entries = Vec::new();
    let mut off = 0usize;
    loop {
        let header = buf
            .get(off..off + newc::HEADER_LEN)
            .ok_or(CpioError::Truncated(off))?;
        let magic = &header[..6];
        if magic != newc::MAGIC && magic != newc::MAGIC_CRC {
            return Err(CpioError::BadMagic(off));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let start = 6 + i * 8;
            let text = std::str::from_utf8(&header[start..start + 8]).ok();
            *v = text
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .ok_or(CpioError::BadField {
                    field: NAMES[i],
                    offset: off + start,
                })?;
        }
        let [ino, mode, uid, gid, nlink, mtime, filesize, _, _, rdev_major, rdev_minor, namesize, _] =
            f;
        let name_start = off + newc::HEADER_LEN;
        let name_end = name_start + namesize as usize;
        let name_bytes = buf
            .get(name_start..name_end)
            .ok_or(CpioError::Truncated(name_start))?;
        let name = String::from_utf8_lossy(name_bytes.strip_suffix(&[0]).unwrap_or(name_bytes))
            .into_owned();
        let data_start = name_end + padding(name_end);
        let data_end = data_start + filesize as usize;
        let data = buf
            .get(data_start..data_end)
            .ok_or(CpioError::Truncated(data_start))?
            .to_vec();
        off = data_end + padding(data_end);
        if name == newc::TRAILER {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev_major,
            rdev_minor,
            data,
        });
        if off >= buf.len() {
            return Err(CpioError::NoTrailer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, data: &[u8]) -> Entry {
        Entry {
            name: name.into(),
            ino: 1,
            mode: mode::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 7,
            rdev_major: 0,
            rdev_minor: 0,
            data: data.to_vec(),
        }
    }

    #[test]
    fn roundtrip_and_alignment() {
        let mut w = NewcWriter::new(Vec::new());
        let a = file("a", b"hello");
        let b = file("dir/b", b"");
        w.append(&a).unwrap();
        w.append(&b).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[..6], b"070701");
        // header(110) + "a\0"(2) = 112, aligned; data 5 -> 8
        assert_eq!(&out[112..117], b"hello");
        let back = read_archive(&out).unwrap();
        assert_eq!(back, vec![a, b]);
    }

    #[test]
    fn rejects_absolute_names_and_garbage() {
        let mut w = NewcWriter::new(Vec::new());
        assert!(w.append(&file("/abs", b"")).is_err());
        assert!(matches!(
            read_archive(b"not a cpio archive at all, long enough to hold a header maybe.............................................................."),
            Err(CpioError::BadMagic(0))
        ));
        assert!(matches!(
            read_archive(b"070701"),
            Err(CpioError::Truncated(0))
        ));
    }
}
