//! CopyFile: the runtime copies files, directories and symlinks into the guest, in
//! chunks, only below `/run/kata-containers/shared/containers/`. `..`, paths outside
//! that root, and any existing symlink on the way are refused.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use cocoon_protocols::agent::CopyFileRequest;

use crate::error::{AgentError, Result};

const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFLNK: u32 = libc::S_IFLNK;

/// Suffix of the file a chunked copy is assembled in.
const PARTIAL: &str = ".cocoon-partial";

fn refuse(reason: String) -> AgentError {
    AgentError::invalid("path", reason)
}

/// Checks `path` is below `root` without `..`, then walks it from `root`, creating
/// missing directories with `dir_mode` and refusing symlinks. Returns the checked path.
fn resolve(root: &Path, path: &str, dir_mode: u32) -> Result<PathBuf> {
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
    let parts: Vec<Component> = rel.components().collect();
    if parts.is_empty() {
        return Err(refuse(format!("{path:?} is the shared directory itself")));
    }
    // The root itself must be a real directory.
    let mut cur = root.to_path_buf();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&cur)
        .map_err(|e| AgentError::internal("creating the shared directory", e))?;
    let parents = &parts[..parts.len() - 1];
    for c in parents {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(format!("{path:?}: {} is a symlink", cur.display())))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(refuse(format!(
                    "{path:?}: {} is not a directory",
                    cur.display()
                )))
            }
            Err(_) => {
                std::fs::DirBuilder::new()
                    .mode(if dir_mode == 0 {
                        0o755
                    } else {
                        dir_mode & 0o7777
                    })
                    .create(&cur)
                    .map_err(|e| AgentError::internal(&format!("creating {}", cur.display()), e))?;
            }
        }
    }
    cur.push(parts[parts.len() - 1]);
    Ok(cur)
}

fn chown(path: &Path, uid: i32, gid: i32) -> Result<()> {
    let u = (uid >= 0).then(|| nix::unistd::Uid::from_raw(uid as u32));
    let g = (gid >= 0).then(|| nix::unistd::Gid::from_raw(gid as u32));
    nix::unistd::fchownat(None, path, u, g, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| AgentError::internal(&format!("chown {}", path.display()), e))
}

/// Applies one CopyFile request below `root`.
pub fn copy_file(root: &Path, req: &CopyFileRequest) -> Result<()> {
    let target = resolve(root, &req.path, req.dir_mode)?;
    let existing = std::fs::symlink_metadata(&target).ok();
    match req.file_mode & S_IFMT {
        S_IFDIR => {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    return Err(refuse(format!(
                        "{:?} exists and is not a directory",
                        req.path
                    )))
                }
                None => std::fs::DirBuilder::new()
                    .mode(req.file_mode & 0o7777)
                    .create(&target)
                    .map_err(|e| AgentError::internal("mkdir", e))?,
            }
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(req.file_mode & 0o7777),
            )
            .map_err(|e| AgentError::internal("chmod", e))?;
            chown(&target, req.uid, req.gid)
        }
        S_IFLNK => {
            let link_target = String::from_utf8(req.data.clone())
                .map_err(|_| AgentError::invalid("data", "symlink target is not UTF-8"))?;
            if let Some(m) = existing {
                if m.is_dir() {
                    return Err(refuse(format!("{:?} is a directory", req.path)));
                }
                std::fs::remove_file(&target)
                    .map_err(|e| AgentError::internal("replacing a symlink", e))?;
            }
            std::os::unix::fs::symlink(&link_target, &target)
                .map_err(|e| AgentError::internal("symlink", e))?;
            chown(&target, req.uid, req.gid)
        }
        _ => {
            if existing
                .as_ref()
                .is_some_and(|m| m.file_type().is_symlink() || m.is_dir())
            {
                return Err(refuse(format!("{:?} is a symlink or directory", req.path)));
            }
            if req.offset < 0 || req.file_size < 0 {
                return Err(AgentError::invalid(
                    "offset",
                    "negative offset or file_size",
                ));
            }
            let mut partial = target.clone().into_os_string();
            partial.push(PARTIAL);
            let partial = PathBuf::from(partial);
            if std::fs::symlink_metadata(&partial).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(refuse(format!("{} is a symlink", partial.display())));
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(req.offset == 0)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&partial)
                .map_err(|e| AgentError::internal(&format!("opening {}", partial.display()), e))?;
            f.seek(SeekFrom::Start(req.offset as u64))
                .and_then(|_| f.write_all(&req.data))
                .map_err(|e| AgentError::internal("writing", e))?;
            let end = req.offset as u64 + req.data.len() as u64;
            if end >= req.file_size as u64 {
                f.set_permissions(std::fs::Permissions::from_mode(req.file_mode & 0o7777))
                    .map_err(|e| AgentError::internal("chmod", e))?;
                drop(f);
                chown(&partial, req.uid, req.gid)?;
                std::fs::rename(&partial, &target)
                    .map_err(|e| AgentError::internal("rename", e))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        copy_file(
            &root,
            &req(&root.join("c1/l"), libc::S_IFLNK | 0o777, b"/etc"),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_link(root.join("c1/l")).unwrap(),
            Path::new("/etc")
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
}
