//! Mount and bundle-directory helpers shared by the pod's stages.

use std::path::Path;

use crate::error::{AgentError, Result};

/// A private bind mount of `src` on `dst`.
pub fn bind_mount(src: &Path, dst: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
        AgentError::internal(
            &format!("bind-mounting {} on {}", src.display(), dst.display()),
            e,
        )
    })?;
    let _ = mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    Ok(())
}

/// Removes a bundle without ever recursing into its rootfs (whose mount may still be
/// there if unmounting failed): our files, then empty directories only.
pub fn remove_bundle(bundle: &Path) {
    if let Ok(dir) = std::fs::read_dir(bundle) {
        for e in dir.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(&path);
            } else {
                let _ = std::fs::remove_dir(&path);
            }
        }
    }
    let _ = std::fs::remove_dir(bundle);
}
