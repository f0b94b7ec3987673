//! The layer unpacker: an uncompressed, unencrypted tar layer unpacked into a fresh
//! temporary directory (removed after each run). Input is capped at 64 KiB.
#![no_main]

use std::collections::BTreeMap;

use cocoon_image_pull::{unpack_layer, LayerDescriptor, NoKeys, UnpackOptions};
use libfuzzer_sys::fuzz_target;
use sha2::Digest as _;

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The input's real digest (blob and diff_id are the same for a plain tar), so that
    // the unpacker gets past the descriptor checks and parses the tar.
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
    let desc = LayerDescriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: digest.clone(),
        size: data.len() as u64,
        annotations: BTreeMap::new(),
    };
    let opts = UnpackOptions { same_owner: false };
    let _ = unpack_layer(&desc, &digest, data, &NoKeys, dir.path(), &opts);
    // Make everything removable again (the tar may have left read-only directories).
    fn chmod_all(p: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
                    chmod_all(&path);
                }
            }
        }
    }
    chmod_all(dir.path());
    dir.close().expect("tempdir removed");
});
