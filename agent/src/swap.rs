//! AddSwap and AddSwapPath, as upstream's agent does them (`src/agent/src/rpc.rs`
//! `do_add_swap`, `do_add_swap_path`): `swapon(2)` with no flags on the virtio-blk
//! device at a PCI path (the runtime `mkswap`s a file on the host and hot-plugs it), or
//! on a path in the guest.
//!
//! Before the kernel is asked, the header is checked here: a swap area made by `mkswap`
//! ends its first page with `SWAPSPACE2` (the kernel's `union swap_header`), so a
//! device or file that is not one is refused with FAILED_PRECONDITION naming it.
//!
//! In a confidential guest swapped-out pages are written to the device **in the
//! clear**: a host-provided disk would show the host the guest's memory. The
//! confidential default policy refuses both requests (as genpolicy's default does); a
//! tenant policy that allows them takes that on. Each swapon is logged.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::error::{AgentError, Result};

/// The last 10 bytes of a swap area's first page (linux/include/linux/swap.h
/// `union swap_header`, `magic.magic`; version 1 areas, what `mkswap` writes).
pub const SWAP_MAGIC: &[u8; 10] = b"SWAPSPACE2";

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

fn check_path(field: &str, p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(AgentError::invalid(
            field,
            format!("{p:?} is not a clean absolute path"),
        ));
    }
    Ok(path.to_path_buf())
}

/// Whether `path` starts with a swap header for a `page` bytes page.
pub fn check_header(path: &Path, page: usize) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            AgentError::not_found("swap device", path.display().to_string())
        }
        _ => AgentError::internal(&format!("opening {}", path.display()), e),
    })?;
    let mut first = Vec::with_capacity(page);
    let n = f
        .take(page as u64)
        .read_to_end(&mut first)
        .map_err(|e| AgentError::internal(&format!("reading {}", path.display()), e))?;
    let tail = page
        .checked_sub(SWAP_MAGIC.len())
        .and_then(|at| first.get(at..page));
    if n < page || tail != Some(SWAP_MAGIC) {
        return Err(AgentError::FailedPrecondition(format!(
            "{} is not a swap area (no SWAPSPACE2 signature at byte {}): mkswap it first",
            path.display(),
            page - SWAP_MAGIC.len()
        )));
    }
    Ok(())
}

/// Checks the header, then `swapon(path, 0)`.
pub fn swapon(path: &Path) -> Result<()> {
    check_header(path, page_size())?;
    let c =
        CString::new(path.as_os_str().as_bytes()).map_err(|e| AgentError::invalid("path", e))?;
    tracing::info!(path = %path.display(), "swapon (swapped pages are written to this device unencrypted)");
    // SAFETY: `c` is a NUL-terminated string that outlives the call; swapon only reads it.
    let r = unsafe { libc::swapon(c.as_ptr(), 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(AgentError::internal(
            &format!("swapon {}", path.display()),
            e,
        ));
    }
    Ok(())
}

/// AddSwapPath.
pub fn add_swap_path(path: &str) -> Result<()> {
    let p = check_path("path", path)?;
    swapon(&p)
}

/// A PCI path as the agent's storages name it (`02/01`: each slot in hex).
pub fn pci_path(slots: &[u32]) -> Result<String> {
    if slots.is_empty() {
        return Err(AgentError::invalid("PCIPath", "empty"));
    }
    let parts = slots
        .iter()
        .map(|&s| {
            // A PCI slot is 5 bits (upstream's `SlotFn::new` refuses anything above).
            if s > 0x1f {
                Err(AgentError::invalid(
                    "PCIPath",
                    format!("slot {s:#x} > 0x1f"),
                ))
            } else {
                Ok(format!("{s:02x}"))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(parts.join("/"))
}

/// AddSwap: the virtio-blk device at the PCI path, awaited for `hotplug`.
pub fn add_swap(slots: &[u32], hotplug: Duration) -> Result<()> {
    let pci = pci_path(slots)?;
    let dev = crate::storage::wait_for_device(&pci, hotplug)?;
    swapon(&dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_paths() {
        assert_eq!(pci_path(&[2]).unwrap(), "02");
        assert_eq!(pci_path(&[2, 0x1f]).unwrap(), "02/1f");
        assert!(pci_path(&[]).is_err());
        assert!(pci_path(&[0x20]).is_err());
    }

    #[test]
    fn headers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("swap");
        let mut page = vec![0u8; 4096];
        std::fs::write(&f, &page).unwrap();
        let e = check_header(&f, 4096).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::FAILED_PRECONDITION);
        assert!(e.to_string().contains("SWAPSPACE2"), "{e}");
        page[4086..].copy_from_slice(SWAP_MAGIC);
        std::fs::write(&f, &page).unwrap();
        check_header(&f, 4096).unwrap();
        // The signature belongs at the end of the page size in use.
        assert!(check_header(&f, 8192).is_err());
        std::fs::write(&f, b"short").unwrap();
        assert!(check_header(&f, 4096).is_err());
        assert_eq!(
            check_header(&dir.path().join("none"), 4096)
                .unwrap_err()
                .code(),
            ttrpc::Code::NOT_FOUND
        );
        assert!(add_swap_path("relative").is_err());
        assert!(add_swap_path("/a/../b").is_err());
    }
}
