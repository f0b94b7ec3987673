//! Structured JSON logs (`tracing`), to stdout or to a vsock port.
//!
//! With `agent.log_vport=N` the agent listens on vsock port N, as upstream does, and once
//! the host connects every log line goes there; until then, and if the host goes away,
//! lines go to stdout (the console when we are PID 1).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogLevel;

/// The process that installed logging — its pid and PID namespace — so its forked
/// children stay silent.
static LOGGING_PROCESS: std::sync::OnceLock<(u32, u64)> = std::sync::OnceLock::new();

/// Inode of our PID namespace (0 if /proc is not there).
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// True in a process forked from the agent. A pid comparison alone is not enough: a
/// container's init is PID 1 of its own namespace, just as the agent is PID 1 of the
/// guest, so for PID 1 the namespace decides.
fn is_forked_child() -> bool {
    let Some(&(pid, pidns)) = LOGGING_PROCESS.get() else {
        return false;
    };
    let me = std::process::id();
    me != pid || (me == 1 && pid_namespace() != pidns)
}

/// Where log lines go: the vsock log connection when there is one, else stdout.
#[derive(Clone, Default)]
pub struct LogSink {
    vsock: Arc<Mutex<Option<std::fs::File>>>,
}

impl LogSink {
    /// True once a host is reading our logs over vsock.
    pub fn is_remote(&self) -> bool {
        self.vsock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn write_line(&self, buf: &[u8]) -> std::io::Result<()> {
        // A process forked from the agent (libcontainer's container init, before it
        // execs) must not log: its stdout is the container's by then, and the lock
        // below may have been held by another thread at fork time.
        if is_forked_child() {
            return Ok(());
        }
        let mut remote = self.vsock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = remote.as_mut() {
            if conn.write_all(buf).is_ok() {
                return Ok(());
            }
            // The host went away: fall back to the console rather than lose lines.
            *remote = None;
        }
        drop(remote);
        std::io::stdout().lock().write_all(buf)
    }
}

/// One log event's writer (tracing formats an event, then writes it in one call).
pub struct LineWriter(LogSink);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self.clone())
    }
}

/// Installs the global JSON subscriber at `level`, writing to stdout until
/// [`serve_vsock`] hands lines to a host reader.
pub fn init(level: LogLevel) -> LogSink {
    let _ = LOGGING_PROCESS.set((std::process::id(), pid_namespace()));
    let sink = LogSink::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_max_level(level.as_tracing())
        .with_writer(sink.clone())
        .finish();
    // Only fails if a subscriber is already set, which main() never does twice.
    let _ = tracing::subscriber::set_global_default(subscriber);
    sink
}

/// Starts listening for the host's log reader on vsock port `vport` (call it once the
/// vsock modules are loaded). Until a reader connects, lines keep going to stdout.
pub fn serve_vsock(sink: &LogSink, vport: u32) {
    match listen_vsock(vport) {
        Ok(listener) => {
            let target = sink.vsock.clone();
            std::thread::spawn(move || accept_log_reader(listener, target));
        }
        Err(e) => tracing::warn!(
            vport,
            error = %e,
            "cannot listen for the log reader on vsock; logging to the console"
        ),
    }
}

fn listen_vsock(port: u32) -> nix::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
    socket::listen(&fd, Backlog::new(1)?)?;
    Ok(fd)
}

fn accept_log_reader(listener: OwnedFd, target: Arc<Mutex<Option<std::fs::File>>>) {
    loop {
        match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => {
                // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
                let conn = unsafe { std::fs::File::from_raw_fd(fd) };
                *target.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
                tracing::info!("log reader connected over vsock");
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accepting the vsock log reader failed");
                return;
            }
        }
    }
}

/// Says `message` on the console even when logs go to vsock: harnesses and people wait
/// for some lines (`listening on ...`) there.
pub fn announce(sink: &LogSink, message: &str) {
    tracing::info!("{message}");
    if sink.is_remote() {
        let line = serde_json::json!({ "level": "INFO", "message": message });
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}
