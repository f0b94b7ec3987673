//! CopyFile: the runtime copies files, directories and symlinks into the guest, in
//! chunks, only below `/run/kata-containers/shared/containers/`.
//!
//! The host names the path, so every step acts through directory descriptors that
//! never leave that root: each parent is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` from the one before (a symlink or a non-directory on the way is
//! refused, and nothing is re-resolved by path between the check and the act), and
//! the mode and owner are set on the descriptor (`fchmod`, `fchown`), never through a
//! path. Symlinks may point only inside the root (relative, no climbing above it), so
//! no later user of the directory can be steered out of it. Device nodes, FIFOs and
//! sockets are refused; a file is capped at [`MAX_FILE_SIZE`]; setuid and setgid bits
//! are dropped from copied files.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use cocoon_protocols::agent::CopyFileRequest;

use crate::error::{AgentError, Result};

const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFLNK: u32 = libc::S_IFLNK;
const S_IFREG: u32 = libc::S_IFREG;

/// Largest file CopyFile writes (the runtime copies hosts files, secrets and config
/// maps — kilobytes; Kubernetes caps a secret at 1 MiB). The guest's `/run` is memory.
pub const MAX_FILE_SIZE: i64 = 64 << 20;

/// Suffix of the file a chunked copy is assembled in.
const PARTIAL: &str = ".cocoon-partial";

fn refuse(reason: String) -> AgentError {
    AgentError::invalid("path", reason)
}

/// The directory `name` in `dir`, created with `mode` if missing; a symlink or a
/// non-directory there is refused.
fn open_or_make_dir(dir: &OwnedFd, name: &str, mode: u32, shown: &str) -> Result<OwnedFd> {
    crate::safe_path::open_dir(dir, name, Some(mode), "path", Path::new(shown))
}

/// What is at `name` in `dir`, without following a symlink; `None` if nothing.
fn kind_at(dir: &OwnedFd, name: &str) -> Result<Option<SFlag>> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode & S_IFMT))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(AgentError::internal("stat", e)),
    }
}

/// The checked request path: below `root`, absolute, without `.`/`..`; returns the
/// components below the root (at least one).
fn components<'a>(root: &Path, path: &'a str) -> Result<Vec<&'a str>> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(refuse(format!("{path:?} is not absolute")));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(refuse(format!("{path:?} contains \"..\" or \".\"")));
    }
    let rel = p
        .strip_prefix(root)
        .map_err(|_| refuse(format!("{path:?} is not below {}", root.display())))?;
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return Err(refuse(format!("{path:?} is the shared directory itself")));
    }
    if parts.len() != rel.components().count() {
        return Err(refuse(format!("{path:?} is not valid UTF-8")));
    }
    Ok(parts)
}

/// A symlink target is allowed when it stays inside the root from a link `depth`
/// directories below it: relative, its `..` only leading and no more of them than
/// `depth`. (Every other symlink in the root obeys the same rule, so a chain of them
/// cannot climb out either.)
fn check_link_target(target: &str, depth: usize) -> Result<()> {
    let bad = |why: &str| AgentError::invalid("data", format!("symlink target {target:?} {why}"));
    if target.is_empty() || target.contains('\0') {
        return Err(bad("is empty or has a NUL"));
    }
    if target.starts_with('/') {
        return Err(bad(
            "is absolute (a link may point only inside the shared directory)",
        ));
    }
    let mut ups = 0;
    let mut descended = false;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir if descended => {
                return Err(bad(
                    "has \"..\" after a name (only leading \"..\" are allowed)",
                ))
            }
            Component::ParentDir => ups += 1,
            Component::CurDir => {}
            _ => descended = true,
        }
    }
    if ups > depth {
        return Err(bad("leaves the shared directory"));
    }
    Ok(())
}

fn owner(uid: i32, gid: i32) -> (Option<Uid>, Option<Gid>) {
    (
        (uid >= 0).then(|| Uid::from_raw(uid as u32)),
        (gid >= 0).then(|| Gid::from_raw(gid as u32)),
    )
}

/// Applies one CopyFile request below `root` (an agent path; created if missing).
pub fn copy_file(root: &Path, req: &CopyFileRequest) -> Result<()> {
    let parts = components(root, &req.path)?;
    std::fs::create_dir_all(root)
        .map_err(|e| AgentError::internal("creating the shared directory", e))?;
    let root_fd: OwnedFd = File::open(root)
        .map_err(|e| AgentError::internal("opening the shared directory", e))?
        .into();
    let dir_mode = if req.dir_mode == 0 {
        0o755
    } else {
        req.dir_mode & 0o7777
    };
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| refuse(format!("{:?} is the shared directory itself", req.path)))?;
    let mut dir = root_fd;
    let mut shown = root.to_path_buf();
    for part in parents {
        shown.push(part);
        dir = open_or_make_dir(&dir, part, dir_mode, &shown.display().to_string())?;
    }
    let existing = kind_at(&dir, name)?;
    let (uid, gid) = owner(req.uid, req.gid);
    match req.file_mode & S_IFMT {
        S_IFDIR => {
            if existing.is_some_and(|k| k != SFlag::S_IFDIR) {
                return Err(refuse(format!(
                    "{:?} exists and is not a directory",
                    req.path
                )));
            }
            let fd = open_or_make_dir(&dir, name, req.file_mode & 0o7777, &req.path)?;
            fchmod(
                fd.as_raw_fd(),
                Mode::from_bits_truncate(req.file_mode & 0o7777),
            )
            .map_err(|e| AgentError::internal("chmod", e))?;
            fchown(fd.as_raw_fd(), uid, gid).map_err(|e| AgentError::internal("chown", e))
        }
        S_IFLNK => {
            let target = std::str::from_utf8(&req.data)
                .map_err(|_| AgentError::invalid("data", "symlink target is not UTF-8"))?;
            check_link_target(target, parents.len())?;
            match existing {
                Some(SFlag::S_IFDIR) => {
                    return Err(refuse(format!("{:?} is a directory", req.path)))
                }
                Some(_) => unlinkat(Some(dir.as_raw_fd()), *name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| AgentError::internal("replacing a symlink", e))?,
                None => {}
            }
            symlinkat(target, Some(dir.as_raw_fd()), *name)
                .map_err(|e| AgentError::internal("symlink", e))?;
            fchownat(
                Some(dir.as_raw_fd()),
                *name,
                uid,
                gid,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| AgentError::internal("chown", e))
        }
        0 | S_IFREG => write_chunk(&dir, name, existing, req, (uid, gid)),
        other => Err(AgentError::invalid(
            "file_mode",
            format!(
                "{:?}: file type {other:#o} is not a regular file, directory or symlink \
                 (device nodes, FIFOs and sockets are refused)",
                req.path
            ),
        )),
    }
}

/// One chunk of a regular file, assembled in `<name>.cocoon-partial` and renamed into
/// place (by descriptor-relative names) when the last byte arrived.
fn write_chunk(
    dir: &OwnedFd,
    name: &str,
    existing: Option<SFlag>,
    req: &CopyFileRequest,
    (uid, gid): (Option<Uid>, Option<Gid>),
) -> Result<()> {
    if existing.is_some_and(|k| k == SFlag::S_IFLNK || k == SFlag::S_IFDIR) {
        return Err(refuse(format!("{:?} is a symlink or directory", req.path)));
    }
    if req.offset < 0 || req.file_size < 0 {
        return Err(AgentError::invalid(
            "offset",
            "negative offset or file_size",
        ));
    }
    if req.file_size > MAX_FILE_SIZE {
        return Err(AgentError::invalid(
            "file_size",
            format!(
                "{:?}: {} bytes is more than CopyFile's limit of {MAX_FILE_SIZE}",
                req.path, req.file_size
            ),
        ));
    }
    let end = (req.offset as u64).saturating_add(req.data.len() as u64);
    if end > req.file_size as u64 {
        return Err(AgentError::invalid(
            "data",
            format!(
                "{:?}: chunk ends at {end}, past file_size {}",
                req.path, req.file_size
            ),
        ));
    }
    let partial = format!("{name}{PARTIAL}");
    let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT;
    if req.offset == 0 {
        flags |= OFlag::O_TRUNC;
    }
    let fd = crate::safe_path::open_at(dir, &partial, flags, 0o600).map_err(|e| match e {
        Errno::ELOOP | Errno::EXDEV => refuse(format!("{partial} is a symlink")),
        e => AgentError::internal(&format!("opening {partial}"), e),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| AgentError::internal("stat", e))?;
    if !meta.is_file() {
        return Err(refuse(format!("{partial} is not a regular file")));
    }
    file.write_all_at(&req.data, req.offset as u64)
        .map_err(|e| AgentError::internal("writing", e))?;
    if end < req.file_size as u64 {
        return Ok(());
    }
    // Copied files never carry setuid/setgid: the host must not plant a privileged
    // binary for the workload.
    let mode = req.file_mode & 0o1777;
    fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| AgentError::internal("chmod", e))?;
    fchown(file.as_raw_fd(), uid, gid).map_err(|e| AgentError::internal("chown", e))?;
    drop(file);
    nix::fcntl::renameat(
        Some(dir.as_raw_fd()),
        partial.as_str(),
        Some(dir.as_raw_fd()),
        name,
    )
    .map_err(|e| AgentError::internal("rename", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn req(path: &Path, mode: u32, data: &[u8]) -> CopyFileRequest {
        CopyFileRequest {
            path: path.display().to_string(),
            file_size: data.len() as i64,
            file_mode: mode,
            dir_mode: 0o755,
            uid: -1,
            gid: -1,
            offset: 0,
            data: data.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_dirs_symlinks_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shared/containers");
        let f = root.join("c1/etc/hosts");
        let mut r = req(&f, libc::S_IFREG | 0o644, b"hello ");
        r.file_size = 11;
        copy_file(&root, &r).unwrap();
        assert!(!f.exists());
        r.offset = 6;
        r.data = b"world".to_vec();
        copy_file(&root, &r).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "hello world");

        copy_file(&root, &req(&root.join("c1/d"), libc::S_IFDIR | 0o700, b"")).unwrap();
        assert!(root.join("c1/d").is_dir());
        copy_file(&root, &req(&root.join("c1/l"), libc::S_IFLNK | 0o777, b"d")).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("c1/l")).unwrap(),
            Path::new("d")
        );

        for bad in [
            root.join("c1/../../escape"),
            dir.path().join("outside"),
            root.join("c1/l/passwd"),
            root.join("c1/l"),
        ] {
            let e = copy_file(&root, &req(&bad, libc::S_IFREG | 0o644, b"x")).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{bad:?}: {e}");
        }
        assert!(!dir.path().join("outside").exists());
        let e = copy_file(&root, &req(Path::new("relative"), libc::S_IFREG, b"")).unwrap_err();
        assert!(e.to_string().contains("path"));
    }

    /// The host plants a symlink to a guest directory by other means (or an old one is
    /// there): nothing is created, chmod'ed or written through it.
    #[test]
    fn a_symlinked_parent_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shared/containers");
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("c1")).unwrap();
        for (path, mode) in [
            (root.join("c1/new/file"), libc::S_IFREG | 0o644),
            (root.join("c1/file"), libc::S_IFREG | 0o644),
            (root.join("c1"), libc::S_IFDIR | 0o777),
        ] {
            let e = copy_file(&root, &req(&path, mode, b"x")).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{path:?}: {e}");
        }
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "the victim's mode changed");
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shared/containers");
        let link = |p: &str, t: &str| {
            copy_file(
                &root,
                &req(&root.join(p), libc::S_IFLNK | 0o777, t.as_bytes()),
            )
        };
        // Kubernetes' atomic-writer layout: relative, inside.
        link("c1/vol/..data", "..2026_12_02").unwrap();
        link("c1/vol/key", "..data/key").unwrap();
        link("c1/vol/up", "../../c2/x").unwrap();
        for (p, t) in [
            ("c1/vol/abs", "/etc/shadow"),
            ("c1/vol/out", "../../../escape"),
            ("c1/vol/mid", "a/../../../../x"),
            ("c1/top", "../.."),
        ] {
            let e = link(p, t).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{t}: {e}");
            assert!(e.to_string().contains("symlink target"), "{e}");
            assert!(std::fs::symlink_metadata(root.join(p)).is_err(), "{p} made");
        }
    }

    #[test]
    fn devices_oversize_and_setuid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shared/containers");
        for kind in [libc::S_IFCHR, libc::S_IFBLK, libc::S_IFIFO, libc::S_IFSOCK] {
            let p = root.join("c1/dev");
            let e = copy_file(&root, &req(&p, kind | 0o666, b"")).unwrap_err();
            assert!(e.to_string().contains("refused"), "{kind:#o}: {e}");
            assert!(std::fs::symlink_metadata(&p).is_err());
        }
        let mut big = req(&root.join("c1/big"), libc::S_IFREG | 0o644, b"x");
        big.file_size = MAX_FILE_SIZE + 1;
        let e = copy_file(&root, &big).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let mut past = req(&root.join("c1/past"), libc::S_IFREG | 0o644, b"xyz");
        past.file_size = 2;
        assert!(copy_file(&root, &past).is_err());

        let suid = root.join("c1/suid");
        copy_file(&root, &req(&suid, libc::S_IFREG | 0o6755, b"#!/bin/sh\n")).unwrap();
        let mode = std::fs::metadata(&suid).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "setuid/setgid kept: {mode:o}");
    }
}
