//! The image content as an in-memory tree, independent of the output format.
//!
//! Everything host-dependent (owners, mtimes, umask, directory order) is dropped on the
//! way in: paths are kept sorted, owners are always 0:0, modes are set explicitly by the
//! caller, and the single timestamp comes from `SOURCE_DATE_EPOCH`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cpio;
use crate::spec::mode;

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device node (only `/dev/console` in practice).
    CharDev {
        major: u32,
        minor: u32,
    },
}

/// One path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Permission bits only.
    pub perm: u32,
    pub kind: Kind,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("invalid image path {0:?}: must be absolute, normalised, without `..`")]
    BadPath(String),
    #[error("{path:?} is already in the image as a different kind of entry")]
    Conflict { path: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: unsupported file type (only files, directories and symlinks are copied)")]
    Unsupported(PathBuf),
}

/// Sorted map from image path (relative, no leading `/`) to node.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// Normalises `/a/b/` to `a/b`, rejecting `.`/`..`/empty components.
fn key(path: &str) -> Result<String, TreeError> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(TreeError::BadPath(path.to_string()));
    }
    Ok(trimmed.to_string())
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory and its missing parents (mode 0755). An existing directory keeps
    /// its entry but takes `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), TreeError> {
        let k = key(path)?;
        self.parents(&k)?;
        self.insert(
            k,
            Node {
                perm,
                kind: Kind::Dir,
            },
        )
    }

    /// Adds (or replaces) a regular file, creating parent directories.
    pub fn file(&mut self, path: &str, data: Vec<u8>, perm: u32) -> Result<(), TreeError> {
        let k = key(path)?;
        self.parents(&k)?;
        self.insert(
            k,
            Node {
                perm,
                kind: Kind::File(data),
            },
        )
    }

    /// Adds a symlink, creating parent directories.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        let k = key(path)?;
        self.parents(&k)?;
        self.insert(
            k,
            Node {
                perm: 0o777,
                kind: Kind::Symlink(target.to_string()),
            },
        )
    }

    /// Adds a character device node, creating parent directories.
    pub fn char_dev(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        perm: u32,
    ) -> Result<(), TreeError> {
        let k = key(path)?;
        self.parents(&k)?;
        self.insert(
            k,
            Node {
                perm,
                kind: Kind::CharDev { major, minor },
            },
        )
    }

    /// Copies a host directory tree under `dest`. Modes are normalised (0755 for
    /// directories and files with any execute bit, 0644 otherwise) so that the host's
    /// umask does not leak in; symlinks are kept as links.
    pub fn copy_dir(&mut self, src: &Path, dest: &str) -> Result<(), TreeError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TreeError::Read { path, source }
        };
        self.dir(dest, 0o755)?;
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(read_err(src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read_err(src))?;
        names.sort();
        for name in names {
            let host = src.join(&name);
            let inside = format!("{}/{}", dest.trim_end_matches('/'), name.to_string_lossy());
            let meta = fs::symlink_metadata(&host).map_err(read_err(&host))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.copy_dir(&host, &inside)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&host).map_err(read_err(&host))?;
                self.symlink(&inside, &target.to_string_lossy())?;
            } else if ft.is_file() {
                let data = fs::read(&host).map_err(read_err(&host))?;
                let perm = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                self.file(&inside, data, perm)?;
            } else {
                return Err(TreeError::Unsupported(host));
            }
        }
        Ok(())
    }

    fn parents(&mut self, k: &str) -> Result<(), TreeError> {
        let mut end = 0;
        while let Some(pos) = k[end..].find('/') {
            let parent = &k[..end + pos];
            match self.nodes.get(parent) {
                Some(Node {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(TreeError::Conflict {
                        path: parent.to_string(),
                    })
                }
                None => {
                    self.nodes.insert(
                        parent.to_string(),
                        Node {
                            perm: 0o755,
                            kind: Kind::Dir,
                        },
                    );
                }
            }
            end += pos + 1;
        }
        Ok(())
    }

    fn insert(&mut self, k: String, node: Node) -> Result<(), TreeError> {
        if let Some(old) = self.nodes.get(&k) {
            let same_kind = matches!(
                (&old.kind, &node.kind),
                (Kind::Dir, Kind::Dir)
                    | (Kind::File(_), Kind::File(_))
                    | (Kind::Symlink(_), Kind::Symlink(_))
            );
            if !same_kind {
                return Err(TreeError::Conflict { path: k });
            }
        }
        self.nodes.insert(k, node);
        Ok(())
    }

    /// Nodes in path order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        key(path).ok().and_then(|k| self.nodes.get(&k))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The cpio members of this tree: sorted, inode numbers 1.., owner 0:0, one mtime.
    pub fn to_cpio_entries(&self, mtime: u32) -> Vec<cpio::Entry> {
        self.iter()
            .enumerate()
            .map(|(i, (path, node))| {
                let (ftype, data, nlink, rdev) = match &node.kind {
                    Kind::Dir => (mode::S_IFDIR, Vec::new(), 2, (0, 0)),
                    Kind::File(d) => (mode::S_IFREG, d.clone(), 1, (0, 0)),
                    Kind::Symlink(t) => (mode::S_IFLNK, t.as_bytes().to_vec(), 1, (0, 0)),
                    Kind::CharDev { major, minor } => {
                        (mode::S_IFCHR, Vec::new(), 1, (*major, *minor))
                    }
                };
                cpio::Entry {
                    name: path.to_string(),
                    // Inode numbers only need to be unique; the index is deterministic.
                    ino: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    mode: ftype | (node.perm & mode::PERM_MASK),
                    uid: 0,
                    gid: 0,
                    nlink,
                    mtime,
                    rdev_major: rdev.0,
                    rdev_minor: rdev.1,
                    data,
                }
            })
            .collect()
    }

    /// The manifest: one line per path, with what a reviewer needs to check it.
    pub fn manifest(&self) -> Vec<ManifestEntry> {
        self.iter()
            .map(|(path, node)| {
                let (kind, size, sha256, target) = match &node.kind {
                    Kind::Dir => ("dir", None, None, None),
                    Kind::File(d) => (
                        "file",
                        Some(d.len() as u64),
                        Some(hex::encode(Sha256::digest(d))),
                        None,
                    ),
                    Kind::Symlink(t) => ("symlink", None, None, Some(t.clone())),
                    Kind::CharDev { major, minor } => {
                        ("chardev", None, None, Some(format!("{major}:{minor}")))
                    }
                };
                ManifestEntry {
                    path: format!("/{path}"),
                    kind: kind.to_string(),
                    mode: format!("{:04o}", node.perm),
                    size,
                    sha256,
                    target,
                }
            })
            .collect()
    }
}

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Absolute path in the guest.
    pub path: String,
    /// `dir`, `file`, `symlink` or `chardev`.
    pub kind: String,
    /// Permission bits, octal.
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Symlink target, or `major:minor` of a device node.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
}

impl ManifestEntry {
    /// The manifest line of a parsed cpio member, to compare an archive with a manifest.
    pub fn from_cpio(e: &cpio::Entry) -> Self {
        let ft = e.file_type();
        let (kind, size, sha256, target) = match ft {
            mode::S_IFDIR => ("dir", None, None, None),
            mode::S_IFREG => (
                "file",
                Some(e.data.len() as u64),
                Some(hex::encode(Sha256::digest(&e.data))),
                None,
            ),
            mode::S_IFLNK => (
                "symlink",
                None,
                None,
                Some(String::from_utf8_lossy(&e.data).into_owned()),
            ),
            mode::S_IFCHR => (
                "chardev",
                None,
                None,
                Some(format!("{}:{}", e.rdev_major, e.rdev_minor)),
            ),
            _ => ("other", None, None, None),
        };
        Self {
            path: format!(
                "/{}",
                e.name.trim_start_matches("./").trim_start_matches('/')
            ),
            kind: kind.to_string(),
            mode: format!("{:04o}", e.mode & mode::PERM_MASK),
            size,
            sha256,
            target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = Tree::new();
        t.file("/a-b/x", b"1".to_vec(), 0o644).unwrap();
        t.file("/a/b/c", b"2".to_vec(), 0o600).unwrap();
        t.symlink("/a/l", "b/c").unwrap();
        let paths: Vec<_> = t.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(paths, ["a", "a-b", "a-b/x", "a/b", "a/b/c", "a/l"]);
        for (i, p) in paths.iter().enumerate() {
            if let Some((parent, _)) = p.rsplit_once('/') {
                assert!(paths[..i].iter().any(|q| q == parent), "{p}");
            }
        }
    }

    #[test]
    fn bad_paths_and_conflicts() {
        let mut t = Tree::new();
        assert!(t.file("/", vec![], 0o644).is_err());
        assert!(t.file("/a/../b", vec![], 0o644).is_err());
        t.file("/f", vec![], 0o644).unwrap();
        assert!(t.file("/f/g", vec![], 0o644).is_err());
        assert!(t.dir("/f", 0o755).is_err());
    }

    #[test]
    fn cpio_entries_are_normalised() {
        let mut t = Tree::new();
        t.file("/init", b"x".to_vec(), 0o755).unwrap();
        t.char_dev("/dev/console", 5, 1, 0o600).unwrap();
        let e = t.to_cpio_entries(42);
        assert_eq!(e.len(), 3);
        assert!(e.iter().all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 42));
        assert_eq!(e[1].name, "dev/console");
        assert_eq!(e[1].mode, 0o020_600);
        assert_eq!((e[1].rdev_major, e[1].rdev_minor), (5, 1));
        let m: Vec<_> = e.iter().map(ManifestEntry::from_cpio).collect();
        assert_eq!(m, t.manifest());
    }
}
