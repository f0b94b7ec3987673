//! A process's standard streams as the agent holds them: pipes, or a pty master for a
//! terminal process. Reads are long-polls that end with data, or with EOF once the
//! process side is closed (a pty master reads `EIO` then: also EOF).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use crate::error::{AgentError, Result};

/// Largest chunk one ReadStdout/ReadStderr returns.
pub const MAX_READ: usize = 1 << 20;

/// One non-blocking descriptor, readable and/or writable.
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
    /// One reader at a time, so chunks come out in order.
    read_lock: Mutex<()>,
}

impl FdStream {
    /// Takes `fd`, makes it non-blocking and registers it with the runtime.
    pub fn new(fd: OwnedFd) -> std::io::Result<FdStream> {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
        // SAFETY: `fd` is an owned descriptor that the AsyncFd keeps, unreplaced, until
        // it is dropped (and deregistered) with it.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(FdStream {
            fd,
            read_lock: Mutex::new(()),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Up to `len` bytes (at least 1 is asked for); an empty vector is EOF.
    pub async fn read(&self, len: usize) -> std::io::Result<Vec<u8>> {
        let _one = self.read_lock.lock().await;
        let mut buf = vec![0u8; len.clamp(1, MAX_READ)];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| {
                nix::unistd::read(inner.get_ref().as_raw_fd(), &mut buf).map_err(Into::into)
            }) {
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                // A pty master whose slave side is gone.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(Vec::new()),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, data: &[u8]) -> std::io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| {
                nix::unistd::write(inner.get_ref(), data.get(done..).unwrap_or_default())
                    .map_err(Into::into)
            }) {
                Ok(Ok(n)) => done += n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(done)
    }
}

/// The child's ends, handed to libcontainer, and ours.
pub struct StdioPipes {
    pub child_stdin: OwnedFd,
    pub child_stdout: OwnedFd,
    pub child_stderr: OwnedFd,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl StdioPipes {
    pub fn new() -> Result<StdioPipes> {
        let pipe =
            || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| AgentError::internal("pipe", e));
        let (child_stdin, stdin) = pipe()?;
        let (stdout, child_stdout) = pipe()?;
        let (stderr, child_stderr) = pipe()?;
        Ok(StdioPipes {
            child_stdin,
            child_stdout,
            child_stderr,
            stdin,
            stdout,
            stderr,
        })
    }
}

/// Sets a terminal's window size.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` through the pointer, which lives for the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if rc != 0 {
        return Err(AgentError::internal("TIOCSWINSZ", Errno::last()));
    }
    Ok(())
}

/// Receives one descriptor sent with `SCM_RIGHTS` on `sock` (the pty master that
/// libcontainer sends to a console socket).
pub fn receive_fd(sock: &std::os::unix::net::UnixStream) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| AgentError::internal("receiving the pty master", e))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| AgentError::internal("receiving the pty master", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed `fd` in our table for us; nobody
                // else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(AgentError::Internal(
        "console socket: no descriptor received".into(),
    ))
}
