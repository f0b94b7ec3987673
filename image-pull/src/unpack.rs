//! Safe tar unpacking into a layer root, with overlayfs whiteouts.
//!
//! Every path is split into components; `..` and absolute paths are refused; parents
//! are walked one component at a time from the root's fd with `O_NOFOLLOW|O_DIRECTORY`
//! (the fd equivalent of `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`), so nothing is
//! written through a symlink. Relative symlinks whose target climbs above the root,
//! and hardlinks to anything outside the layer, are refused. Absolute symlink targets
//! are kept: they are resolved against the container's root at run time, and the
//! unpacker never follows a symlink.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use crate::error::{from_chain, Failure};
use crate::spec;

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Keep the tar's owners (needs CAP_CHOWN). On by default.
    pub same_owner: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { same_owner: true }
    }
}

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct DeferredDir {
    comps: Vec<Vec<u8>>,
    mode: u32,
    mtime: Timespec,
}

fn errno(e: Errno) -> io::Error {
    e.into()
}

fn corrupt(e: io::Error) -> Failure {
    Failure::Corrupt(e)
}

/// Splits a tar path into components, refusing absolute paths and `..`.
fn components(raw: &[u8], shown: &str) -> Result<Vec<Vec<u8>>, Failure> {
    if raw.first() == Some(&b'/') {
        return Err(Failure::unsafe_entry(shown, "absolute path"));
    }
    if raw.contains(&0) {
        return Err(Failure::unsafe_entry(shown, "NUL in path"));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Failure::unsafe_entry(shown, "`..` in path")),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn open_dir(dir: impl AsFd, name: &[u8]) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        OsStr::from_bytes(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// Walks `comps` from the root without following symlinks; creates missing
/// directories (0755, root-owned, as other unpackers do) when `create`.
fn walk(root: &OwnedFd, comps: &[Vec<u8>], create: bool, shown: &str) -> Result<OwnedFd, Failure> {
    let mut cur = root.try_clone().map_err(|e| Failure::io("dup", shown, e))?;
    for c in comps {
        let next = match open_dir(&cur, c) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc_enoent()) && create => {
                match rustix::fs::mkdirat(&cur, OsStr::from_bytes(c), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(Failure::io("mkdir", shown, errno(e))),
                }
                open_dir(&cur, c).map_err(|e| Failure::io("open", shown, e))?
            }
            Err(e)
                if e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                return Err(Failure::unsafe_entry(
                    shown,
                    "a parent is a symlink or not a directory",
                ))
            }
            Err(e) => return Err(Failure::io("open parent of", shown, e)),
        };
        cur = next;
    }
    Ok(cur)
}

fn libc_enoent() -> i32 {
    Errno::NOENT.raw_os_error()
}

/// Removes what an earlier entry of the same layer left at `name` (later entries win).
fn make_room(
    parent: &OwnedFd,
    name: &[u8],
    new_is_dir: bool,
    shown: &str,
) -> Result<bool, Failure> {
    match rustix::fs::statat(parent, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(Failure::io("stat", shown, errno(e))),
        Ok(st) => {
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if is_dir && new_is_dir {
                return Ok(true);
            }
            if is_dir {
                return Err(Failure::unsafe_entry(
                    shown,
                    "replaces a directory of the same layer",
                ));
            }
            rustix::fs::unlinkat(parent, OsStr::from_bytes(name), AtFlags::empty())
                .map_err(|e| Failure::io("unlink", shown, errno(e)))?;
            Ok(false)
        }
    }
}

/// Marks a directory opaque for overlayfs: the lower layers' contents are hidden.
fn set_opaque(dir: &OwnedFd, shown: &str) -> Result<(), Failure> {
    rustix::fs::fsetxattr(dir, spec::OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|e| {
        Failure::XattrUnsupported {
            path: shown.to_owned(),
            name: spec::OVERLAY_OPAQUE_XATTR.to_owned(),
            source: errno(e),
        }
    })
}

/// Is `name` an overlayfs whiteout (a 0:0 character device) this layer made?
fn is_whiteout(parent: &OwnedFd, name: &[u8]) -> bool {
    rustix::fs::statat(parent, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
    })
}

fn ts(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// A PAX time record (`mtime=1650000000.25`): seconds and nanoseconds, as Go's
/// archive/tar (umoci, containerd) reads it; digits past the ninth are dropped.
fn pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let negative = whole.starts_with('-');
    let mut sec: i64 = whole.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nsec += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    if negative && nsec > 0 {
        sec = sec.checked_sub(1)?;
        nsec = 1_000_000_000 - nsec;
    }
    Some(Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    })
}

fn ids(meta: &Meta, shown: &str) -> Result<(Uid, Gid), Failure> {
    let uid = u32::try_from(meta.uid)
        .ok()
        .filter(|u| *u != u32::MAX)
        .ok_or_else(|| Failure::unsafe_entry(shown, "uid out of range"))?;
    let gid = u32::try_from(meta.gid)
        .ok()
        .filter(|g| *g != u32::MAX)
        .ok_or_else(|| Failure::unsafe_entry(shown, "gid out of range"))?;
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

fn set_xattrs_fd(fd: &OwnedFd, meta: &Meta, shown: &str) -> Result<(), Failure> {
    for (name, value) in &meta.xattrs {
        rustix::fs::fsetxattr(fd, OsStr::from_bytes(name), value, XattrFlags::empty()).map_err(
            |e| Failure::XattrUnsupported {
                path: shown.to_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
                source: errno(e),
            },
        )?;
    }
    Ok(())
}

/// Metadata of a non-directory, non-regular node (symlink, device, fifo) by name.
fn set_meta_at(
    parent: &OwnedFd,
    name: &[u8],
    meta: &Meta,
    symlink: bool,
    opts: &UnpackOptions,
    shown: &str,
) -> Result<(), Failure> {
    let n = OsStr::from_bytes(name);
    if opts.same_owner {
        let (u, g) = ids(meta, shown)?;
        rustix::fs::chownat(parent, n, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Failure::io("chown", shown, errno(e)))?;
    }
    if !symlink {
        rustix::fs::chmodat(
            parent,
            n,
            Mode::from_raw_mode(meta.mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| Failure::io("chmod", shown, errno(e)))?;
    }
    if !meta.xattrs.is_empty() {
        // No fd for a symlink or a device without opening it: go through the parent's
        // /proc/self/fd link; lsetxattr does not follow the last component.
        let mut p = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
        p.extend_from_slice(name);
        for (xname, value) in &meta.xattrs {
            rustix::fs::lsetxattr(
                OsStr::from_bytes(&p),
                OsStr::from_bytes(xname),
                value,
                XattrFlags::empty(),
            )
            .map_err(|e| Failure::XattrUnsupported {
                path: shown.to_owned(),
                name: String::from_utf8_lossy(xname).into_owned(),
                source: errno(e),
            })?;
        }
    }
    rustix::fs::utimensat(parent, n, &ts(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Failure::io("utimensat", shown, errno(e)))?;
    Ok(())
}

/// Reads entries from `reader` (an uncompressed tar) into the directory `root`.
/// Returns the number of entries.
pub(crate) fn unpack(
    reader: &mut dyn Read,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<u64, Failure> {
    let shown_root = root.display().to_string();
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Failure::io("open", shown_root.clone(), errno(e)))?;
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<DeferredDir> = Vec::new();
    let mut count = 0u64;
    let entries = archive.entries().map_err(|e| from_chain(e, corrupt))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| from_chain(e, corrupt))?;
        count += 1;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            continue;
        }
        let comps = components(&raw_path, &shown)?;
        let header = entry.header();
        let mut meta = Meta {
            mode: header.mode().map_err(corrupt)?,
            uid: header.uid().map_err(corrupt)?,
            gid: header.gid().map_err(corrupt)?,
            mtime: Timespec {
                tv_sec: i64::try_from(header.mtime().map_err(corrupt)?).unwrap_or(i64::MAX),
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        let dev = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        if let Some(pax) = entry.pax_extensions().map_err(corrupt)? {
            for ext in pax {
                let ext = ext.map_err(corrupt)?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let num = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                };
                if let Some(name) = key.strip_prefix(spec::PAX_XATTR_PREFIX) {
                    meta.xattrs.push((name.as_bytes().to_vec(), value.to_vec()));
                } else if key == "uid" {
                    meta.uid = num()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(meta.uid);
                } else if key == "gid" {
                    meta.gid = num()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(meta.gid);
                } else if key == "mtime" {
                    meta.mtime = pax_time(value).unwrap_or(meta.mtime);
                }
            }
        }
        let Some((name, parents)) = comps.split_last() else {
            // The root itself ("./").
            if kind.is_dir() {
                if opts.same_owner {
                    let (u, g) = ids(&meta, &shown)?;
                    rustix::fs::fchown(&root_fd, Some(u), Some(g))
                        .map_err(|e| Failure::io("chown", shown.clone(), errno(e)))?;
                }
                set_xattrs_fd(&root_fd, &meta, &shown)?;
                dirs.push(DeferredDir {
                    comps: Vec::new(),
                    mode: meta.mode,
                    mtime: meta.mtime,
                });
                continue;
            }
            return Err(Failure::unsafe_entry(
                &shown,
                "non-directory at the layer root",
            ));
        };
        let parent = walk(&root_fd, parents, true, &shown)?;

        // Whiteouts (image-spec layer.md): overlayfs's own representation.
        if name.as_slice() == spec::WHITEOUT_OPAQUE.as_bytes() {
            set_opaque(&parent, &shown)?;
            continue;
        }
        if let Some(target) = name.strip_prefix(spec::WHITEOUT_PREFIX.as_bytes()) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(Failure::unsafe_entry(&shown, "bad whiteout name"));
            }
            // A whiteout hides what lower layers have there, never what this layer put
            // there (image-spec: "files that are present in the same layer as a whiteout
            // file can only be hidden by whiteout files in subsequent layers"). The layer
            // root starts empty, so whatever is there came from this layer.
            let t = OsStr::from_bytes(target);
            match rustix::fs::statat(&parent, t, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {
                    rustix::fs::mknodat(
                        &parent,
                        t,
                        FileType::CharacterDevice,
                        Mode::empty(),
                        rustix::fs::makedev(0, 0),
                    )
                    .map_err(|e| Failure::io("mknod whiteout", shown.clone(), errno(e)))?;
                }
                Err(e) => return Err(Failure::io("stat", shown, errno(e))),
                // A directory of this layer stays, without the lower layers' contents.
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    let dir = open_dir(&parent, target)
                        .map_err(|e| Failure::io("open", shown.clone(), e))?;
                    set_opaque(&dir, &shown)?;
                }
                // Anything else of this layer hides the lower layers' entry already.
                Ok(_) => {}
            }
            continue;
        }

        let n = OsStr::from_bytes(name);
        match kind {
            tar::EntryType::Directory => {
                // A directory after its own whiteout in this layer replaces the lower
                // layers' one: opaque.
                let replaces = is_whiteout(&parent, name);
                if !make_room(&parent, name, true, &shown)? {
                    rustix::fs::mkdirat(&parent, n, Mode::from_raw_mode(0o700))
                        .map_err(|e| Failure::io("mkdir", shown.clone(), errno(e)))?;
                }
                let dir =
                    open_dir(&parent, name).map_err(|e| Failure::io("open", shown.clone(), e))?;
                if replaces {
                    set_opaque(&dir, &shown)?;
                }
                if opts.same_owner {
                    let (u, g) = ids(&meta, &shown)?;
                    rustix::fs::fchown(&dir, Some(u), Some(g))
                        .map_err(|e| Failure::io("chown", shown.clone(), errno(e)))?;
                }
                set_xattrs_fd(&dir, &meta, &shown)?;
                dirs.push(DeferredDir {
                    comps: comps.clone(),
                    mode: meta.mode,
                    mtime: meta.mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                make_room(&parent, name, false, &shown)?;
                let fd = rustix::fs::openat(
                    &parent,
                    n,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| Failure::io("create", shown.clone(), errno(e)))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| from_chain(e, corrupt))?;
                let fd = OwnedFd::from(file);
                if opts.same_owner {
                    let (u, g) = ids(&meta, &shown)?;
                    rustix::fs::fchown(&fd, Some(u), Some(g))
                        .map_err(|e| Failure::io("chown", shown.clone(), errno(e)))?;
                }
                // After chown, which clears set-id bits.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode & 0o7777))
                    .map_err(|e| Failure::io("chmod", shown.clone(), errno(e)))?;
                set_xattrs_fd(&fd, &meta, &shown)?;
                rustix::fs::futimens(&fd, &ts(meta.mtime))
                    .map_err(|e| Failure::io("futimens", shown.clone(), errno(e)))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Failure::unsafe_entry(&shown, "symlink without target"))?
                    .into_owned();
                if target.is_empty() || target.contains(&0) {
                    return Err(Failure::unsafe_entry(&shown, "bad symlink target"));
                }
                if target.first() != Some(&b'/') {
                    let mut depth = parents.len() as i64;
                    for c in target.split(|b| *b == b'/') {
                        match c {
                            b"" | b"." => {}
                            b".." => depth -= 1,
                            _ => depth += 1,
                        }
                        if depth < 0 {
                            return Err(Failure::unsafe_entry(
                                &shown,
                                "symlink points out of the layer root",
                            ));
                        }
                    }
                }
                make_room(&parent, name, false, &shown)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, n)
                    .map_err(|e| Failure::io("symlink", shown.clone(), errno(e)))?;
                set_meta_at(&parent, name, &meta, true, opts, &shown)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Failure::unsafe_entry(&shown, "hardlink without target"))?
                    .into_owned();
                let tshown = String::from_utf8_lossy(&target).into_owned();
                let tcomps = components(&target, &tshown).map_err(|_| {
                    Failure::unsafe_entry(&shown, "hardlink points out of the layer root")
                })?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(Failure::unsafe_entry(&shown, "hardlink to the layer root"));
                };
                let tparent = walk(&root_fd, tparents, false, &shown).map_err(|_| {
                    Failure::unsafe_entry(&shown, "hardlink target is not in the layer")
                })?;
                if tcomps == comps {
                    continue;
                }
                make_room(&parent, name, false, &shown)?;
                rustix::fs::linkat(
                    &tparent,
                    OsStr::from_bytes(tname),
                    &parent,
                    n,
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::NOENT => {
                        Failure::unsafe_entry(&shown, "hardlink target is not in the layer")
                    }
                    e => Failure::io("link", shown.clone(), errno(e)),
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                make_room(&parent, name, false, &shown)?;
                rustix::fs::mknodat(
                    &parent,
                    n,
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(dev.0, dev.1),
                )
                .map_err(|e| Failure::io("mknod", shown.clone(), errno(e)))?;
                set_meta_at(&parent, name, &meta, false, opts, &shown)?;
            }
            other => {
                return Err(Failure::unsafe_entry(
                    &shown,
                    format!("unsupported entry type {other:?}"),
                ));
            }
        }
    }
    // Directory modes and mtimes last: children change a directory's mtime, and a
    // read-only directory would refuse them. The last entry for a path wins.
    let mut done = HashSet::new();
    let mut root_done = false;
    for d in dirs.iter().rev() {
        if !done.insert(d.comps.clone()) {
            continue;
        }
        let shown = String::from_utf8_lossy(&d.comps.join(&b'/')).into_owned();
        let fd = walk(&root_fd, &d.comps, false, &shown)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode & 0o7777))
            .map_err(|e| Failure::io("chmod", shown.clone(), errno(e)))?;
        rustix::fs::futimens(&fd, &ts(d.mtime))
            .map_err(|e| Failure::io("futimens", shown.clone(), errno(e)))?;
        root_done |= d.comps.is_empty();
    }
    if !root_done {
        rustix::fs::fchmod(&root_fd, Mode::from_raw_mode(0o755))
            .map_err(|e| Failure::io("chmod", shown_root, errno(e)))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::pax_time;

    #[test]
    fn pax_times_keep_nanoseconds() {
        let t = |s: &str| pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1650000000"), Some((1_650_000_000, 0)));
        assert_eq!(t("1650000000.25"), Some((1_650_000_000, 250_000_000)));
        assert_eq!(t("1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-0.25"), Some((-1, 750_000_000)));
        assert_eq!(t("12x"), None);
        assert_eq!(t("1.2e3"), None);
    }
}
