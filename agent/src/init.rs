//! PID-1 duties: what the agent does when the kernel starts it as `/init`.
//!
//! Order: mount proc, sysfs, devtmpfs, /dev/shm, devpts, /run → (config is read) → the
//! vsock transport modules → (the server's socket listens) → cgroup2 on /sys/fs/cgroup →
//! /dev/ptmx → setsid → hostname → loopback up → the other kernel modules → configfs.
//! Upstream kata-agent does the same steps with the modules last; listening first lets
//! the runtime's connection wait in the backlog while the rest runs. On exit: sync and
//! power off — PID 1 never returns, because the kernel panics when init exits.
//!
//! Everything here acts on the current mount, UTS and network namespaces only, so it
//! can be tested as PID 1 of `unshare --pid --mount --uts --net --fork`. It never
//! writes into `/dev` (devtmpfs is shared with the host in such a test): `/dev/ptmx` is
//! a bind mount of `/dev/pts/ptmx`, not a replaced node.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// File listing the kernel modules to load at boot, one absolute path per line,
/// dependencies first (written by `rootfs-builder initrd`).
pub const MODULES_ORDER: &str = "/etc/cocoon/modules.order";

/// The hostname set at boot; CreateSandbox sets the pod's.
const BOOT_HOSTNAME: &str = "localhost";

/// A failed PID-1 step, naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mounting {fstype} on {target}: {errno}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        errno: Errno,
    },
    #[error("{step}: {errno}")]
    Step { step: &'static str, errno: Errno },
    #[error("loading kernel module {path}: {errno}")]
    Module { path: String, errno: Errno },
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
}

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The early mounts, in order (upstream `INIT_ROOTFS_MOUNTS`).
const EARLY_MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "dev",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
    },
];

const CGROUP2: Mount = Mount {
    source: "cgroup2",
    target: "/sys/fs/cgroup",
    fstype: "cgroup2",
    flags: NOSUID_NODEV_NOEXEC,
    data: "nsdelegate",
};

/// configfs, where the kernel's TSM report interface lives (`/sys/kernel/config/tsm`:
/// TDX and SNP reports through configfs-tsm). Mounted after the modules are loaded.
const CONFIGFS: Mount = Mount {
    source: "configfs",
    target: "/sys/kernel/config",
    fstype: "configfs",
    flags: NOSUID_NODEV_NOEXEC,
    data: "",
};

/// Mounts configfs when the kernel has it (after the modules are loaded; a kernel
/// without configfs is not an error: the attester then uses the device interfaces).
pub fn mount_configfs() -> Result<bool, InitError> {
    if !std::path::Path::new(CONFIGFS.target).is_dir() {
        return Ok(false);
    }
    do_mount(&CONFIGFS).map(|()| true)
}

/// True when the kernel started us as init.
pub fn is_init() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

fn do_mount(m: &Mount) -> Result<(), InitError> {
    let err = |errno| InitError::Mount {
        fstype: m.fstype,
        target: m.target,
        errno,
    };
    std::fs::create_dir_all(m.target).map_err(|e| err(io_errno(&e)))?;
    let data = (!m.data.is_empty()).then_some(m.data);
    match mount(Some(m.source), m.target, Some(m.fstype), m.flags, data) {
        // The same single-instance filesystem (devtmpfs, say) is already mounted there:
        // the kernel or a previous stage did our work.
        Err(Errno::EBUSY) => Ok(()),
        other => other.map_err(err),
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Mounts proc, sysfs, devtmpfs, /dev/shm, devpts and /run, then makes sure stdio is
/// open (on `/dev/console` if the kernel could not give us one).
pub fn early_mounts() -> Result<(), InitError> {
    for m in EARLY_MOUNTS {
        do_mount(m)?;
    }
    ensure_stdio();
    Ok(())
}

/// When the initramfs has no `/dev/console` the kernel starts init with no stdio; after
/// devtmpfs is up we can open it ourselves.
fn ensure_stdio() {
    let closed = |fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err();
    if !(closed(0) || closed(1) || closed(2)) {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..=2 {
        if closed(fd) {
            // SAFETY: dup2 onto a closed standard descriptor; `console` stays open.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

/// Mounts the unified cgroup hierarchy (the guest is cgroup v2 only).
pub fn mount_cgroups() -> Result<(), InitError> {
    do_mount(&CGROUP2)
}

/// `/dev/ptmx` → the devpts instance's ptmx; new session; hostname; loopback up.
pub fn finish_setup() -> Result<(), InitError> {
    let step = |step| move |errno| InitError::Step { step, errno };
    mount(
        Some("/dev/pts/ptmx"),
        "/dev/ptmx",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(step("bind-mounting /dev/pts/ptmx on /dev/ptmx"))?;
    match nix::unistd::setsid() {
        Ok(_) | Err(Errno::EPERM) => {} // EPERM: already a session leader
        Err(e) => return Err(step("setsid")(e)),
    }
    nix::unistd::sethostname(BOOT_HOSTNAME).map_err(step("sethostname"))?;
    loopback_up().map_err(step("bringing up lo"))?;
    Ok(())
}

fn loopback_up() -> Result<(), Errno> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into it;
    // `req` is a valid, writable ifreq for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags member.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads `req`, a valid ifreq with name and flags set.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The modules listed in `list` (one absolute path per line, dependencies first;
/// `#` comments), in order. No file: none.
pub fn module_list(list: &Path) -> Result<Vec<String>, InitError> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(InitError::Read {
                path: MODULES_ORDER,
                source,
            })
        }
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Splits `modules` into the vsock transport (what the ttrpc server needs to listen:
/// `vsock`, `vmw_vsock_*`), in their order, and the rest, in theirs. The vsock modules
/// depend only on each other and on built-in virtio, so loading them first keeps every
/// dependency before its users.
pub fn split_vsock_modules(modules: Vec<String>) -> (Vec<String>, Vec<String>) {
    modules.into_iter().partition(|path| {
        let name = path.rsplit('/').next().unwrap_or(path);
        name.starts_with("vsock") || name.starts_with("vmw_vsock")
    })
}

/// Loads `modules` in order; one that is built in or already loaded is skipped. Returns
/// how many were loaded.
pub fn load_modules(modules: &[String]) -> Result<usize, InitError> {
    let mut loaded = 0;
    for path in modules {
        let err = |errno| InitError::Module {
            path: path.clone(),
            errno,
        };
        let file = std::fs::File::open(path).map_err(|e| err(io_errno(&e)))?;
        let params = CString::default();
        match nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) => loaded += 1,
            Err(Errno::EEXIST) => {} // built in, or already loaded
            Err(e) => return Err(err(e)),
        }
    }
    Ok(loaded)
}

/// Syncs and powers the VM off. Never returns: if the kernel refuses, init waits forever
/// rather than exit (which would panic the kernel).
pub fn power_off() -> ! {
    nix::unistd::sync();
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    eprintln!("cocoon-agent: power off failed: {err:?}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_module_list_loads_nothing() {
        let none = module_list(Path::new("/nonexistent/modules.order")).unwrap();
        assert!(none.is_empty());
        assert_eq!(load_modules(&none).unwrap(), 0);
    }

    #[test]
    fn module_errors_name_the_module() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("modules.order");
        std::fs::write(&list, "# comment\n\n/nonexistent/vsock.ko\n").unwrap();
        let modules = module_list(&list).unwrap();
        assert_eq!(modules, ["/nonexistent/vsock.ko"]);
        let err = load_modules(&modules).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/vsock.ko"), "{err}");
    }

    #[test]
    fn vsock_modules_go_first_in_their_order() {
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = m(&[
            "/lib/modules/6.12/kernel/net/core/failover.ko",
            "/lib/modules/6.12/kernel/net/vmw_vsock/vsock.ko",
            "/lib/modules/6.12/kernel/drivers/net/virtio_net.ko",
            "/lib/modules/6.12/kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
            "/lib/modules/6.12/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
            "/lib/modules/6.12/kernel/fs/overlayfs/overlay.ko",
        ]);
        let (vsock, rest) = split_vsock_modules(all);
        assert_eq!(
            vsock,
            m(&[
                "/lib/modules/6.12/kernel/net/vmw_vsock/vsock.ko",
                "/lib/modules/6.12/kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
                "/lib/modules/6.12/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
            ])
        );
        assert_eq!(
            rest,
            m(&[
                "/lib/modules/6.12/kernel/net/core/failover.ko",
                "/lib/modules/6.12/kernel/drivers/net/virtio_net.ko",
                "/lib/modules/6.12/kernel/fs/overlayfs/overlay.ko",
            ])
        );
    }

    #[test]
    fn early_mounts_are_in_upstream_order() {
        let targets: Vec<_> = EARLY_MOUNTS.iter().map(|m| m.target).collect();
        assert_eq!(
            targets,
            ["/proc", "/sys", "/dev", "/dev/shm", "/dev/pts", "/run"]
        );
    }
}
