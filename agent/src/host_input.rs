//! What the host hands the guest's kernel after a VM is restored: the time
//! (SetGuestDateTime) and entropy (ReseedRandomDev). In a confidential guest both are
//! untrusted input. They are accepted as upstream accepts them, and logged as coming
//! from the host; entropy is mixed in without being credited, so the kernel never counts
//! bytes the host chose as randomness (upstream credits them with `RNDADDTOENTCNT`).

use crate::error::{AgentError, Result};

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])` (linux `include/uapi/linux/random.h`).
const RNDADDENTROPY: u32 = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: u32 = 0x5207;
/// The random device upstream reseeds (`src/agent/src/random.rs` `RNGDEV`).
pub const RNG_DEV: &str = "/dev/random";

/// The checked time of a SetGuestDateTime request.
fn timespec(sec: i64, usec: i64) -> Result<libc::timespec> {
    // An empty request (0) would put the clock at 1970: refused, unlike upstream.
    if sec <= 0 {
        return Err(AgentError::invalid(
            "Sec",
            format!("{sec} is not after 1970-01-01"),
        ));
    }
    if !(0..1_000_000).contains(&usec) {
        return Err(AgentError::invalid(
            "Usec",
            format!("{usec} is not in 0..1000000"),
        ));
    }
    Ok(libc::timespec {
        tv_sec: sec,
        tv_nsec: usec * 1000,
    })
}

/// Sets the guest's realtime clock (upstream: `settimeofday`).
pub fn set_date_time(sec: i64, usec: i64) -> Result<()> {
    let ts = timespec(sec, usec)?;
    tracing::warn!(
        sec,
        usec,
        "SetGuestDateTime: setting the clock to a time that came from the untrusted host"
    );
    // SAFETY: `ts` is a valid, initialised timespec that outlives the call; the kernel
    // only reads it.
    let r = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(AgentError::internal("setting the clock", e));
    }
    Ok(())
}

/// The `struct rand_pool_info` RNDADDENTROPY takes: entropy_count (bits credited),
/// buf_size (bytes), then the bytes.
fn rand_pool_info(data: &[u8]) -> Result<Vec<u8>> {
    let size = i32::try_from(data.len()).map_err(|_| AgentError::invalid("data", "too long"))?;
    let mut buf = Vec::with_capacity(8 + data.len());
    buf.extend_from_slice(&0i32.to_ne_bytes());
    buf.extend_from_slice(&size.to_ne_bytes());
    buf.extend_from_slice(data);
    Ok(buf)
}

/// Mixes `data` into the kernel's pool through `device` (credited with 0 bits) and
/// reseeds the CRNG from it.
pub fn reseed(device: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::os::fd::AsRawFd;
    if data.is_empty() {
        return Err(AgentError::invalid("data", "missing entropy data"));
    }
    tracing::warn!(
        bytes = data.len(),
        "ReseedRandomDev: mixing in entropy that came from the untrusted host (not credited)"
    );
    let info = rand_pool_info(data)?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| AgentError::internal(&format!("opening {}", device.display()), e))?;
    // SAFETY: `f` is an open descriptor for the call's duration; `info` is a
    // rand_pool_info of exactly 8 + buf_size bytes that the kernel only reads.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(AgentError::internal("RNDADDENTROPY", e));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument; `f` is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as _, 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(AgentError::internal("RNDRESEEDCRNG", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_checked() {
        let ts = timespec(1_700_000_000, 250_000).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (1_700_000_000, 250_000_000));
        assert!(timespec(1, 0).is_ok());
        for (s, u, field) in [
            (-1, 0, "Sec"),
            (0, 0, "Sec"),
            (1, -1, "Usec"),
            (1, 1_000_000, "Usec"),
        ] {
            let e = timespec(s, u).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        }
    }

    #[test]
    fn pool_info_layout() {
        let b = rand_pool_info(b"abc").unwrap();
        assert_eq!(&b[..4], &0i32.to_ne_bytes());
        assert_eq!(&b[4..8], &3i32.to_ne_bytes());
        assert_eq!(&b[8..], b"abc");
        assert!(reseed(std::path::Path::new("/dev/null"), b"")
            .unwrap_err()
            .to_string()
            .contains("data"));
    }
}
