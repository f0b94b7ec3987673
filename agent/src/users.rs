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
        let (Some(name), Some(id)) = (f.first(), f.get(2)) else {
            continue;
        };
        if name.starts_with('#') {
            continue;
        }
        let Ok(id) = id.parse::<u32>() else {
            continue;
        };
        let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0);
        out.push(((*name).to_owned(), id, gid));
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

/// The groups of `/etc/group` in `rootfs` that list `name` as a member (runc adds them
/// as supplementary groups of a user given by name).
fn member_groups(rootfs: &Path, name: &str) -> Result<Vec<u32>> {
    let file = match open_in_root(rootfs, "/etc/group") {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::internal("reading the image's /etc/group", e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file.take(MAX_DB_SIZE)).lines() {
        let line = line.map_err(|e| AgentError::internal("reading /etc/group", e))?;
        let f: Vec<&str> = line.split(':').collect();
        let (Some(gid), Some(members)) = (f.get(2).and_then(|g| g.parse().ok()), f.get(3)) else {
            continue;
        };
        if members.split(',').any(|m| m.trim() == name) {
            out.push(gid);
        }
    }
    Ok(out)
}

/// Users given by name in a CreateContainer: the spec's `process.user.username` and
/// the request's `string_user` (uid and gid as names or numbers, additional groups),
/// resolved against the container's own `/etc/passwd` and `/etc/group` (opened inside
/// its rootfs). A name sets uid, gid and — as runc does — the groups that list the
/// user; an unknown name is an error, never root.
pub fn apply_names(
    spec: &mut oci_spec::runtime::Spec,
    bundle: &Path,
    string_user: Option<&cocoon_protocols::agent::StringUser>,
) -> Result<()> {
    let rootfs = match spec.root().as_ref().map(|r| r.path().clone()) {
        Some(p) if p.is_absolute() => p,
        Some(p) => bundle.join(p),
        None => bundle.join("rootfs"),
    };
    let Some(mut process) = spec.process().clone() else {
        return Ok(());
    };
    if apply_names_to_process(&mut process, &rootfs, string_user)? {
        spec.set_process(Some(process));
    }
    Ok(())
}

/// The same for an exec's process (ExecProcess carries `string_user` too), against the
/// container's root `rootfs`. True when the process was changed.
pub fn apply_names_to_process(
    process: &mut oci_spec::runtime::Process,
    rootfs: &Path,
    string_user: Option<&cocoon_protocols::agent::StringUser>,
) -> Result<bool> {
    let username = process.user().username().clone().filter(|u| !u.is_empty());
    let string_user = string_user.filter(|s| !s.uid.is_empty());
    if username.is_none() && string_user.is_none() {
        return Ok(false);
    }
    let rootfs = rootfs.to_path_buf();
    let mut user = process.user().clone();
    let (name, spec_form) = match (string_user, &username) {
        (Some(s), _) => (
            if s.gid.is_empty() {
                s.uid.clone()
            } else {
                format!("{}:{}", s.uid, s.gid)
            },
            false,
        ),
        (None, Some(u)) => (u.clone(), true),
        (None, None) => return Ok(false),
    };
    let (uid, gid) = resolve(&rootfs, &name).map_err(|e| {
        let field = if spec_form {
            "OCI.Process.User.Username"
        } else {
            "string_user"
        };
        AgentError::invalid(field, e.to_string())
    })?;
    let mut extra: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
    let login = name.split(':').next().unwrap_or(&name);
    if login.parse::<u32>().is_err() {
        extra.extend(member_groups(&rootfs, login)?);
    }
    if let Some(s) = string_user {
        for g in &s.additionalGids {
            let gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => entries(&rootfs, "/etc/group")?
                    .iter()
                    .find(|e| e.0 == *g)
                    .map(|e| e.1)
                    .ok_or_else(|| {
                        AgentError::invalid(
                            "string_user.additionalGids",
                            format!("no group {g:?} in the container's /etc/group"),
                        )
                    })?,
            };
            extra.push(gid);
        }
    }
    extra.sort_unstable();
    extra.dedup();
    extra.retain(|g| *g != gid);
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids((!extra.is_empty()).then_some(extra));
    process.set_user(user);
    Ok(true)
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

    fn spec_with(user: serde_json::Value) -> oci_spec::runtime::Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["sh"], "user": user}
        }))
        .unwrap()
    }

    #[test]
    fn spec_usernames_and_string_users() {
        let bundle = tempfile::tempdir().unwrap();
        let etc = bundle.path().join("rootfs/etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "app:x:1000:1001::/app:/bin/sh
",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "app:x:1001:
wheel:x:10:root,app
audio:x:29:app
other:x:30:bob
",
        )
        .unwrap();
        let user = |s: &oci_spec::runtime::Spec| s.process().as_ref().unwrap().user().clone();

        let mut spec = spec_with(serde_json::json!({"uid": 0, "gid": 0, "username": "app"}));
        apply_names(&mut spec, bundle.path(), None).unwrap();
        let u = user(&spec);
        assert_eq!((u.uid(), u.gid()), (1000, 1001));
        assert_eq!(u.additional_gids().clone().unwrap(), vec![10, 29]);

        let mut spec = spec_with(serde_json::json!({"uid": 0, "gid": 0}));
        let su = cocoon_protocols::agent::StringUser {
            uid: "app".into(),
            gid: "wheel".into(),
            additionalGids: vec!["audio".into(), "7".into()],
            ..Default::default()
        };
        apply_names(&mut spec, bundle.path(), Some(&su)).unwrap();
        let u = user(&spec);
        assert_eq!((u.uid(), u.gid()), (1000, 10));
        assert_eq!(u.additional_gids().clone().unwrap(), vec![7, 29]);

        // Unknown: a clear error, never root.
        let mut spec = spec_with(serde_json::json!({"uid": 0, "gid": 0, "username": "ghost"}));
        let e = apply_names(&mut spec, bundle.path(), None).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(
            e.to_string().contains("Username") && e.to_string().contains("ghost"),
            "{e}"
        );
        let bad = cocoon_protocols::agent::StringUser {
            uid: "app".into(),
            additionalGids: vec!["nogroup".into()],
            ..Default::default()
        };
        let mut spec = spec_with(serde_json::json!({"uid": 0, "gid": 0}));
        let e = apply_names(&mut spec, bundle.path(), Some(&bad)).unwrap_err();
        assert!(e.to_string().contains("nogroup"), "{e}");

        // No name anywhere: the numeric user stays as it is.
        let mut spec = spec_with(serde_json::json!({"uid": 5, "gid": 6}));
        apply_names(&mut spec, bundle.path(), None).unwrap();
        assert_eq!((user(&spec).uid(), user(&spec).gid()), (5, 6));
    }
}
