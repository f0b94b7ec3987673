//! Containers on youki's `libcontainer`: create (bundle, rootfs bind mount, config.json,
//! libcontainer init), start, exec, signal, pause/resume, remove. Every libcontainer
//! call runs on a blocking thread while holding [`Reaper::exclusive`], because
//! libcontainer waits for its own intermediate processes.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as LcContainer;
use libcontainer::syscall::syscall::SyscallType;
use nix::mount::{umount2, MntFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{AgentError, Result};
use crate::mounts::{bind_mount, remove_bundle};
use crate::namespaces::SharedNamespaces;
use crate::paths::Paths;
use crate::process::{AgentStdio, Process};
use crate::reaper::Reaper;
use crate::streams::{receive_fd, set_winsize, StdioPipes};

/// How long to wait for a pty master from libcontainer.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

static CONSOLE_SEQ: AtomicU64 = AtomicU64::new(0);

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    state_dir: PathBuf,
    /// Our bind mount of the requested root on `<bundle>/rootfs`.
    rootfs_mount: Option<PathBuf>,
    pub init: Arc<Process>,
    execs: Mutex<Execs>,
    started: AtomicBool,
    pub cgroup_path: String,
    /// OOM kills already reported by GetOOMEvent.
    pub oom_reported: AtomicU64,
    paths: Paths,
    /// The container's seccomp profile, also installed for every exec (libcontainer's
    /// tenant builder does not carry it over, runc's exec does).
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

/// The executor of an exec in a container with a seccomp profile: installs the profile
/// just before the exec, as libcontainer does for the init process. libcontainer has
/// dropped the capabilities by then, so a process without `noNewPrivileges` (where runc
/// installs the filter before dropping them) gets `no_new_privs` set first: the profile
/// is always enforced, at the cost of setuid binaries not gaining privileges in execs.
#[derive(Clone)]
struct SeccompExecExecutor {
    seccomp: oci_spec::runtime::LinuxSeccomp,
}

impl libcontainer::workload::Executor for SeccompExecExecutor {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        let install = || libcontainer::seccomp::initialize_seccomp(&self.seccomp);
        if let Err(first) = install() {
            // EACCES without CAP_SYS_ADMIN and no_new_privs: set it and try once more.
            nix::sys::prctl::set_no_new_privs()
                .map_err(|e| ExecutorError::Other(format!("seccomp: no_new_privs: {e}")))?;
            install().map_err(|e| {
                ExecutorError::Other(format!("seccomp for the exec: {e} (first try: {first})"))
            })?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// Is `/` an initramfs (rootfs or tmpfs)? Then pivot_root cannot be used.
fn root_is_initramfs() -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    match nix::sys::statfs::statfs("/") {
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => {
            let t = s.filesystem_type().0 as i64;
            t == RAMFS_MAGIC || t == TMPFS_MAGIC
        }
        Err(_) => false,
    }
}

fn lc_err(context: &str) -> impl Fn(libcontainer::error::LibcontainerError) -> AgentError + '_ {
    move |e| AgentError::Internal(format!("{context}: {e}"))
}

/// Runs `f` on a blocking thread with the reaper held off.
async fn blocking<T: Send + 'static>(
    reaper: &Reaper,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let reaper = reaper.clone();
    tokio::task::spawn_blocking(move || {
        let _exclusive = reaper.exclusive();
        f()
    })
    .await
    .map_err(|e| AgentError::internal("blocking task", e))?
}

/// A unix socket libcontainer sends a terminal's pty master to.
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new(paths: &Paths) -> Result<ConsoleSocket> {
        let dir = paths.console_dir();
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::internal("console dir", e))?;
        let n = CONSOLE_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|e| AgentError::internal("console socket", e))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The pty master libcontainer sent (it connected while building).
    fn receive(&self) -> Result<OwnedFd> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| AgentError::internal("console socket", e))?;
        let deadline = std::time::Instant::now() + CONSOLE_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        return Err(AgentError::Internal("no console connection".into()));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(AgentError::internal("console accept", e)),
            }
        };
        stream
            .set_nonblocking(false)
            .and_then(|_| stream.set_read_timeout(Some(CONSOLE_TIMEOUT)))
            .map_err(|e| AgentError::internal("console socket", e))?;
        receive_fd(&stream)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Stdio for a new process: pipes, or a console socket for a terminal.
enum Launch {
    Pipes(Option<[OwnedFd; 3]>, Option<AgentStdio>),
    Tty(ConsoleSocket),
}

impl Launch {
    fn new(terminal: bool, paths: &Paths) -> Result<Launch> {
        if terminal {
            Ok(Launch::Tty(ConsoleSocket::new(paths)?))
        } else {
            let (ours, theirs) = AgentStdio::from_pipes(StdioPipes::new()?);
            Ok(Launch::Pipes(Some(theirs), Some(ours)))
        }
    }

    fn configure(&mut self, b: ContainerBuilder) -> ContainerBuilder {
        match self {
            Launch::Pipes(theirs, _) => match theirs.take() {
                Some([i, o, e]) => b.with_stdin(i).with_stdout(o).with_stderr(e),
                None => b,
            },
            Launch::Tty(sock) => b.with_console_socket(Some(sock.path.clone())),
        }
    }

    /// Our side, once libcontainer has started the process.
    fn finish(mut self, size: Option<(u16, u16)>) -> Result<AgentStdio> {
        match &mut self {
            Launch::Pipes(_, ours) => ours
                .take()
                .ok_or_else(|| AgentError::Internal("stdio taken twice".into())),
            Launch::Tty(sock) => {
                let master = sock.receive()?;
                if let Some((rows, cols)) = size.filter(|(r, c)| *r > 0 && *c > 0) {
                    set_winsize(std::os::fd::AsRawFd::as_raw_fd(&master), rows, cols)?;
                }
                Ok(AgentStdio::Tty(master))
            }
        }
    }
}

/// What CreateContainer asks for, checked.
pub struct CreateParams {
    pub id: String,
    pub spec: Spec,
    pub shared_ns: Option<Arc<SharedNamespaces>>,
    /// A PID namespace to join (`sandbox_pidns`: the pod's first container's).
    pub pid_ns: Option<PathBuf>,
}

fn console_size(spec: &Spec) -> Option<(u16, u16)> {
    let b = spec.process().as_ref()?.console_size()?;
    Some((
        u16::try_from(b.height()).unwrap_or(u16::MAX),
        u16::try_from(b.width()).unwrap_or(u16::MAX),
    ))
}

/// Points the spec at the bundle's rootfs, the pod's namespaces and our cgroup.
fn adapt_spec(
    spec: &mut Spec,
    shared_ns: Option<&SharedNamespaces>,
    pid_ns: Option<&Path>,
    rootfs: &Path,
    cgroup_path: &str,
) -> Result<()> {
    let mut root = spec
        .root()
        .clone()
        .ok_or_else(|| AgentError::invalid("OCI.Root", "missing"))?;
    root.set_path(rootfs.to_path_buf());
    spec.set_root(Some(root));
    let mut linux = spec
        .linux()
        .clone()
        .ok_or_else(|| AgentError::invalid("OCI.Linux", "missing"))?;
    linux.set_cgroups_path(Some(PathBuf::from(cgroup_path)));
    // A network namespace path from the host (the runtime's netns) means nothing in the
    // guest: the container uses the VM's network, which UpdateInterface configured.
    if let Some(list) = linux.namespaces().clone() {
        let kept: Vec<_> = list
            .into_iter()
            .filter(|n| {
                let foreign = n.typ() == LinuxNamespaceType::Network
                    && n.path().as_ref().is_some_and(|p| !p.exists());
                if foreign {
                    tracing::info!(path = ?n.path(), "dropping a network namespace path unknown in the guest");
                }
                !foreign
            })
            .collect();
        linux.set_namespaces(Some(kept));
    }
    if let Some(ns) = shared_ns {
        let mut list = linux.namespaces().clone().unwrap_or_default();
        for n in list.iter_mut() {
            match n.typ() {
                LinuxNamespaceType::Uts if n.path().is_none() => {
                    n.set_path(Some(PathBuf::from(SharedNamespaces::path_of(&ns.uts))));
                }
                LinuxNamespaceType::Ipc if n.path().is_none() => {
                    n.set_path(Some(PathBuf::from(SharedNamespaces::path_of(&ns.ipc))));
                }
                _ => {}
            }
        }
        // The pod's hostname is set in its UTS namespace.
        spec.set_hostname(None);
        linux.set_namespaces(Some(list));
    }
    // The pod's PID namespace to join, else one of the container's own: the Kata runtime
    // takes the PID namespace out of every spec (the host's means nothing here), so a
    // spec without one must not leave the container in the guest's, beside the agent
    // and every other container (kata-agent likewise always adds one).
    let mut list = linux.namespaces().clone().unwrap_or_default();
    if let Some(path) = pid_ns {
        list.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        let mut ns = oci_spec::runtime::LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Pid);
        ns.set_path(Some(path.to_path_buf()));
        list.push(ns);
    } else if !list.iter().any(|n| n.typ() == LinuxNamespaceType::Pid) {
        let mut ns = oci_spec::runtime::LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Pid);
        list.push(ns);
    }
    linux.set_namespaces(Some(list));
    spec.set_linux(Some(linux));
    Ok(())
}

impl Container {
    /// Creates the container (its init waits for StartContainer). On error nothing is
    /// left behind: no state, no cgroup, no mount, no bundle.
    pub async fn create(paths: &Paths, reaper: &Reaper, mut p: CreateParams) -> Result<Container> {
        let bundle = paths.bundle(&p.id);
        // The bundle directory itself may exist already: a storage (block device, guest
        // pull) mounts the rootfs at `<bundle>/rootfs`.
        if bundle.join("config.json").exists() {
            return Err(AgentError::AlreadyExists {
                what: "container bundle",
                id: p.id.clone(),
            });
        }
        let requested_root = p
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| AgentError::invalid("OCI.Root.Path", "missing"))?;
        let requested_root = if requested_root.is_absolute() {
            requested_root
        } else {
            bundle.join(requested_root)
        };
        let rootfs = bundle.join("rootfs");
        let spec_cgroup = p
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone());
        let cgroup_path = paths.cgroup_path(&p.id, spec_cgroup.as_deref());
        let shared_ns = p.shared_ns.clone();
        let pid_ns = p.pid_ns.clone();
        adapt_spec(
            &mut p.spec,
            shared_ns.as_deref(),
            pid_ns.as_deref(),
            &rootfs,
            &cgroup_path,
        )?;
        let terminal = p
            .spec
            .process()
            .as_ref()
            .and_then(|pr| pr.terminal())
            .unwrap_or(false);
        let size = console_size(&p.spec);

        let cleanup = Cleanup {
            bundle: bundle.clone(),
            rootfs_mount: None,
            state: paths.state_dir().join(&p.id),
            armed: true,
        };
        let mut cleanup = cleanup;
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| AgentError::internal("creating the bundle", e))?;
        if requested_root != rootfs {
            if !requested_root.is_dir() {
                return Err(AgentError::invalid(
                    "OCI.Root.Path",
                    format!("{} is not a directory", requested_root.display()),
                ));
            }
            bind_mount(&requested_root, &rootfs)?;
            cleanup.rootfs_mount = Some(rootfs.clone());
        }
        p.spec
            .save(bundle.join("config.json"))
            .map_err(|e| AgentError::internal("writing config.json", e))?;
        let seccomp = p.spec.linux().as_ref().and_then(|l| l.seccomp().clone());

        let mut launch = Launch::new(terminal, paths)?;
        let state_dir = paths.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|e| AgentError::internal("state dir", e))?;
        let id = p.id.clone();
        let b = bundle.clone();
        let held = reaper.clone();
        let (child, launch) = blocking(reaper, move || {
            let builder = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(&state_dir)
                .map_err(lc_err("container state directory"))?;
            let builder = launch.configure(builder);
            let built = builder
                .as_init(&b)
                .with_systemd(false)
                .with_detach(true)
                .with_no_pivot(root_is_initramfs())
                .build();
            let container = match built {
                Ok(c) => c,
                Err(e) => {
                    // libcontainer may have left its state and cgroup behind.
                    if let Ok(mut c) = LcContainer::load(state_dir.join(&id)) {
                        let _ = c.delete(true);
                    }
                    return Err(AgentError::FailedPrecondition(format!(
                        "creating container {id}: {e}"
                    )));
                }
            };
            let pid = container
                .pid()
                .ok_or_else(|| AgentError::Internal("created container has no pid".into()))?;
            // The reaper is held off: the init cannot have been reaped, so the pidfd is
            // of our process.
            match held.adopt_watched(pid.as_raw()) {
                Ok(child) => Ok((child, launch)),
                Err(e) => {
                    let mut container = container;
                    let _ = container.delete(true);
                    Err(AgentError::internal("pidfd_open of the container init", e))
                }
            }
        })
        .await?;
        let stdio = match tokio::task::spawn_blocking(move || launch.finish(size)).await {
            Ok(r) => r,
            Err(e) => Err(AgentError::internal("console", e)),
        };
        let stdio = match stdio {
            Ok(s) => s,
            Err(e) => {
                let _ = child.pidfd.signal(nix::sys::signal::Signal::SIGKILL);
                force_delete(reaper, paths, &p.id).await;
                return Err(e);
            }
        };
        let init = Process::new(&p.id, child, stdio)?;
        cleanup.armed = false;
        Ok(Container {
            id: p.id,
            bundle,
            state_dir: paths.state_dir(),
            rootfs_mount: cleanup.rootfs_mount.take(),
            init: Arc::new(init),
            execs: Mutex::new(Execs::default()),
            started: AtomicBool::new(false),
            oom_reported: AtomicU64::new(0),
            cgroup_path,
            paths: paths.clone(),
            seccomp,
        })
    }

    fn load(&self) -> Result<LcContainer> {
        LcContainer::load(self.state_dir.join(&self.id)).map_err(lc_err("loading container state"))
    }

    pub async fn start(&self, reaper: &Reaper) -> Result<()> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(AgentError::FailedPrecondition(format!(
                "container {} is already started",
                self.id
            )));
        }
        let mut c = self.load()?;
        let r = blocking(reaper, move || {
            c.start()
                .map_err(|e| AgentError::FailedPrecondition(format!("starting container: {e}")))
        })
        .await;
        if r.is_err() {
            self.started.store(false, Ordering::SeqCst);
        }
        r
    }

    fn lock_execs(&self) -> MutexGuard<'_, Execs> {
        lock_execs(&self.execs)
    }

    /// Reserves `exec_id` for an ExecProcess, checked and taken under one lock: of two
    /// calls with the same id, exactly one gets it.
    fn reserve_exec(&self, exec_id: &str) -> Result<ExecReservation<'_>> {
        let mut execs = self.lock_execs();
        let live = execs
            .running
            .get(exec_id)
            .is_some_and(|p| p.exit_code().is_none());
        if exec_id == self.id || live || execs.starting.contains(exec_id) {
            return Err(AgentError::AlreadyExists {
                what: "process",
                id: exec_id.to_string(),
            });
        }
        execs.starting.insert(exec_id.to_string());
        Ok(ExecReservation {
            execs: &self.execs,
            id: exec_id.to_string(),
            committed: false,
        })
    }

    /// The init process (`exec_id` = container id) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id == self.id || exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.lock_execs()
            .running
            .get(exec_id)
            .cloned()
            .ok_or_else(|| AgentError::not_found("process", exec_id))
    }

    pub fn forget_exec(&self, exec_id: &str) {
        self.lock_execs().running.remove(exec_id);
    }

    /// Starts `process` (OCI process JSON) in the running container.
    pub async fn exec(
        &self,
        reaper: &Reaper,
        exec_id: &str,
        process: serde_json::Value,
    ) -> Result<()> {
        let reservation = self.reserve_exec(exec_id)?;
        if self.init.exit_code().is_some() || !self.started.load(Ordering::SeqCst) {
            return Err(AgentError::FailedPrecondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        let terminal = process
            .get("terminal")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let size = process
            .get("consoleSize")
            .and_then(|v| v.as_object())
            .map(|b| {
                let n = |k: &str| {
                    u16::try_from(b.get(k).and_then(|v| v.as_u64()).unwrap_or(0))
                        .unwrap_or(u16::MAX)
                };
                (n("height"), n("width"))
            });
        let file = self.bundle.join(format!("exec-{exec_id}.json"));
        std::fs::write(&file, process.to_string())
            .map_err(|e| AgentError::internal("writing the exec process", e))?;
        let mut launch = Launch::new(terminal, &self.paths)?;
        let id = self.id.clone();
        let state_dir = self.state_dir.clone();
        let f = file.clone();
        let held = reaper.clone();
        let seccomp = self.seccomp.clone();
        let built = blocking(reaper, move || {
            let mut builder = ContainerBuilder::new(id, SyscallType::default())
                .with_root_path(&state_dir)
                .map_err(lc_err("container state directory"))?;
            if let Some(seccomp) = seccomp {
                builder = builder.with_executor(SeccompExecExecutor { seccomp });
            }
            let pid = launch
                .configure(builder)
                .as_tenant()
                .with_detach(true)
                .with_process(Some(&f))
                .build()
                .map_err(|e| AgentError::FailedPrecondition(format!("exec: {e}")))?;
            // Reaper held off: the process cannot have been reaped yet. (Should this
            // fail, the process stays in the container's cgroup, killed with it.)
            let child = held
                .adopt_watched(pid.as_raw())
                .map_err(|e| AgentError::internal("pidfd_open of the exec", e))?;
            Ok((child, launch))
        })
        .await;
        let _ = std::fs::remove_file(&file);
        let (child, launch) = built?;
        let stdio = match tokio::task::spawn_blocking(move || launch.finish(size)).await {
            Ok(r) => r,
            Err(e) => Err(AgentError::internal("console", e)),
        };
        let stdio = match stdio {
            Ok(s) => s,
            Err(e) => {
                let _ = child.pidfd.signal(nix::sys::signal::Signal::SIGKILL);
                return Err(e);
            }
        };
        let p = Process::new(exec_id, child, stdio)?;
        reservation.commit(Arc::new(p));
        Ok(())
    }

    /// Signals one process or, for an empty `exec_id` with SIGKILL, every process of
    /// the container (the runtime's "all", as upstream's `do_signal_process` recovers
    /// it). An empty `exec_id` with another signal (containerd's SIGTERM on delete)
    /// signals the init process. As upstream, SIGTERM to an init process that has no
    /// handler for it (PID 1 of its namespace ignores it) becomes SIGKILL.
    pub async fn signal(&self, reaper: &Reaper, exec_id: &str, signal: i32) -> Result<()> {
        let mut sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| AgentError::invalid("signal", format!("{signal} is not a signal")))?;
        if exec_id.is_empty() && sig == nix::sys::signal::Signal::SIGKILL {
            if self.init.exit_code().is_some() {
                return Ok(());
            }
            let mut c = self.load()?;
            return blocking(reaper, move || {
                c.kill(sig, true)
                    .map_err(lc_err("signalling the container"))
            })
            .await;
        }
        let p = self.process(exec_id)?;
        if p.exit_code().is_some() {
            return Ok(());
        }
        let init = Arc::ptr_eq(&p, &self.init);
        if init && sig == nix::sys::signal::Signal::SIGTERM && !handles_signal(&p, libc::SIGTERM) {
            sig = nix::sys::signal::Signal::SIGKILL;
        }
        // Through the pidfd: once the process is reaped this is ESRCH, never a signal to
        // whoever has its pid now.
        match p.signal(sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(AgentError::internal("pidfd_send_signal", e)),
        }
    }

    pub async fn pause(&self, reaper: &Reaper) -> Result<()> {
        let mut c = self.load()?;
        blocking(reaper, move || {
            c.pause()
                .map_err(|e| AgentError::FailedPrecondition(format!("pause: {e}")))
        })
        .await
    }

    pub async fn resume(&self, reaper: &Reaper) -> Result<()> {
        let mut c = self.load()?;
        blocking(reaper, move || {
            c.resume()
                .map_err(|e| AgentError::FailedPrecondition(format!("resume: {e}")))
        })
        .await
    }

    /// Kills everything in the container, waits up to `timeout` for the init to go,
    /// deletes the libcontainer state and cgroup, unmounts the rootfs, removes the bundle.
    pub async fn destroy(&self, reaper: &Reaper, timeout: Duration) -> Result<()> {
        if self.init.exit_code().is_none() {
            if let Err(e) = self.signal(reaper, "", libc::SIGKILL).await {
                tracing::warn!(container = %self.id, error = %e, "killing the container");
                let _ = self.init.signal(nix::sys::signal::Signal::SIGKILL);
            }
            if tokio::time::timeout(timeout, self.init.wait())
                .await
                .is_err()
            {
                return Err(AgentError::DeadlineExceeded(format!(
                    "container {} did not stop within {timeout:?}",
                    self.id
                )));
            }
        }
        for p in self.lock_execs().running.values() {
            let _ = p.signal(nix::sys::signal::Signal::SIGKILL);
        }
        force_delete(reaper, &self.paths, &self.id).await;
        if let Some(m) = &self.rootfs_mount {
            if let Err(e) = umount2(m, MntFlags::MNT_DETACH) {
                tracing::warn!(mount = %m.display(), error = %e, "unmounting the rootfs");
            }
        }
        remove_bundle(&self.bundle);
        Ok(())
    }
}

/// A container's exec processes.
#[derive(Default)]
struct Execs {
    running: HashMap<String, Arc<Process>>,
    /// Ids whose ExecProcess is under way (reserved; see [`Container::reserve_exec`]).
    starting: HashSet<String>,
}

fn lock_execs(execs: &Mutex<Execs>) -> MutexGuard<'_, Execs> {
    execs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An exec id held for one ExecProcess; released if the exec fails.
struct ExecReservation<'a> {
    execs: &'a Mutex<Execs>,
    id: String,
    committed: bool,
}

impl ExecReservation<'_> {
    /// The exec started: `p` takes the id (in the same lock as the reservation ends).
    fn commit(mut self, p: Arc<Process>) {
        let mut execs = lock_execs(self.execs);
        execs.starting.remove(&self.id);
        execs.running.insert(self.id.clone(), p);
        self.committed = true;
    }
}

impl Drop for ExecReservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            lock_execs(self.execs).starting.remove(&self.id);
        }
    }
}

/// Deletes libcontainer's state (and with it the cgroup), whatever the status.
async fn force_delete(reaper: &Reaper, paths: &Paths, id: &str) {
    let dir = paths.state_dir().join(id);
    let r = blocking(reaper, move || {
        if let Ok(mut c) = LcContainer::load(dir.clone()) {
            c.delete(true).map_err(lc_err("deleting the container"))?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(container = id, error = %e, "deleting libcontainer state");
    }
}

/// Undoes a half-made container's bundle and mount.
struct Cleanup {
    bundle: PathBuf,
    rootfs_mount: Option<PathBuf>,
    state: PathBuf,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(m) = &self.rootfs_mount {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        remove_bundle(&self.bundle);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Whether process `p` catches `signal` (its `SigCgt` mask in `/proc/<pid>/status`).
/// Unknown (the process is gone, the file unreadable) counts as caught, so SIGTERM stays
/// SIGTERM. The pidfd, checked after the read, tells the file was this process's and not
/// that of a newer holder of the pid.
fn handles_signal(p: &Process, signal: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/status", p.pid)) {
        Ok(status) if p.pidfd().is_alive() => sig_caught(&status, signal).unwrap_or(true),
        _ => true,
    }
}

/// Whether the `SigCgt:` line of a `/proc/<pid>/status` text has `signal`'s bit.
fn sig_caught(status: &str, signal: i32) -> Option<bool> {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())?;
    let bit = u32::try_from(signal).ok()?.checked_sub(1)?;
    Some(mask.checked_shr(bit).is_some_and(|m| m & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigcgt_mask() {
        // SIGTERM (15) is bit 14: 0x4000; SIGINT (2) bit 1.
        let status = "Name:\tsh\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000004002\n";
        assert_eq!(sig_caught(status, libc::SIGTERM), Some(true));
        assert_eq!(sig_caught(status, libc::SIGINT), Some(true));
        assert_eq!(sig_caught(status, libc::SIGHUP), Some(false));
        assert_eq!(sig_caught("Name:\tsh\n", libc::SIGTERM), None);
        assert_eq!(sig_caught("SigCgt:\tzz\n", libc::SIGTERM), None);
        assert_eq!(sig_caught(status, 0), None);
        // This test process: whatever it catches, the file is there and parses.
        assert!(sig_caught(
            &std::fs::read_to_string("/proc/self/status").unwrap(),
            libc::SIGTERM
        )
        .is_some());
    }
}
