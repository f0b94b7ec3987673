//! Host-named paths, resolved so that the host cannot steer them: every component is
//! opened from the directory descriptor before it with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, so a walk never leaves its root and never follows a symlink,
//! and callers act on the descriptor they get (`fchmod`, `fchown`, a mount onto
//! `/proc/self/fd/N`) instead of handing the path to the kernel again.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::error::{AgentError, Result};

/// Opens `name` (one component) in `dir`: below it, no symlinks, close-on-exec.
pub fn open_at(dir: &OwnedFd, name: &str, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(dir.as_raw_fd(), name, how)?;
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory `name` in `dir`, created with `mode` if missing (and `mode` is given);
/// a symlink or a non-directory there is refused as an invalid `field`.
pub fn open_dir(
    dir: &OwnedFd,
    name: &str,
    mode: Option<u32>,
    field: &str,
    shown: &Path,
) -> Result<OwnedFd> {
    if let Some(mode) = mode {
        match mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(AgentError::internal(
                    &format!("creating {}", shown.display()),
                    e,
                ))
            }
        }
    }
    open_at(dir, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0).map_err(|e| {
        let is_link = || {
            nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        };
        match e {
            Errno::ELOOP | Errno::EXDEV => {
                AgentError::invalid(field, format!("{} is a symlink", shown.display()))
            }
            Errno::ENOTDIR if is_link() => {
                AgentError::invalid(field, format!("{} is a symlink", shown.display()))
            }
            Errno::ENOTDIR => {
                AgentError::invalid(field, format!("{} is not a directory", shown.display()))
            }
            e => AgentError::internal(&format!("opening {}", shown.display()), e),
        }
    })
}

/// The components of `path` below `root` (absolute, no `.`/`..`, UTF-8), as an invalid
/// `field` otherwise. Empty when `path` is `root`.
pub fn below<'a>(root: &Path, path: &'a Path, field: &str) -> Result<Vec<&'a str>> {
    let bad = |why: String| AgentError::invalid(field, why);
    if !path.is_absolute() {
        return Err(bad(format!("{path:?} is not absolute")));
    }
    let rel = path
        .strip_prefix(root)
        .map_err(|_| bad(format!("{} is outside {}", path.display(), root.display())))?;
    rel.components()
        .map(|c| match c {
            Component::Normal(s) => s
                .to_str()
                .ok_or_else(|| bad(format!("{path:?} is not valid UTF-8"))),
            _ => Err(bad(format!("{path:?} contains \"..\" or \".\""))),
        })
        .collect()
}

/// Opens (creating missing directories with `mode`) the directory `path` below `root`
/// (an agent path, created if missing) without leaving `root` or following a symlink.
pub fn open_dir_beneath(root: &Path, path: &Path, mode: u32, field: &str) -> Result<OwnedFd> {
    let parts = below(root, path, field)?;
    std::fs::create_dir_all(root)
        .map_err(|e| AgentError::internal(&format!("creating {}", root.display()), e))?;
    let mut dir: OwnedFd = File::open(root)
        .map_err(|e| AgentError::internal(&format!("opening {}", root.display()), e))?
        .into();
    let mut shown = PathBuf::from(root);
    for part in parts {
        shown.push(part);
        dir = open_dir(&dir, part, Some(mode), field, &shown)?;
    }
    Ok(dir)
}

/// Checks that `path` below `root` exists and resolves with no symlink on the way or
/// at its end (nothing is created).
pub fn check_beneath(root: &Path, path: &Path, field: &str) -> Result<()> {
    let parts = below(root, path, field)?;
    let Some((last, parents)) = parts.split_last() else {
        return Ok(());
    };
    let mut dir: OwnedFd = File::open(root)
        .map_err(|e| AgentError::internal(&format!("opening {}", root.display()), e))?
        .into();
    let mut shown = PathBuf::from(root);
    for part in parents {
        shown.push(part);
        dir = open_dir(&dir, part, None, field, &shown)?;
    }
    shown.push(last);
    let st = nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        *last,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| AgentError::invalid(field, format!("{}: {e}", shown.display())))?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(AgentError::invalid(
            field,
            format!("{} is a symlink", shown.display()),
        ));
    }
    Ok(())
}

/// Bind mounts whose source is in the agent's directory (`run_dir`: the shared
/// containers directory the host copies into, the pod's storages, bundles) must reach
/// it without a symlink: a link there (in a host-supplied volume, say) would otherwise
/// bind a guest directory of the host's choosing into the container. Sources
/// elsewhere are the policy's business.
pub fn check_bind_sources(spec: &oci_spec::runtime::Spec, run_dir: &Path) -> Result<()> {
    for m in spec.mounts().iter().flatten() {
        let is_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source() else { continue };
        if is_bind && source.starts_with(run_dir) {
            check_beneath(run_dir, source, "mounts.source")?;
        }
    }
    Ok(())
}

/// The `/proc/self/fd/N` path of `fd`: the kernel resolves it to exactly that directory
/// (a mount onto it cannot be redirected by a symlink swapped in later).
pub fn proc_fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_never_follow_symlinks_or_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("a/up")).unwrap();
        let fd = open_dir_beneath(&root, &root.join("a/b/c"), 0o755, "f").unwrap();
        assert!(root.join("a/b/c").is_dir());
        drop(fd);
        for bad in [
            root.join("a/up/x"),
            root.join("a/up"),
            root.join("a/../x"),
            dir.path().join("x"),
            PathBuf::from("relative"),
        ] {
            let e = open_dir_beneath(&root, &bad, 0o755, "f").unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{bad:?}: {e}");
        }
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn bind_sources_in_the_run_dir_have_no_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("shared/vol")).unwrap();
        std::fs::write(run.join("shared/hosts"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", run.join("shared/etc")).unwrap();
        std::os::unix::fs::symlink("vol", run.join("shared/inside")).unwrap();
        let spec = |source: &Path| -> oci_spec::runtime::Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "mounts": [{"destination": "/x", "source": source, "type": "bind",
                            "options": ["rbind"]}]
            }))
            .unwrap()
        };
        for ok in [
            run.join("shared/vol"),
            run.join("shared/hosts"),
            PathBuf::from("/proc"),
        ] {
            check_bind_sources(&spec(&ok), &run).unwrap();
        }
        for bad in [
            run.join("shared/etc"),
            run.join("shared/etc/passwd"),
            run.join("shared/inside"),
            run.join("shared/missing"),
        ] {
            let e = check_bind_sources(&spec(&bad), &run).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{bad:?}: {e}");
            assert!(e.to_string().contains("mounts.source"), "{e}");
        }
    }
}
