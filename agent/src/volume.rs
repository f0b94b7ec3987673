//! GetVolumeStats and ResizeVolume: direct-assigned block volumes, named by the guest
//! path where the agent mounted them (`volume_guest_path`, the runtime's
//! `GuestDeviceMount`).
//!
//! GetVolumeStats is upstream's: the path is opened, then statfs gives bytes (blocks ×
//! block size, free blocks) and inodes, condition "OK".
//!
//! Upstream's agent answers ResizeVolume UNIMPLEMENTED (kata-containers issue 3694); the
//! runtime sends it after the host grew the block device. Here the path must be a mount
//! point; the filesystem is grown online to `size` bytes (0: to the whole device), which
//! must fit the device the kernel now sees: ext4 through the kernel's `EXT4_IOC_RESIZE_FS`
//! (what `resize2fs` does for a mounted filesystem: no program needed in the initrd), xfs
//! through `xfs_growfs -D` (from `/usr/sbin` or `/sbin`; FAILED_PRECONDITION when the
//! guest has none). Shrinking is refused: neither shrinks online.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use cocoon_protocols::csi::{
    volume_usage::Unit, VolumeCondition, VolumeStatsResponse, VolumeUsage,
};

use crate::error::{AgentError, Result};
use crate::reaper::Reaper;

/// Where the kernel lists the mounts of the agent's mount namespace.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";
/// A block device's size in 512-byte sectors: `/sys/dev/block/<major>:<minor>/size`.
const SYS_DEV_BLOCK: &str = "/sys/dev/block";
const SECTOR: u64 = 512;
/// Where `xfs_growfs` is looked for.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

// EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64) (linux/fs/ext4/ext4.h): the new size in
// filesystem blocks.
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

fn check_path(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || !p.is_absolute() {
        return Err(AgentError::invalid(
            "volume_guest_path",
            format!("{path:?} is not an absolute path"),
        ));
    }
    Ok(p.to_path_buf())
}

/// GetVolumeStats, as upstream answers it.
pub fn stats(path: &str) -> Result<VolumeStatsResponse> {
    let p = check_path(path)?;
    std::fs::File::open(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AgentError::not_found("volume", path),
        _ => AgentError::internal(&format!("opening the volume {path}"), e),
    })?;
    let st = nix::sys::statfs::statfs(&p)
        .map_err(|e| AgentError::internal(&format!("statfs {path}"), e))?;
    #[allow(clippy::unnecessary_cast)]
    let bsize = st.block_size() as u64;
    #[allow(clippy::unnecessary_cast)]
    let (blocks, bfree, files, ffree) = (
        st.blocks() as u64,
        st.blocks_free() as u64,
        st.files() as u64,
        st.files_free() as u64,
    );
    let usage = |total: u64, available: u64, unit: Unit| VolumeUsage {
        total,
        available,
        used: total.saturating_sub(available),
        unit: unit.into(),
        ..Default::default()
    };
    Ok(VolumeStatsResponse {
        usage: vec![
            usage(
                blocks.saturating_mul(bsize),
                bfree.saturating_mul(bsize),
                Unit::BYTES,
            ),
            usage(files, ffree, Unit::INODES),
        ],
        volume_condition: Some(VolumeCondition {
            abnormal: false,
            message: "OK".into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
}

/// One line of `/proc/self/mountinfo`, the fields ResizeVolume needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            let oct = b.get(i + 1..i + 4).unwrap_or_default();
            if oct.len() == 3 && oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (`proc(5)`): `id parent major:minor root mount-point options
/// [optional fields] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let (major, minor) = f.get(2)?.split_once(':')?;
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountInfo {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mount_point: PathBuf::from(unescape(f.get(4)?)),
                fstype: (*r.first()?).to_string(),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

/// The mount visible at `path` (the last one mounted there).
fn mount_at(mountinfo: &Path, path: &Path) -> Result<MountInfo> {
    let text = std::fs::read_to_string(mountinfo)
        .map_err(|e| AgentError::internal(&format!("reading {}", mountinfo.display()), e))?;
    parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
        .ok_or_else(|| {
            AgentError::FailedPrecondition(format!(
                "{} is not a mount point: not a direct-assigned volume",
                path.display()
            ))
        })
}

fn device_size(m: &MountInfo) -> Result<u64> {
    let f = Path::new(SYS_DEV_BLOCK).join(format!("{}:{}/size", m.major, m.minor));
    let text = std::fs::read_to_string(&f).map_err(|e| {
        AgentError::FailedPrecondition(format!(
            "{} ({}) is not on a block device: {}: {e}",
            m.mount_point.display(),
            m.source,
            f.display()
        ))
    })?;
    text.trim()
        .parse::<u64>()
        .map(|s| s.saturating_mul(SECTOR))
        .map_err(|e| AgentError::internal(&format!("{}", f.display()), e))
}

/// The filesystem's block size and size in blocks now.
fn fs_blocks(path: &Path) -> Result<(u64, u64)> {
    let st = nix::sys::statfs::statfs(path)
        .map_err(|e| AgentError::internal(&format!("statfs {}", path.display()), e))?;
    #[allow(clippy::unnecessary_cast)]
    Ok((st.block_size() as u64, st.blocks() as u64))
}

/// ResizeVolume: grows the filesystem mounted at `path` to `size` bytes (0: the whole
/// device).
pub async fn resize(reaper: &Reaper, path: &str, size: u64) -> Result<()> {
    let p = check_path(path)?;
    let m = mount_at(Path::new(MOUNTINFO), &p)?;
    let device = device_size(&m)?;
    let target = if size == 0 { device } else { size };
    if target > device {
        return Err(AgentError::FailedPrecondition(format!(
            "{} ({}) is {device} bytes, less than the {target} asked for: the host has not grown the device",
            path, m.source
        )));
    }
    let (bsize, blocks) = fs_blocks(&p)?;
    if bsize == 0 {
        return Err(AgentError::Internal(format!("statfs {path}: block size 0")));
    }
    let new_blocks = target / bsize;
    tracing::info!(
        volume = path,
        source = %m.source,
        fstype = %m.fstype,
        from = blocks.saturating_mul(bsize),
        to = new_blocks.saturating_mul(bsize),
        "ResizeVolume"
    );
    match m.fstype.as_str() {
        "ext4" | "ext3" => {
            // statfs' f_blocks excludes the overhead (metadata), so it is always below
            // the superblock's count: compare against the device instead of refusing.
            if new_blocks < blocks {
                return Err(AgentError::invalid(
                    "size",
                    format!(
                        "{target} bytes is smaller than the filesystem ({} bytes): online shrink is not supported",
                        blocks.saturating_mul(bsize)
                    ),
                ));
            }
            let dir = std::fs::File::open(&p)
                .map_err(|e| AgentError::internal(&format!("opening {path}"), e))?;
            tokio::task::spawn_blocking(move || {
                // SAFETY: `dir` is an open descriptor of a directory on the mounted ext4
                // filesystem and `new_blocks` lives across the call; the ioctl only
                // reads the u64 it points to.
                unsafe { ext4_resize_fs(dir.as_raw_fd(), &new_blocks) }
            })
            .await
            .map_err(|e| AgentError::internal("resize", e))?
            .map_err(|e| {
                let why = if e == nix::errno::Errno::EPERM {
                    " (the agent needs CAP_SYS_RESOURCE)"
                } else {
                    ""
                };
                AgentError::internal(&format!("EXT4_IOC_RESIZE_FS on {path}{why}"), e)
            })?;
            Ok(())
        }
        "xfs" => {
            if new_blocks < blocks {
                return Err(AgentError::invalid(
                    "size",
                    "xfs cannot shrink: smaller than the filesystem",
                ));
            }
            let prog = SBIN_DIRS
                .iter()
                .map(|d| Path::new(d).join("xfs_growfs"))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    AgentError::FailedPrecondition(
                        "xfs_growfs is not in the guest (looked in /usr/sbin, /sbin): cannot grow an xfs volume"
                            .into(),
                    )
                })?;
            let mut cmd = Command::new(prog);
            cmd.arg("-D").arg(new_blocks.to_string()).arg(&p);
            crate::iptables::run(reaper, cmd, None).await.map(|_| ())
        }
        other => Err(AgentError::FailedPrecondition(format!(
            "{path} is {other}: only ext4 and xfs volumes can be resized"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n\
                    98 22 7:3 / /run/kata\\040x/vol rw,relatime - ext4 /dev/loop3 rw\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].major, 7);
        assert_eq!(m[1].minor, 3);
        assert_eq!(m[1].mount_point, Path::new("/run/kata x/vol"));
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(m[0].fstype, "proc");
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            check_path("vol").unwrap_err().code(),
            ttrpc::Code::INVALID_ARGUMENT
        );
        assert_eq!(
            check_path("").unwrap_err().code(),
            ttrpc::Code::INVALID_ARGUMENT
        );
        assert_eq!(
            stats("/nonexistent/cocoon-volume").unwrap_err().code(),
            ttrpc::Code::NOT_FOUND
        );
    }
}
