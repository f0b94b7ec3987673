//! What goes into the guest image, whatever its format: the agent as `/init`, kernel
//! modules and their load order, the pause bundle, policy, CA certificates, and an
//! optional busybox for a debug console.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::modules::{self, ModuleIndex};
use crate::pause;
use crate::tree::{Tree, TreeError};

/// Guest path of the default agent policy (upstream Kata's).
pub const POLICY_PATH: &str = "/etc/kata-opa/default-policy.rego";
/// Guest path of a baked-in agent config (TOML); the kernel command line names it with
/// `agent.config_file=/etc/cocoon/agent.toml`.
pub const AGENT_CONFIG_PATH: &str = "/etc/cocoon/agent.toml";
/// Guest path of the CA bundle.
pub const CA_CERTS_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Guest path of busybox.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Busybox applets linked for the debug shell. A fixed list (rather than asking the
/// binary) keeps the image independent of the build host.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "awk", "cat", "chmod", "chown", "cp", "cut", "date", "dd", "df", "dmesg", "du", "echo", "env",
    "find", "free", "grep", "head", "hexdump", "hostname", "id", "ifconfig", "insmod", "ip",
    "kill", "less", "ln", "ls", "lsmod", "mkdir", "mknod", "modprobe", "more", "mount", "mv", "nc",
    "netstat", "ping", "ps", "pwd", "readlink", "rm", "rmdir", "sed", "sh", "sleep", "sort",
    "stat", "sync", "tail", "tee", "top", "touch", "tr", "umount", "uname", "vi", "wc", "wget",
    "which", "xargs",
];

/// Everything that decides the content. Paths are read; nothing else of the host is.
#[derive(Debug, Clone, Default)]
pub struct ContentSpec {
    pub agent: PathBuf,
    /// A `/lib/modules/<version>` tree (or its parent with `kernel_version`).
    pub kernel_modules: Option<PathBuf>,
    pub kernel_version: Option<String>,
    /// Added to [`modules::DEFAULT_MODULES`] (or replacing them with `no_default_modules`).
    pub extra_modules: Vec<String>,
    pub no_default_modules: bool,
    /// Ship the modules without their appended signatures ([`modules::strip_signature`]).
    pub strip_module_signatures: bool,
    /// An OCI bundle directory; `None` bakes in the built-in one unless `no_pause_bundle`.
    pub pause_bundle: Option<PathBuf>,
    pub no_pause_bundle: bool,
    pub policy: Option<PathBuf>,
    pub ca_certs: Option<PathBuf>,
    pub busybox: Option<PathBuf>,
    /// An agent config file (TOML) installed at [`AGENT_CONFIG_PATH`].
    pub agent_config: Option<PathBuf>,
}

/// Facts about the content worth reporting next to the manifest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContentInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// Guest paths of the shipped modules in load order.
    pub modules: Vec<String>,
    /// Requested modules the kernel has built in.
    pub modules_builtin: Vec<String>,
    /// How many shipped modules had their signature removed (`--strip-module-signatures`).
    #[serde(skip_serializing_if = "is_zero")]
    pub module_signatures_stripped: usize,
    /// `builtin`, `none`, or the host directory it came from.
    pub pause_bundle: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Modules(#[from] modules::ModuleError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a /lib/modules/<version> tree (no modules.dep); give --kernel-version or run `depmod -b`")]
    ModulesDir(PathBuf),
    #[error("cannot tell the kernel version of {0}: give --kernel-version")]
    NoVersion(PathBuf),
}

fn read(path: &Path) -> Result<Vec<u8>, ContentError> {
    fs::read(path).map_err(|source| ContentError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Finds the module directory and version from `--kernel-modules`/`--kernel-version`.
pub fn locate_modules(
    dir: &Path,
    version: Option<&str>,
) -> Result<(PathBuf, String), ContentError> {
    if dir.join("modules.dep").is_file() {
        let v = match version {
            Some(v) => v.to_string(),
            None => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| ContentError::NoVersion(dir.to_path_buf()))?,
        };
        return Ok((dir.to_path_buf(), v));
    }
    if let Some(v) = version {
        for candidate in [dir.join(v), dir.join("lib/modules").join(v)] {
            if candidate.join("modules.dep").is_file() {
                return Ok((candidate, v.to_string()));
            }
        }
    }
    Err(ContentError::ModulesDir(dir.to_path_buf()))
}

/// Builds the image tree.
pub fn build(spec: &ContentSpec) -> Result<(Tree, ContentInfo), ContentError> {
    let mut t = Tree::new();
    let mut info = ContentInfo::default();

    // Mount points and the console: the agent mounts proc, sys, dev, run and tmp.
    for d in ["dev", "proc", "sys", "run", "etc", "lib", "usr", "var"] {
        t.dir(d, 0o755)?;
    }
    t.dir("tmp", 0o1777)?;
    t.dir("root", 0o700)?;
    t.char_dev("dev/console", 5, 1, 0o600)?;
    t.file("/etc/hostname", b"cocoon\n".to_vec(), 0o644)?;

    t.file("/init", read(&spec.agent)?, 0o755)?;

    if let Some(dir) = &spec.kernel_modules {
        let (dir, version) = locate_modules(dir, spec.kernel_version.as_deref())?;
        let index = ModuleIndex::load(&dir)?;
        let mut names: Vec<String> = if spec.no_default_modules {
            Vec::new()
        } else {
            modules::DEFAULT_MODULES
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        names.extend(spec.extra_modules.iter().cloned());
        let res = index.resolve(&names)?;
        for m in &res.load_order {
            let mut data = index.read_plain(m)?;
            if spec.strip_module_signatures {
                let (plain, signed) = modules::strip_signature(Path::new(&m.rel_path), data)?;
                data = plain;
                info.module_signatures_stripped += usize::from(signed);
            }
            t.file(&m.initrd_path(&version), data, 0o644)?;
            info.modules.push(m.initrd_path(&version));
        }
        t.file(
            modules::MODULES_ORDER_PATH,
            modules::order_file(&version, &res.load_order).into_bytes(),
            0o644,
        )?;
        info.modules_builtin = res.builtin;
        info.kernel_version = Some(version);
    }

    info.pause_bundle = match (&spec.pause_bundle, spec.no_pause_bundle) {
        (Some(dir), _) => {
            t.copy_dir(dir, pause::BUNDLE_PATH)?;
            dir.display().to_string()
        }
        (None, true) => "none".to_string(),
        (None, false) => {
            let root = format!("{}/rootfs", pause::BUNDLE_PATH);
            t.file(
                &format!("{}/config.json", pause::BUNDLE_PATH),
                pause::config_json().into_bytes(),
                0o644,
            )?;
            t.file(&format!("{root}/pause"), pause::pause_elf(), 0o755)?;
            for d in ["proc", "dev"] {
                t.dir(&format!("{root}/{d}"), 0o755)?;
            }
            "builtin".to_string()
        }
    };

    if let Some(p) = &spec.policy {
        t.file(POLICY_PATH, read(p)?, 0o644)?;
    }
    if let Some(p) = &spec.ca_certs {
        t.file(CA_CERTS_PATH, read(p)?, 0o644)?;
    }
    if let Some(p) = &spec.agent_config {
        t.file(AGENT_CONFIG_PATH, read(p)?, 0o644)?;
    }
    if let Some(p) = &spec.busybox {
        t.file(BUSYBOX_PATH, read(p)?, 0o755)?;
        for applet in BUSYBOX_APPLETS {
            t.symlink(&format!("/bin/{applet}"), "busybox")?;
        }
    }
    Ok((t, info))
}
