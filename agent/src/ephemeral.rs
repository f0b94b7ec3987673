//! UpdateEphemeralMounts and RemoveStaleVirtiofsShareMounts, as upstream's agent does
//! them (`src/agent/src/storage/ephemeral_handler.rs` `update_ephemeral_mounts`,
//! `rpc.rs` `remove_stale_virtiofs_share_mounts`).
//!
//! UpdateEphemeralMounts: the runtime resizes the pod's emptyDir tmpfs volumes to the
//! sandbox's memory after a memory hot-plug (Storage `{driver: "ephemeral", source:
//! "tmpfs", fstype: "tmpfs", options: ["remount", "size=<n>M", ("fsgid=<gid>")]}` at
//! `/run/kata-containers/sandbox/ephemeral/<name>`). Each mount point is created; with
//! options it is mounted (or remounted) with them, `fsgid=` dropped, as upstream. Unlike
//! upstream, which mounts whatever source and fstype the host names at any path, only a
//! `tmpfs` is mounted and only below the ephemeral directory: the host must not be able
//! to mount over the guest's paths. The confidential default policy refuses the request
//! altogether (as genpolicy's default does).
//!
//! RemoveStaleVirtiofsShareMounts: every mount below the shared containers directory is
//! `stat`ed, which makes virtiofsd drop stale cache entries and their fds (kata issue
//! 6455); results are logged. In a confidential guest there are no virtio-fs shares
//! (the default policy refuses them), so this touches nothing.

use std::path::{Component, Path, PathBuf};

use cocoon_protocols::agent::Storage;
use nix::mount::MsFlags;

use crate::error::{AgentError, Result};
use crate::storage::{parse_options, DRIVER_EPHEMERAL};

/// Mount options upstream drops before mounting (`FS_GID_EQ`): the gid was applied by
/// the runtime.
const FS_GID_EQ: &str = "fsgid=";
const TMPFS: &str = "tmpfs";

fn below(root: &Path, p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(AgentError::invalid(
            "storages.mount_point",
            format!("{p:?} is not a clean absolute path"),
        ));
    }
    if !path.starts_with(root) || path == root {
        return Err(AgentError::invalid(
            "storages.mount_point",
            format!("{p:?} is not below {}", root.display()),
        ));
    }
    Ok(path.to_path_buf())
}

/// What one storage asks for, checked: the mount point and the mount's flags and data
/// (`None`: only the directory).
fn plan(root: &Path, s: &Storage) -> Result<(PathBuf, Option<(MsFlags, String)>)> {
    if s.driver != DRIVER_EPHEMERAL {
        // Upstream's words.
        return Err(AgentError::invalid(
            "storages.driver",
            format!(
                "Unsupported storage type for syncing mounts {}. Only ephemeral storage update is supported",
                s.driver
            ),
        ));
    }
    let mp = below(root, &s.mount_point)?;
    if s.options.is_empty() {
        return Ok((mp, None));
    }
    for (field, v) in [
        ("storages.source", &s.source),
        ("storages.fstype", &s.fstype),
    ] {
        if v != TMPFS {
            return Err(AgentError::invalid(
                field,
                format!("{v:?}: only a tmpfs is mounted for an ephemeral storage"),
            ));
        }
    }
    let mut flags = MsFlags::empty();
    let mut rest = Vec::new();
    for o in &s.options {
        if o.starts_with(FS_GID_EQ) {
            continue;
        }
        match o.as_str() {
            "remount" => flags |= MsFlags::MS_REMOUNT,
            _ => rest.push(o.clone()),
        }
    }
    let (more, data) = parse_options(&rest);
    if more.contains(MsFlags::MS_BIND) {
        return Err(AgentError::invalid(
            "storages.options",
            "bind mounts are not ephemeral storages",
        ));
    }
    Ok((mp, Some((flags | more, data))))
}

/// UpdateEphemeralMounts: every storage is checked before any is acted on.
pub fn update(root: &Path, storages: &[Storage]) -> Result<()> {
    let plans = storages
        .iter()
        .map(|s| plan(root, s))
        .collect::<Result<Vec<_>>>()?;
    for (mp, mount) in plans {
        std::fs::create_dir_all(&mp)
            .map_err(|e| AgentError::internal(&format!("creating {}", mp.display()), e))?;
        let Some((flags, data)) = mount else {
            continue;
        };
        tracing::info!(mount_point = %mp.display(), options = %data, remount = flags.contains(MsFlags::MS_REMOUNT), "UpdateEphemeralMounts: mounting a tmpfs");
        nix::mount::mount(
            Some(TMPFS),
            &mp,
            Some(TMPFS),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| AgentError::internal(&format!("mounting a tmpfs on {}", mp.display()), e))?;
    }
    Ok(())
}

/// RemoveStaleVirtiofsShareMounts: `stat` of each mount below `shared`.
pub fn stat_share_mounts(mountinfo: &Path, shared: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(mountinfo)
        .map_err(|e| AgentError::internal(&format!("reading {}", mountinfo.display()), e))?;
    let mut n = 0;
    for m in crate::volume::parse_mountinfo(&text) {
        if !m.mount_point.starts_with(shared) || m.mount_point == shared {
            continue;
        }
        n += 1;
        match std::fs::metadata(&m.mount_point) {
            Ok(_) => {
                tracing::info!(mount_point = %m.mount_point.display(), "RemoveStaleVirtiofsShareMounts: stat succeeded")
            }
            Err(e) => {
                tracing::info!(mount_point = %m.mount_point.display(), error = %e, "RemoveStaleVirtiofsShareMounts: stat failed")
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(driver: &str, mp: &str, fstype: &str, options: &[&str]) -> Storage {
        Storage {
            driver: driver.into(),
            source: fstype.into(),
            fstype: fstype.into(),
            mount_point: mp.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_ephemeral_dir_is_the_runtimes() {
        let paths = crate::paths::Paths {
            run_dir: cocoon_protocols::wire::KATA_RUN_DIR.into(),
            ..crate::paths::Paths::from_env(false)
        };
        assert_eq!(
            paths.ephemeral_dir(),
            Path::new(cocoon_protocols::wire::EPHEMERAL_DIR)
        );
    }

    #[test]
    fn plans_are_checked() {
        let root = Path::new("/run/kata-containers/sandbox/ephemeral");
        let mp = "/run/kata-containers/sandbox/ephemeral/cache";
        let (p, m) = plan(
            root,
            &storage(
                "ephemeral",
                mp,
                "tmpfs",
                &["remount", "size=512M", "fsgid=2000", "nodev"],
            ),
        )
        .unwrap();
        assert_eq!(p, Path::new(mp));
        let (flags, data) = m.unwrap();
        assert!(flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_NODEV));
        assert_eq!(data, "size=512M");
        assert!(plan(root, &storage("ephemeral", mp, "tmpfs", &[]))
            .unwrap()
            .1
            .is_none());
        for (s, text) in [
            (
                storage("local", mp, "tmpfs", &["size=1M"]),
                "Only ephemeral",
            ),
            (
                storage("ephemeral", "/etc", "tmpfs", &["size=1M"]),
                "not below",
            ),
            (
                storage(
                    "ephemeral",
                    "/run/kata-containers/sandbox/ephemeral/../../x",
                    "tmpfs",
                    &["size=1M"],
                ),
                "clean",
            ),
            (
                storage("ephemeral", mp, "ext4", &["size=1M"]),
                "only a tmpfs",
            ),
            (storage("ephemeral", mp, "tmpfs", &["bind"]), "bind"),
        ] {
            let e = plan(root, &s).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
            assert!(e.to_string().contains(text), "{e}");
        }
    }
}
