//! An image's `User` (`name`, `uid`, `name:group`, `uid:gid`, ...) resolved against the
//! container's own `/etc/passwd` and `/etc/group`, as containerd does when it builds a
//! spec from an image config. The files are opened with `openat2(RESOLVE_IN_ROOT)`, so
//! a symlink in the (untrusted) image resolves inside its rootfs, never into the guest.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{AgentError, Result};

/// Largest passwd/group file we read (a bigger one is refused, not truncated).
const MAX_DB_SIZE: u64 = 1 << 20;

/// Opens `path` (absolute inside the rootfs) with the rootfs as `/`.
fn open_in_root(rootfs: &Path, path: &str) -> std::io::Result<File> {
    let root = File::open(rootfs)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(std::os::fd::AsRawFd::as_raw_fd(&root), path, how)?;
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `(name, id, primary gid)` entries of a colon-separated database; a missing file is
/// an empty database.
fn entries(rootfs: &Path, path: &str) -> Result<Vec<(String, u32, u32)>> {
    let file = match open_in_root(rootfs, path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(AgentError::internal(
                &format!("reading the image's {path}"),
                e,
            ))
        }
    };
    let mut out = Vec::new();
    let reader = BufReader::new(file.take(MAX_DB_SIZE));
    for line in reader.lines() {
        let line = line.map_err(|e| AgentError::internal(&format!("reading {path}"), e))?;
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0].starts_with('#') {
            continue;
        }
        let Ok(id) = f[2].parse::<u32>() else {
            continue;
        };
        let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0);
        out.push((f[0].to_owned(), id, gid));
    }
    Ok(out)
}

/// Resolves an image config `User` to `(uid, gid)` in `rootfs`.
pub fn resolve(rootfs: &Path, user: &str) -> Result<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let bad = |why: String| AgentError::invalid("image config User", format!("{user:?}: {why}"));
    let passwd = entries(rootfs, "/etc/passwd")?;
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd.iter().find(|e| e.1 == uid).map(|e| e.2).unwrap_or(0),
        ),
        Err(_) => passwd
            .iter()
            .find(|e| e.0 == u)
            .map(|e| (e.1, e.2))
            .ok_or_else(|| bad(format!("no user {u:?} in the image's /etc/passwd")))?,
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(rootfs, "/etc/group")?
                .iter()
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| bad(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_symlinks_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |u| resolve(root.path(), u);
        assert_eq!(r("app").unwrap(), (1000, 1001));
        assert_eq!(r("1000").unwrap(), (1000, 1001));
        assert_eq!(r("2000").unwrap(), (2000, 0));
        assert_eq!(r("app:staff").unwrap(), (1000, 50));
        assert_eq!(r("7:8").unwrap(), (7, 8));
        assert!(r("nobody").unwrap_err().to_string().contains("no user"));
        assert!(r("app:nogroup")
            .unwrap_err()
            .to_string()
            .contains("no group"));

        // An absolute symlink resolves inside the rootfs, not on the guest.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("passwd"),
            "evil:x:4242:4242::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), etc.join("passwd")).unwrap();
        assert!(r("evil").is_err());
    }
}
