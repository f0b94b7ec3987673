//! Structured JSON logs (`tracing`), to stdout or to a vsock port.
//!
//! With `agent.log_vport=N` the agent listens on vsock port N, as upstream does, and once
//! the host connects every log line goes there; until then, and if the host goes away,
//! lines go to stdout (the console when we are PID 1).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use std::time::{Duration, Instant};

use nix::sys::socket::{self, SockFlag};
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

/// Most bytes of log lines waiting for a slow vsock reader; more are dropped (counted).
const QUEUE_BYTES: usize = 1 << 20;
/// Most log lines waiting for a slow vsock reader.
const QUEUE_LINES: usize = 4096;

/// Where log lines go: the vsock log connection when there is one, else stdout.
#[derive(Clone, Default)]
pub struct LogSink {
    remote: Arc<Mutex<Option<Arc<Remote>>>>,
}

/// Lines waiting for the writer thread of one vsock reader.
#[derive(Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Replaced by a new reader: the writer thread stops.
    closed: bool,
    /// The writer thread has a line out of the queue, not yet written.
    writing: bool,
}

/// One connected log reader. Logging only queues (never blocks on the host): a thread
/// writes the queue to the connection; when the queue is full lines are dropped and
/// counted, and the count is written as a line of its own once the reader catches up.
struct Remote {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Signalled whenever the writer finished a line or stopped (for [`LogSink::flush`]).
    written: Condvar,
    dropped: AtomicU64,
    /// False once a write failed (the reader went away): lines go to stdout again.
    alive: AtomicBool,
    /// The connection, to shut it down (and so unblock its writer) when replaced.
    conn: std::fs::File,
}

impl Remote {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut q = self.lock();
        if q.lines.len() >= QUEUE_LINES || q.bytes.saturating_add(line.len()) > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.bytes += line.len();
        q.lines.push_back(line.to_vec());
        drop(q);
        self.ready.notify_one();
    }

    /// The next line to write; `None` once closed.
    fn pop(&self) -> Option<Vec<u8>> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if let Some(line) = q.lines.pop_front() {
                q.bytes -= line.len();
                q.writing = true;
                return Some(line);
            }
            q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn done_writing(&self) {
        self.lock().writing = false;
        self.written.notify_all();
    }

    /// Waits until every queued line is written, or `deadline`.
    fn flush(&self, deadline: Instant) {
        let mut q = self.lock();
        while (q.writing || !q.lines.is_empty()) && !q.closed && self.alive.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            q = self
                .written
                .wait_timeout(q, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.written.notify_all();
        let _ = socket::shutdown(self.conn.as_raw_fd(), socket::Shutdown::Both);
    }

    /// The writer thread's loop: the queue to the connection, with the drop reports.
    fn drain(&self, mut conn: std::fs::File) {
        while let Some(line) = self.pop() {
            if conn.write_all(&line).is_err() {
                break;
            }
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let report = serde_json::json!({
                    "level": "WARN",
                    "message": format!("{dropped} log lines dropped"),
                    "dropped": dropped,
                    "target": module_path!(),
                });
                if writeln!(conn, "{report}").is_err() {
                    break;
                }
            }
            self.done_writing();
        }
        self.alive.store(false, Ordering::SeqCst);
        self.done_writing();
    }
}

impl LogSink {
    /// True once a host is reading our logs over vsock.
    pub fn is_remote(&self) -> bool {
        self.current()
            .is_some_and(|r| r.alive.load(Ordering::SeqCst))
    }

    fn current(&self) -> Option<Arc<Remote>> {
        self.remote
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends every later line to `conn` (replacing an earlier reader), through a queue
    /// and a writer thread of its own.
    pub fn attach(&self, conn: std::fs::File) -> std::io::Result<()> {
        let remote = Arc::new(Remote {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            written: Condvar::new(),
            dropped: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            conn: conn.try_clone()?,
        });
        let writer = remote.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.drain(conn))?;
        let old = self
            .remote
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(remote);
        if let Some(old) = old {
            old.close();
        }
        Ok(())
    }

    /// Waits (at most `within`) until the lines logged so far reached the vsock reader:
    /// call it before powering off, or the last lines may still be queued.
    pub fn flush(&self, within: Duration) {
        if let Some(remote) = self.current() {
            let deadline = Instant::now()
                .checked_add(within)
                .unwrap_or_else(Instant::now);
            remote.flush(deadline);
        }
    }

    /// Lines dropped (not yet reported) because the reader did not keep up.
    pub fn dropped(&self) -> u64 {
        self.current()
            .map_or(0, |r| r.dropped.load(Ordering::Relaxed))
    }

    fn write_line(&self, buf: &[u8]) -> std::io::Result<()> {
        // A process forked from the agent (libcontainer's container init, before it
        // execs) must not log: its stdout is the container's by then, and the lock
        // below may have been held by another thread at fork time.
        if is_forked_child() {
            return Ok(());
        }
        if let Some(remote) = self.current() {
            if remote.alive.load(Ordering::SeqCst) {
                remote.push(buf);
                return Ok(());
            }
            // The host went away: fall back to the console rather than lose lines.
        }
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

/// The sink [`init`] installed, for [`flush`].
static INSTALLED: std::sync::OnceLock<LogSink> = std::sync::OnceLock::new();

/// [`LogSink::flush`] of the installed sink: before powering off, so the last lines reach
/// the vsock reader.
pub fn flush(within: Duration) {
    if let Some(sink) = INSTALLED.get() {
        sink.flush(within);
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
    let _ = INSTALLED.set(sink.clone());
    sink
}

/// Tests only (like `COCOON_RUN_DIR`): a unix socket path the log reader connects to
/// instead of vsock port `agent.log_vport` (the test host has no vsock loopback).
pub const ENV_LOG_ADDR: &str = "COCOON_LOG_ADDR";

/// Starts listening for the host's log reader on vsock port `vport` (call it once the
/// vsock modules are loaded). Until a reader connects, lines keep going to stdout.
pub fn serve_vsock(sink: &LogSink, vport: u32) {
    let listener = match std::env::var_os(ENV_LOG_ADDR) {
        Some(path) => std::os::unix::net::UnixListener::bind(path).map(OwnedFd::from),
        // Bound the way the ttrpc server's socket is (close-on-exec).
        None => crate::server::listen(&crate::config::ServerAddr::Vsock {
            cid: None,
            port: vport,
        })
        .map(crate::server::Listening::into_fd)
        .map_err(|e| std::io::Error::other(e.to_string())),
    };
    match listener {
        Ok(listener) => {
            let target = sink.clone();
            let started = std::thread::Builder::new()
                .name("log-accept".into())
                .spawn(move || accept_log_reader(listener, target));
            if let Err(e) = started {
                tracing::warn!(
                    vport,
                    error = %e,
                    "cannot start the vsock log listener thread; logging to the console"
                );
            }
        }
        Err(e) => tracing::warn!(
            vport,
            error = %e,
            "cannot listen for the log reader on vsock; logging to the console"
        ),
    }
}

fn accept_log_reader(listener: OwnedFd, target: LogSink) {
    loop {
        match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => {
                // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
                let conn = unsafe { std::fs::File::from_raw_fd(fd) };
                match target.attach(conn) {
                    Ok(()) => tracing::info!("log reader connected over vsock"),
                    Err(e) => tracing::warn!(error = %e, "cannot serve the vsock log reader"),
                }
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

/// Before [`init`]: says `message` on stdout (the console, as PID 1) as a line of the same
/// shape as the subscriber's (`timestamp`, `level`, `message`, `target`), without it. PID 1
/// announces its listen this way: the subscriber's set-up and first event are cold code
/// that, under emulation, take longer than everything else before the listen.
pub fn announce_early(message: &str) {
    use tracing_subscriber::fmt::time::FormatTime;
    let mut timestamp = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(
        &mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp),
    );
    let _ = std::io::stdout()
        .lock()
        .write_all(early_line(&timestamp, message).as_bytes());
}

fn early_line(timestamp: &str, message: &str) -> String {
    format!(
        "{{\"timestamp\":\"{timestamp}\",\"level\":\"INFO\",\"message\":{},\"target\":\"{}\"}}\n",
        serde_json::Value::from(message),
        module_path!()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    #[test]
    fn early_lines_have_the_subscribers_shape() {
        let line = early_line("2026-12-03T13:30:47.537853Z", "listening on \"x\"");
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2026-12-03T13:30:47.537853Z",
                "level": "INFO",
                "message": "listening on \"x\"",
                "target": "cocoon_agent::logging",
            })
        );
    }

    #[test]
    fn flush_waits_for_the_reader_and_is_bounded() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let sink = LogSink::default();
        sink.attach(std::fs::File::from(OwnedFd::from(ours)))
            .unwrap();
        let line = format!("{{\"message\":\"{}\"}}\n", "y".repeat(1000));
        for _ in 0..1000 {
            sink.write_line(line.as_bytes()).unwrap();
        }
        // Nobody reads: flush gives up at its bound.
        let start = Instant::now();
        sink.flush(Duration::from_millis(200));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // A reader drains it: flush returns once everything was written.
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            for l in BufReader::new(theirs).lines() {
                if l.is_err() {
                    break;
                }
                n += 1;
            }
            n
        });
        sink.flush(Duration::from_secs(10));
        let remote = sink.current().unwrap();
        assert!(remote.lock().lines.is_empty() && !remote.lock().writing);
        // Everything was written before flush returned: closing now loses nothing.
        remote.close();
        assert_eq!(reader.join().unwrap(), 1000);
    }

    #[test]
    fn a_reader_that_never_reads_does_not_block_logging() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let sink = LogSink::default();
        sink.attach(std::fs::File::from(OwnedFd::from(ours)))
            .unwrap();
        assert!(sink.is_remote());

        // Far more than the socket buffer and the queue hold: with a blocking write
        // the first few hundred lines would fill the socket and the call would hang.
        let line = format!("{{\"message\":\"{}\"}}\n", "x".repeat(200));
        let n = 50_000;
        let start = Instant::now();
        let mut writer = sink.make_writer();
        for _ in 0..n {
            writer.write_all(line.as_bytes()).unwrap();
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "logging took {took:?}");
        assert!(sink.dropped() > 0, "nothing dropped");

        // The reader catches up: every line it gets is whole, and the drop is reported.
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(theirs);
        let mut got = 0u64;
        let mut reported = 0u64;
        let mut text = String::new();
        while got + reported < n {
            text.clear();
            assert!(reader.read_line(&mut text).unwrap() > 0);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(d) = v["dropped"].as_u64() {
                assert_eq!(v["message"], format!("{d} log lines dropped"));
                reported += d;
            } else {
                got += 1;
            }
        }
        assert!(reported > 0);
        assert_eq!(got + reported, n, "every line delivered or counted");
    }

    #[test]
    fn a_gone_reader_sends_lines_back_to_stdout() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let sink = LogSink::default();
        sink.attach(std::fs::File::from(OwnedFd::from(ours)))
            .unwrap();
        drop(theirs);
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.is_remote() {
            assert!(Instant::now() < deadline, "still remote");
            sink.write_line(b"{}\n").unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
