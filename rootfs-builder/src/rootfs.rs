//! The content tree as an ext4 or erofs image with a dm-verity hash tree appended.
//!
//! No root needed: the tree is staged in a temporary directory, `mkfs.erofs --all-root
//! -T` or `mkfs.ext4 -d` turns it into an image, and for ext4 `debugfs` then sets owners
//! to 0:0, every timestamp to `SOURCE_DATE_EPOCH` and adds device nodes. Filesystem
//! UUIDs, hash seeds and the verity salt are derived from the content, so two builds
//! from the same inputs are byte-identical.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::reference::{digest_file, ArtefactDigest};
use crate::tools::{command, run, ToolError};
use crate::tree::{Kind, ManifestEntry, Tree};
use crate::verity::{self, VerityInfo};
use crate::{ext4, initrd};

/// Filesystem of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Erofs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Erofs => "erofs",
        }
    }
}

/// What `rootfs` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsManifest {
    pub artefact: ArtefactDigest,
    pub format: FsType,
    pub source_date_epoch: u32,
    /// Size of the filesystem part (the hash tree follows).
    pub data_size: u64,
    pub verity: VerityInfo,
    /// Kernel command line fragment that opens the image and mounts it as `/`.
    pub kernel_cmdline: String,
    /// The command that checks the image (`veritysetup verify ...`).
    pub verify_command: String,
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Initrd(#[from] initrd::InitrdError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |e| RootfsError::Io(path.to_path_buf(), e)
}

/// A UUID string made from a digest (version 4 / variant bits set, content-derived).
fn uuid_from(seed: &[u8]) -> String {
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&Sha256::digest(seed)[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Writes the tree under `root`. Device nodes are skipped (they need root; ext4 gets
/// them from `debugfs`, erofs relies on devtmpfs). Directory modes are applied last so a
/// read-only directory can still be filled.
fn stage(tree: &Tree, root: &Path) -> Result<(), RootfsError> {
    let mut dirs = Vec::new();
    for (path, node) in tree.iter() {
        let host = root.join(path);
        match &node.kind {
            Kind::Dir => {
                fs::create_dir_all(&host).map_err(io(&host))?;
                dirs.push((host, node.perm));
            }
            Kind::File(data) => {
                fs::write(&host, data).map_err(io(&host))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(node.perm))
                    .map_err(io(&host))?;
            }
            Kind::Symlink(target) => symlink(target, &host).map_err(io(&host))?,
            Kind::CharDev { .. } => {}
        }
    }
    for (host, perm) in dirs.into_iter().rev() {
        fs::set_permissions(&host, fs::Permissions::from_mode(perm)).map_err(io(&host))?;
    }
    Ok(())
}

/// The `debugfs` script that normalises an ext4 image made with `mkfs.ext4 -d`.
fn debugfs_script(tree: &Tree, epoch: u32) -> String {
    let mut s = String::new();
    for (path, node) in tree.iter() {
        if let Kind::CharDev { major, minor } = node.kind {
            // debugfs's mknod takes a name in the current directory, not a path.
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let _ = writeln!(s, "cd \"/{dir}\"");
            let _ = writeln!(s, "mknod \"{name}\" c {major} {minor}");
            let _ = writeln!(s, "cd /");
            let _ = writeln!(s, "sif \"/{path}\" mode 0{:o}", 0o020_000 | node.perm);
        }
    }
    // Reserved inodes (bad blocks list, resize inode, ...) carry mkfs's clock too.
    for ino in 1..=10 {
        for field in ["atime", "mtime", "ctime", "crtime"] {
            let _ = writeln!(s, "sif <{ino}> {field} {epoch}");
        }
    }
    let paths = ["/".to_string(), "/lost+found".to_string()]
        .into_iter()
        .chain(tree.iter().map(|(p, _)| format!("/{p}")));
    for p in paths {
        for (field, value) in [
            ("uid", 0),
            ("gid", 0),
            ("atime", epoch),
            ("mtime", epoch),
            ("ctime", epoch),
            ("crtime", epoch),
            ("atime_extra", 0),
            ("mtime_extra", 0),
            ("ctime_extra", 0),
            ("crtime_extra", 0),
        ] {
            let _ = writeln!(s, "sif \"{p}\" {field} {value}");
        }
    }
    s
}

fn make_ext4(
    tree: &Tree,
    staging: &Path,
    image: &Path,
    epoch: u32,
    seed: &[u8],
) -> Result<(), RootfsError> {
    // Room for the data, inode tables and directories; read-only, so no reserve.
    let content: u64 = tree
        .iter()
        .map(|(_, n)| match &n.kind {
            Kind::File(d) => (d.len() as u64).div_ceil(4096) * 4096,
            _ => 4096,
        })
        .sum();
    let mib = (content * 5 / 4).div_ceil(1 << 20) + 8;
    let uuid = uuid_from(&[seed, b"fs"].concat());
    let hash_seed = uuid_from(&[seed, b"dirhash"].concat());
    let mut mkfs = command("mkfs.ext4");
    mkfs.env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-m",
            "0",
            "-L",
            "cocoon-root",
            "-U",
        ])
        .arg(&uuid)
        .arg("-E")
        .arg(format!(
            "hash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,nodiscard"
        ))
        .args(["-O", "^has_journal", "-d"])
        .arg(staging)
        .arg(image)
        .arg(format!("{mib}M"));
    run(&mut mkfs)?;
    let script = image.with_extension("debugfs");
    fs::write(&script, debugfs_script(tree, epoch)).map_err(io(&script))?;
    let mut debugfs = command("debugfs");
    debugfs
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .args(["-w", "-f"])
        .arg(&script)
        .arg(image);
    let result = run(&mut debugfs);
    let _ = fs::remove_file(&script);
    result?;
    ext4::normalise_superblocks(image, epoch)?;
    Ok(())
}

fn make_erofs(staging: &Path, image: &Path, epoch: u32, seed: &[u8]) -> Result<(), RootfsError> {
    let mut mkfs = command("mkfs.erofs");
    // -T sets inode times; SOURCE_DATE_EPOCH also fixes the superblock's build time.
    mkfs.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("--quiet")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{}", uuid_from(&[seed, b"fs"].concat())))
        .arg("--all-root")
        .arg("-x-1") // no xattrs from the build host (SELinux labels, ...)
        .arg(image)
        .arg(staging);
    run(&mut mkfs)?;
    // dm-verity works on whole blocks.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(io(image))?;
    let len = f.metadata().map_err(io(image))?.len();
    f.set_len(len.div_ceil(4096) * 4096).map_err(io(image))?;
    Ok(())
}

/// Builds the image at `output` and appends its hash tree.
pub fn build(
    tree: &Tree,
    output: &Path,
    fs_type: FsType,
    epoch: u32,
    root_device: &str,
) -> Result<RootfsManifest, RootfsError> {
    // Every byte of the content feeds the seed: same content, same UUIDs and salt.
    let seed = Sha256::digest(initrd::archive(tree, epoch)?).to_vec();
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".rootfs-staging")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    stage(tree, staging.path())?;
    let tmp = output.with_extension("partial");
    let _ = fs::remove_file(&tmp);
    match fs_type {
        FsType::Ext4 => make_ext4(tree, staging.path(), &tmp, epoch, &seed)?,
        FsType::Erofs => make_erofs(staging.path(), &tmp, epoch, &seed)?,
    }
    let data_size = fs::metadata(&tmp).map_err(io(&tmp))?.len();
    let salt = hex::encode(Sha256::digest([&seed[..], b"verity-salt"].concat()));
    let info = verity::format(&tmp, &salt)?;
    fs::rename(&tmp, output).map_err(io(output))?;
    let verify_command = format!(
        "veritysetup {}",
        info.verify_args(output)
            .iter()
            .map(|a| if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(RootfsManifest {
        artefact: digest_file(output).map_err(io(output))?,
        format: fs_type,
        source_date_epoch: epoch,
        data_size,
        kernel_cmdline: info.cmdline(root_device, fs_type.name()),
        verify_command,
        verity: info,
        // erofs images carry no device nodes (see `stage`).
        entries: tree
            .manifest()
            .into_iter()
            .filter(|e| fs_type == FsType::Ext4 || e.kind != "chardev")
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_from(b"x");
        assert_eq!(a, uuid_from(b"x"));
        assert_ne!(a, uuid_from(b"y"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn debugfs_script_covers_every_path() {
        let mut t = Tree::new();
        t.file("/init", vec![1], 0o755).unwrap();
        t.char_dev("/dev/console", 5, 1, 0o600).unwrap();
        let s = debugfs_script(&t, 9);
        assert!(s.starts_with(
            "cd \"/dev\"\nmknod \"console\" c 5 1\ncd /\nsif \"/dev/console\" mode 020600\n"
        ));
        assert!(s.contains("sif \"/init\" mtime 9\n"));
        assert!(s.contains("sif \"/\" uid 0\n"));
    }
}
