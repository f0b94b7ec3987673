//! The secrets stage of CreateContainer: sealed secrets are unsealed before the workload
//! starts, through the agent's one KBS session.
//!
//! - An env value that starts with `sealed.` is replaced by its plaintext.
//! - A bind mount whose source (under `/run/kata-containers/shared/containers/`) is a file
//!   holding a sealed secret, or a directory holding any (a Kubernetes secret volume:
//!   files, or the `..data` symlink layout), is served instead from a dedicated tmpfs of
//!   the container (`nosuid,nodev,noexec`, size-limited, 0700), holding the plaintext
//!   under the same names (files 0400, directories 0500, owned by the container's
//!   uid/gid). The shared directory keeps the sealed text: no plaintext copy is ever
//!   written next to it (upstream writes `.unsealed` files there).
//!
//! Any failure fails CreateContainer naming the secret (env name or file), never its
//! value; plaintext buffers are zeroized once written.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cocoon_guest_components::sealed::{is_sealed, SealedSecret, UnsealOptions};
use cocoon_guest_components::ResourceSource;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;
use zeroize::Zeroizing;

use crate::error::{AgentError, Result};

/// The tmpfs's directory inside the container's bundle.
pub const TMPFS_DIR: &str = "secrets";
/// Size limit of a container's secrets tmpfs.
pub const TMPFS_SIZE: &str = "8m";
/// Largest file in a secret volume we read.
const MAX_SECRET_FILE: u64 = 1024 * 1024;
/// Most entries in a secret volume directory.
const MAX_VOLUME_ENTRIES: usize = 256;

/// How the agent unseals: its KBS session (none without `agent.aa_kbc_params`) and
/// the verification options.
pub struct Secrets {
    /// The KBS, or why there is none.
    source: std::result::Result<Arc<dyn ResourceSource>, String>,
    options: UnsealOptions,
}

impl Secrets {
    pub fn new(
        source: std::result::Result<Arc<dyn ResourceSource>, String>,
        options: UnsealOptions,
    ) -> Secrets {
        Secrets { source, options }
    }

    /// Could this spec hold a sealed secret? (Cheap: the stage is skipped otherwise.)
    pub fn needed(&self, spec: &Spec, shared_dir: &Path) -> bool {
        let env = spec
            .process()
            .as_ref()
            .and_then(|p| p.env().as_ref())
            .is_some_and(|env| env.iter().any(|e| env_value(e).is_some_and(is_sealed)));
        let mounts = spec.mounts().as_ref().is_some_and(|m| {
            m.iter().any(|m| {
                m.source()
                    .as_ref()
                    .is_some_and(|s| s.starts_with(shared_dir))
            })
        });
        env || mounts
    }

    fn unseal(
        &self,
        kbs: Option<&OncePerRequest<'_>>,
        what: &str,
        text: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let err = |reason: String| AgentError::Secret {
            what: what.to_string(),
            reason,
        };
        let sealed = SealedSecret::parse(text.trim()).map_err(|e| err(e.to_string()))?;
        let kbs = match (kbs, &self.source) {
            (Some(kbs), _) => kbs,
            (None, Err(why)) => return Err(err(format!("a sealed secret, but {why}"))),
            (None, Ok(_)) => return Err(err("a sealed secret, but no KBS session".into())),
        };
        let plain = sealed
            .unseal(kbs, &self.options)
            .map_err(|e| err(e.to_string()))?;
        tracing::info!(target: "audit", secret = what, "unsealed a secret");
        Ok(plain)
    }

    /// Unseals the spec's sealed env values and secret volumes. Returns the tmpfs it
    /// mounted under `dir`, if any mount needed one; on error nothing is left mounted.
    pub fn inject(
        &self,
        spec: &mut Spec,
        shared_dir: &Path,
        dir: &Path,
    ) -> Result<Option<PathBuf>> {
        let kbs = self
            .source
            .as_ref()
            .ok()
            .map(|s| OncePerRequest::new(s.as_ref()));
        let kbs = kbs.as_ref();
        // env
        if let Some(mut process) = spec.process().clone() {
            if let Some(env) = process.env().clone() {
                let mut out = Vec::with_capacity(env.len());
                for entry in env {
                    match entry.split_once('=') {
                        Some((name, value)) if is_sealed(value) => {
                            let what = format!("env {name}");
                            let plain = self.unseal(kbs, &what, value)?;
                            let text =
                                std::str::from_utf8(&plain).map_err(|_| AgentError::Secret {
                                    what: what.clone(),
                                    reason: "the plaintext is not UTF-8".into(),
                                })?;
                            out.push(format!("{name}={text}"));
                        }
                        _ => out.push(entry),
                    }
                }
                process.set_env(Some(out));
                spec.set_process(Some(process));
            }
        }

        // secret volumes: unseal everything first, then write it out
        let Some(mut mounts) = spec.mounts().clone() else {
            return Ok(None);
        };
        let mut planned: Vec<(usize, Volume)> = Vec::new();
        for (i, m) in mounts.iter().enumerate() {
            let Some(source) = m.source().as_ref().filter(|s| s.starts_with(shared_dir)) else {
                continue;
            };
            if let Some(v) = self.read_volume(kbs, source)? {
                planned.push((i, v));
            }
        }
        if planned.is_empty() {
            return Ok(None);
        }
        let (uid, gid) = spec
            .process()
            .as_ref()
            .map(|p| (p.user().uid(), p.user().gid()))
            .unwrap_or((0, 0));
        let tmpfs = Tmpfs::mount(dir)?;
        for (i, volume) in planned {
            let sub = dir.join(i.to_string());
            let new_source = volume.write(&sub, uid, gid)?;
            if let Some(m) = mounts.get_mut(i) {
                m.set_source(Some(new_source));
            }
        }
        spec.set_mounts(Some(mounts));
        Ok(Some(tmpfs.keep()))
    }

    /// A mount source holding sealed secrets, read and unsealed; `None` when it holds
    /// none (it is then mounted as it is).
    fn read_volume(
        &self,
        kbs: Option<&OncePerRequest<'_>>,
        source: &Path,
    ) -> Result<Option<Volume>> {
        if source
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Ok(None);
        }
        let Ok(meta) = std::fs::symlink_metadata(source) else {
            return Ok(None);
        };
        let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        if meta.is_file() {
            let what = format!("file {}", source.display());
            let Some(text) = read_small(source, &what)? else {
                return Ok(None);
            };
            if !is_sealed(text.trim()) {
                return Ok(None);
            }
            let plain = self.unseal(kbs, &what, &text)?;
            let name = name_of(source).unwrap_or_else(|| "secret".into());
            return Ok(Some(Volume::File(name, plain)));
        }
        if !meta.is_dir() {
            return Ok(None);
        }
        let root = std::fs::canonicalize(source)
            .map_err(|e| AgentError::internal(&format!("resolving {}", source.display()), e))?;
        let mut files = Vec::new();
        let mut any_sealed = false;
        let entries = std::fs::read_dir(source)
            .map_err(|e| AgentError::internal(&format!("reading {}", source.display()), e))?;
        for entry in entries.flatten().take(MAX_VOLUME_ENTRIES) {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `..data`, `..2024_…`: the kubelet's atomic-update layout.
            if name.starts_with("..") {
                continue;
            }
            let what = format!("file {}", entry.path().display());
            // `key -> ..data/key`: resolve, and stay inside the volume.
            let Ok(real) = std::fs::canonicalize(entry.path()) else {
                continue;
            };
            if !real.starts_with(&root) || !real.is_file() {
                continue;
            }
            let Some(text) = read_small(&real, &what)? else {
                continue;
            };
            if is_sealed(text.trim()) {
                any_sealed = true;
                files.push((name, self.unseal(kbs, &what, &text)?));
            } else {
                files.push((name, Zeroizing::new(text.into_bytes())));
            }
        }
        if !any_sealed {
            return Ok(None);
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(Volume::Dir(files)))
    }
}

/// The KBS as one CreateContainer sees it: each resource is fetched once (secrets sealed
/// with the same key fetch the key once, not once per secret). The copies are zeroized
/// when the request is done.
struct OncePerRequest<'a> {
    kbs: &'a dyn ResourceSource,
    fetched: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl<'a> OncePerRequest<'a> {
    fn new(kbs: &'a dyn ResourceSource) -> Self {
        OncePerRequest {
            kbs,
            fetched: Mutex::new(HashMap::new()),
        }
    }

    fn fetched(&self) -> std::sync::MutexGuard<'_, HashMap<String, Zeroizing<Vec<u8>>>> {
        self.fetched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResourceSource for OncePerRequest<'_> {
    fn get_resource(
        &self,
        uri: &str,
    ) -> std::result::Result<Zeroizing<Vec<u8>>, cocoon_guest_components::Error> {
        if let Some(bytes) = self.fetched().get(uri) {
            return Ok(bytes.clone());
        }
        let bytes = self.kbs.get_resource(uri)?;
        self.fetched().insert(uri.to_owned(), bytes.clone());
        Ok(bytes)
    }
}

/// `VALUE` of `NAME=VALUE`.
fn env_value(entry: &str) -> Option<&str> {
    entry.split_once('=').map(|(_, v)| v)
}

/// A file's text if it is small and UTF-8 (a sealed secret is both).
fn read_small(path: &Path, what: &str) -> Result<Option<String>> {
    let f = std::fs::File::open(path).map_err(|e| AgentError::Secret {
        what: what.to_string(),
        reason: format!("reading: {e}"),
    })?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| AgentError::Secret {
            what: what.to_string(),
            reason: format!("reading: {e}"),
        })?;
    if buf.len() as u64 > MAX_SECRET_FILE {
        return Ok(None);
    }
    Ok(std::str::from_utf8(&buf).ok().map(str::to_owned))
}

/// Plaintext to serve in place of a mount source.
enum Volume {
    /// One file: its name and content.
    File(String, Zeroizing<Vec<u8>>),
    /// A directory: its files' names and contents.
    Dir(Vec<(String, Zeroizing<Vec<u8>>)>),
}

impl Volume {
    /// Writes it under `sub` (a fresh directory in the tmpfs); returns the new source.
    fn write(&self, sub: &Path, uid: u32, gid: u32) -> Result<PathBuf> {
        let io = |what: &str, e: std::io::Error| AgentError::internal(what, e);
        std::fs::create_dir(sub).map_err(|e| io("secrets tmpfs: mkdir", e))?;
        let write_file = |path: &Path, data: &[u8]| -> Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| io("secrets tmpfs: create", e))?;
            f.write_all(data)
                .map_err(|e| io("secrets tmpfs: write", e))?;
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .map_err(|e| io("secrets tmpfs: chown", e))
        };
        let source = match self {
            Volume::File(name, data) => {
                let path = sub.join(name);
                write_file(&path, data)?;
                path
            }
            Volume::Dir(files) => {
                for (name, data) in files {
                    write_file(&sub.join(name), data)?;
                }
                sub.to_path_buf()
            }
        };
        std::os::unix::fs::chown(sub, Some(uid), Some(gid))
            .map_err(|e| io("secrets tmpfs: chown", e))?;
        std::fs::set_permissions(sub, std::fs::Permissions::from_mode(0o500))
            .map_err(|e| io("secrets tmpfs: chmod", e))?;
        Ok(source)
    }
}

/// A mounted secrets tmpfs, unmounted again unless kept.
struct Tmpfs {
    dir: Option<PathBuf>,
}

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)
            .map_err(|e| AgentError::internal("creating the secrets tmpfs directory", e))?;
        let data = format!("mode=0700,size={TMPFS_SIZE}");
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(data.as_str()),
        )
        .map_err(|e| AgentError::internal("mounting the secrets tmpfs", e))?;
        Ok(Tmpfs {
            dir: Some(dir.to_path_buf()),
        })
    }

    fn keep(mut self) -> PathBuf {
        self.dir.take().unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            unmount(&dir);
        }
    }
}

/// Unmounts a container's secrets tmpfs (its pages are freed with it) and removes the
/// directory.
pub fn unmount(dir: &Path) {
    if let Err(e) = umount2(dir, MntFlags::MNT_DETACH) {
        tracing::warn!(dir = %dir.display(), error = %e, "unmounting a secrets tmpfs");
    }
    let _ = std::fs::remove_dir(dir);
}
