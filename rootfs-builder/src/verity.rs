//! dm-verity for a filesystem image: the hash tree is appended to the image by
//! `veritysetup` (Debian's `cryptsetup-bin`), without a superblock, and the kernel opens
//! it at boot from a `dm-mod.create=` table (see [`crate::spec::verity`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::verity as v;
use crate::tools::{command, run, ToolError};

/// What opening or checking the image needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerityInfo {
    pub root_hash: String,
    pub salt: String,
    pub hash_algorithm: String,
    pub data_block_size: u64,
    pub hash_block_size: u64,
    pub data_blocks: u64,
    /// Byte offset of the hash tree in the image (= data size).
    pub hash_offset: u64,
}

impl VerityInfo {
    /// Kernel command line that maps `device` as `/dev/dm-0` and mounts it as root.
    pub fn cmdline(&self, device: &str, fstype: &str) -> String {
        let sectors = self.data_blocks * self.data_block_size / v::SECTOR;
        let hash_start = self.hash_offset / self.hash_block_size;
        format!(
            "root=/dev/dm-0 rootfstype={fstype} ro init=/init \
             dm-mod.create=\"cocoon-root,,,ro,0 {sectors} verity {ver} {device} {device} \
             {dbs} {hbs} {blocks} {hash_start} {alg} {root} {salt}\"",
            ver = v::FORMAT_VERSION,
            dbs = self.data_block_size,
            hbs = self.hash_block_size,
            blocks = self.data_blocks,
            alg = self.hash_algorithm,
            root = self.root_hash,
            salt = self.salt,
        )
    }

    /// The `veritysetup` arguments that check `image` against this tree.
    pub fn verify_args(&self, image: &Path) -> Vec<String> {
        let img = image.display().to_string();
        vec![
            "verify".into(),
            "--no-superblock".into(),
            format!("--hash={}", self.hash_algorithm),
            format!("--data-block-size={}", self.data_block_size),
            format!("--hash-block-size={}", self.hash_block_size),
            format!("--data-blocks={}", self.data_blocks),
            format!("--hash-offset={}", self.hash_offset),
            format!("--salt={}", self.salt),
            img.clone(),
            img,
            self.root_hash.clone(),
        ]
    }
}

/// Appends a hash tree to `image`, whose current size must be a multiple of the block
/// size. `salt` is hex (the caller derives it from the content, for reproducibility).
pub fn format(image: &Path, salt: &str) -> Result<VerityInfo, ToolError> {
    let size = std::fs::metadata(image)
        .map_err(|e| ToolError::Io(image.to_path_buf(), e))?
        .len();
    if size == 0 || size % v::BLOCK_SIZE != 0 {
        return Err(ToolError::Invalid(format!(
            "{}: size {size} is not a multiple of {}",
            image.display(),
            v::BLOCK_SIZE
        )));
    }
    let data_blocks = size / v::BLOCK_SIZE;
    let mut cmd = command("veritysetup");
    cmd.arg("format")
        .arg("--no-superblock")
        .arg(format!("--hash={}", v::HASH))
        .arg(format!("--data-block-size={}", v::BLOCK_SIZE))
        .arg(format!("--hash-block-size={}", v::BLOCK_SIZE))
        .arg(format!("--data-blocks={data_blocks}"))
        .arg(format!("--hash-offset={size}"))
        .arg(format!("--salt={salt}"))
        .arg(image)
        .arg(image);
    let out = run(&mut cmd)?;
    let root_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| ToolError::Invalid(format!("veritysetup printed no root hash: {out}")))?;
    Ok(VerityInfo {
        root_hash,
        salt: salt.to_string(),
        hash_algorithm: v::HASH.into(),
        data_block_size: v::BLOCK_SIZE,
        hash_block_size: v::BLOCK_SIZE,
        data_blocks,
        hash_offset: size,
    })
}

/// Runs `veritysetup verify`; `Ok(false)` when the image does not match.
pub fn verify(image: &Path, info: &VerityInfo) -> Result<bool, ToolError> {
    let mut cmd = command("veritysetup");
    cmd.args(info.verify_args(image));
    match run(&mut cmd) {
        Ok(_) => Ok(true),
        Err(ToolError::Failed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
