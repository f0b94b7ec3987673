//! Storages from CreateSandbox/CreateContainer, by upstream driver name: `local`
//! (an emptyDir directory), `ephemeral` (tmpfs), `blk`/`virtio-blk` (a block device by
//! `/dev` name or PCI path, awaited for `agent.hotplug_timeout`), `virtio-fs` (a shared
//! directory; non-confidential use). Each mount point is reference-counted across
//! containers and unmounted when its last user goes.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cocoon_protocols::agent::Storage;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{AgentError, Result};

pub const DRIVER_LOCAL: &str = "local";
pub const DRIVER_EPHEMERAL: &str = "ephemeral";
pub const DRIVER_BLK: &str = "blk";
pub const DRIVER_VIRTIO_BLK: &str = "virtio-blk";
pub const DRIVER_VIRTIOFS: &str = "virtio-fs";
/// Every storage driver we handle, as GetGuestDetails reports them.
pub const DRIVERS: &[&str] = &[
    DRIVER_LOCAL,
    DRIVER_EPHEMERAL,
    DRIVER_BLK,
    DRIVER_VIRTIO_BLK,
    DRIVER_VIRTIOFS,
];

struct Entry {
    users: usize,
    mounted: bool,
}

#[derive(Default)]
pub struct Storages {
    entries: Mutex<HashMap<PathBuf, Entry>>,
}

/// Splits mount options into flags and filesystem data.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    (flags, data.join(","))
}

fn clean_absolute(field: &str, p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(AgentError::invalid(field, format!("{p:?} is not absolute")));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(AgentError::invalid(field, format!("{p:?} contains \"..\"")));
    }
    Ok(path.to_path_buf())
}

/// `02/01` (a PCI path: slot of each bridge, then the device) → the block device under
/// `/sys/devices/pci0000:00/…/block/`.
fn block_device_by_pci_path(pci: &str) -> Option<PathBuf> {
    let mut dir = PathBuf::from("/sys/devices/pci0000:00");
    let mut bus = "0000:00".to_string();
    for slot in pci.split('/') {
        let slot = u8::from_str_radix(slot, 16).ok()?;
        let dev = dir.join(format!("{bus}:{slot:02x}.0"));
        if !dev.exists() {
            return None;
        }
        // A bridge's secondary bus: the `pci_bus` child names it.
        if let Some(next) = std::fs::read_dir(dev.join("pci_bus"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
        {
            bus = next.file_name().to_string_lossy().into_owned();
        }
        dir = dev;
    }
    // virtio-blk: <dev>/virtioN/block/<name>
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let block = entry.path().join("block");
        if let Some(name) = std::fs::read_dir(&block)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
        {
            return Some(Path::new("/dev").join(name.file_name()));
        }
    }
    None
}

pub fn wait_for_device(source: &str, timeout: Duration) -> Result<PathBuf> {
    // The config clamps the timeout already; never let a huge one overflow the clock.
    let timeout = timeout.min(crate::config::MAX_TIMEOUT);
    let deadline = Instant::now()
        .checked_add(timeout)
        .ok_or_else(|| AgentError::invalid("agent.hotplug_timeout", "too large"))?;
    loop {
        let found = if source.starts_with("/dev/") {
            let p = clean_absolute("storages.source", source)?;
            p.exists().then_some(p)
        } else {
            block_device_by_pci_path(source)
        };
        if let Some(dev) = found.filter(|d| d.exists()) {
            return Ok(dev);
        }
        if Instant::now() >= deadline {
            return Err(AgentError::DeadlineExceeded(format!(
                "block device {source:?} did not appear within {timeout:?} (agent.hotplug_timeout)"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Storages {
    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks every storage, then sets each up (or takes another reference). On error
    /// the ones set up by this call are released again. Returns the mount points.
    pub fn add(
        &self,
        list: &[Storage],
        allowed_root: &Path,
        hotplug: Duration,
    ) -> Result<Vec<PathBuf>> {
        for s in list {
            match s.driver.as_str() {
                DRIVER_LOCAL | DRIVER_EPHEMERAL | DRIVER_BLK | DRIVER_VIRTIO_BLK
                | DRIVER_VIRTIOFS => {}
                other => {
                    return Err(AgentError::invalid(
                        "storages.driver",
                        format!("unknown storage driver {other:?}"),
                    ))
                }
            }
            let mp = clean_absolute("storages.mount_point", &s.mount_point)?;
            if !mp.starts_with(allowed_root) {
                return Err(AgentError::invalid(
                    "storages.mount_point",
                    format!("{} is outside {}", mp.display(), allowed_root.display()),
                ));
            }
        }
        let mut done = Vec::new();
        for s in list {
            match self.add_one(s, allowed_root, hotplug) {
                Ok(mp) => done.push(mp),
                Err(e) => {
                    self.release(&done);
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    fn add_one(&self, s: &Storage, allowed_root: &Path, hotplug: Duration) -> Result<PathBuf> {
        let mp = PathBuf::from(&s.mount_point);
        if let Some(e) = self.lock().get_mut(&mp) {
            e.users += 1;
            return Ok(mp);
        }
        // The mount point, host-named: created and opened through descriptors that
        // never leave the agent's directory or follow a symlink; the chmod and the
        // mount act on that descriptor, not on the path again.
        let mkdir =
            || crate::safe_path::open_dir_beneath(allowed_root, &mp, 0o755, "storages.mount_point");
        let (flags, data) = parse_options(&s.options);
        let data = (!data.is_empty()).then_some(data);
        let mount_on = |source: &str, fstype: &str, what: &str| -> Result<()> {
            let dir = mkdir()?;
            mount(
                Some(source),
                &crate::safe_path::proc_fd_path(&dir),
                Some(fstype),
                flags,
                data.as_deref(),
            )
            .map_err(|e| AgentError::internal(what, e))
        };
        let mounted = match s.driver.as_str() {
            DRIVER_LOCAL => {
                let dir = mkdir()?;
                let mode = s
                    .options
                    .iter()
                    .find_map(|o| o.strip_prefix("mode="))
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                    .unwrap_or(0o777);
                nix::sys::stat::fchmod(
                    std::os::fd::AsRawFd::as_raw_fd(&dir),
                    nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
                )
                .map_err(|e| AgentError::internal("chmod of a local storage", e))?;
                false
            }
            DRIVER_EPHEMERAL => {
                mount_on("tmpfs", "tmpfs", "mounting an ephemeral storage")?;
                true
            }
            DRIVER_BLK | DRIVER_VIRTIO_BLK => {
                let dev = wait_for_device(&s.source, hotplug)?;
                if s.fstype.is_empty() {
                    return Err(AgentError::invalid(
                        "storages.fstype",
                        "empty for a block device",
                    ));
                }
                let dev_path = dev.display().to_string();
                mount_on(&dev_path, &s.fstype, &format!("mounting {dev_path}"))?;
                true
            }
            _ => {
                // virtio-fs
                mount_on(&s.source, "virtiofs", "mounting a virtio-fs share")?;
                true
            }
        };
        self.lock().insert(mp.clone(), Entry { users: 1, mounted });
        Ok(mp)
    }

    /// Drops one reference to each mount point; the last one unmounts it.
    pub fn release(&self, mount_points: &[PathBuf]) {
        for mp in mount_points {
            let gone = {
                let mut map = self.lock();
                match map.get_mut(mp) {
                    Some(e) if e.users > 1 => {
                        e.users -= 1;
                        None
                    }
                    Some(_) => map.remove(mp),
                    None => None,
                }
            };
            if let Some(e) = gone {
                if e.mounted {
                    if let Err(err) = umount2(mp, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    {
                        tracing::warn!(mount_point = %mp.display(), error = %err, "unmounting a storage");
                    }
                }
                let _ = std::fs::remove_dir(mp);
            }
        }
    }

    /// Every mount point still held (DestroySandbox releases them all).
    pub fn all(&self) -> Vec<PathBuf> {
        let map = self.lock();
        map.iter()
            .flat_map(|(k, e)| std::iter::repeat_n(k.clone(), e.users))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn storage(driver: &str, mp: &Path) -> Storage {
        Storage {
            driver: driver.into(),
            mount_point: mp.display().to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn local_storage_is_refcounted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storages::default();
        let mp = dir.path().join("sandbox/local/vol");
        let list = [storage(DRIVER_LOCAL, &mp)];
        let a = s.add(&list, dir.path(), Duration::from_secs(1)).unwrap();
        let b = s.add(&list, dir.path(), Duration::from_secs(1)).unwrap();
        assert!(mp.is_dir());
        s.release(&a);
        assert!(mp.is_dir());
        s.release(&b);
        assert!(!mp.exists());
    }

    /// A symlink on the way to a mount point (planted by the host through some other
    /// request) is refused: no chmod 0777 or tmpfs lands on the directory it names.
    #[test]
    fn a_symlink_in_a_mount_point_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run");
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(root.join("sandbox")).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("sandbox/evil")).unwrap();
        let s = Storages::default();
        for mp in [root.join("sandbox/evil"), root.join("sandbox/evil/vol")] {
            let e = s
                .add(&[storage(DRIVER_LOCAL, &mp)], &root, Duration::from_secs(1))
                .unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{mp:?}: {e}");
            assert!(e.to_string().contains("symlink"), "{e}");
        }
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        assert!(s.all().is_empty());
    }

    #[test]
    fn bad_storages_are_invalid_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storages::default();
        let t = Duration::from_millis(50);
        let e = s
            .add(&[storage("nfs", &dir.path().join("x"))], dir.path(), t)
            .unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("driver"));
        let e = s
            .add(&[storage(DRIVER_LOCAL, Path::new("/etc/x"))], dir.path(), t)
            .unwrap_err();
        assert!(e.to_string().contains("mount_point"), "{e}");
        let e = s
            .add(
                &[storage(DRIVER_LOCAL, &dir.path().join("../x"))],
                dir.path(),
                t,
            )
            .unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
        let mut blk = storage(DRIVER_BLK, &dir.path().join("b"));
        blk.source = "/dev/cocoon-no-such-disk".into();
        blk.fstype = "ext4".into();
        let e = s.add(&[blk], dir.path(), t).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::DEADLINE_EXCEEDED);
    }

    #[test]
    fn a_huge_hotplug_timeout_does_not_overflow_the_clock() {
        // `Instant::now() + Duration::MAX` panicked here, and a panic in PID 1 powers
        // the VM off.
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(
            wait_for_device("/dev/null", huge).unwrap(),
            Path::new("/dev/null")
        );
        // Through the storage path the host drives (a block storage): an error, no panic.
        let dir = tempfile::tempdir().unwrap();
        let mut blk = storage(DRIVER_BLK, &dir.path().join("b"));
        blk.source = "/dev/null".into();
        blk.fstype = "ext4".into();
        assert!(Storages::default().add(&[blk], dir.path(), huge).is_err());
    }
}
