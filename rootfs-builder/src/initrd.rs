//! The initrd: the content tree as a deterministic, compressed `newc` archive, and the
//! manifest that describes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compress::{self, Compression};
use crate::content::ContentInfo;
use crate::cpio::{self, NewcWriter};
use crate::reference::{digest_file, ArtefactDigest};
use crate::tree::{ManifestEntry, Tree};

/// What `initrd` prints: the artefact, how it was made, and every entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitrdManifest {
    pub artefact: ArtefactDigest,
    pub format: String,
    pub compression: String,
    pub source_date_epoch: u32,
    /// Size of the uncompressed cpio archive.
    pub cpio_size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel_version: Option<String>,
    pub modules: Vec<String>,
    pub modules_builtin: Vec<String>,
    /// Modules shipped without their signature (`--strip-module-signatures`).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub module_signatures_stripped: usize,
    pub pause_bundle: String,
    pub entries: Vec<ManifestEntry>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error(transparent)]
    Cpio(#[from] cpio::CpioError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InitrdError + '_ {
    move |source| InitrdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The uncompressed archive bytes of `tree`.
pub fn archive(tree: &Tree, mtime: u32) -> Result<Vec<u8>, InitrdError> {
    let mut w = NewcWriter::new(Vec::new());
    for e in tree.to_cpio_entries(mtime) {
        w.append(&e)?;
    }
    Ok(w.finish()?)
}

/// Writes the initrd to `output` (atomically, via a temporary file beside it).
pub fn write(
    tree: &Tree,
    info: &ContentInfo,
    output: &Path,
    compression: Compression,
    level: Option<i32>,
    mtime: u32,
) -> Result<InitrdManifest, InitrdError> {
    let raw = archive(tree, mtime)?;
    let packed = compression.compress(&raw, level).map_err(io_err(output))?;
    let tmp = output.with_extension("partial");
    std::fs::write(&tmp, &packed).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, output).map_err(io_err(output))?;
    let artefact = digest_file(output).map_err(io_err(output))?;
    Ok(InitrdManifest {
        artefact,
        format: "newc".into(),
        compression: format!("{compression:?}").to_lowercase(),
        source_date_epoch: mtime,
        cpio_size: raw.len() as u64,
        kernel_version: info.kernel_version.clone(),
        modules: info.modules.clone(),
        modules_builtin: info.modules_builtin.clone(),
        module_signatures_stripped: info.module_signatures_stripped,
        pause_bundle: info.pause_bundle.clone(),
        entries: tree.manifest(),
    })
}

/// Reads an initrd (gzip, zstd or plain) back into its members.
pub fn read(path: &Path) -> Result<Vec<cpio::Entry>, InitrdError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let raw = compress::decompress_any(&data).map_err(io_err(path))?;
    Ok(cpio::read_archive(&raw)?)
}

/// Compares an initrd with its manifest; returns the differences.
pub fn verify(path: &Path, manifest: &InitrdManifest) -> Result<Vec<String>, InitrdError> {
    let mut diffs = Vec::new();
    let digest = digest_file(path).map_err(io_err(path))?;
    if digest.sha256 != manifest.artefact.sha256 {
        diffs.push(format!(
            "artefact sha256 {} != manifest {}",
            digest.sha256, manifest.artefact.sha256
        ));
    }
    let entries = read(path)?;
    for e in &entries {
        if e.uid != 0 || e.gid != 0 || e.mtime != manifest.source_date_epoch {
            diffs.push(format!(
                "{}: owner {}:{} mtime {}",
                e.name, e.uid, e.gid, e.mtime
            ));
        }
    }
    let got: Vec<ManifestEntry> = entries.iter().map(ManifestEntry::from_cpio).collect();
    if got.len() != manifest.entries.len() {
        diffs.push(format!(
            "{} entries in the archive, {} in the manifest",
            got.len(),
            manifest.entries.len()
        ));
    }
    for (g, m) in got.iter().zip(&manifest.entries) {
        if g != m {
            diffs.push(format!("archive has {g:?}, manifest {m:?}"));
        }
    }
    Ok(diffs)
}
