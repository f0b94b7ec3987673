//! Whole images: resolve the reference, fetch and check the config, then pull every layer
//! through the per-layer pipeline ([`crate::unpack_layer`]), up to
//! [`PullOptions::max_concurrent_layers`] at a time, into a [`LayerStore`] keyed by
//! `diff_id`. The result is the list of verified layer directories (bottom first) for an
//! overlay mount, and the image config's process defaults.
//!
//! Data flow per layer: the registry's async chunk stream is pumped into a small bounded
//! channel; a blocking thread reads the channel as a `Read` and runs the pipeline. A full
//! channel stops the pump, which stops reading the socket: back-pressure from the tar
//! writer to the TCP window, so memory does not grow with layer size.
//!
//! Dedup: a layer is pulled once per store even when several images or several concurrent
//! pulls of one image need it; later users wait for the first and share its directory.
//! A failed layer is not cached (the next pull tries again).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use oci_client::manifest::OciDescriptor;
use serde::Deserialize;
use tokio::sync::{mpsc, watch, OnceCell, Semaphore};

use crate::error::LayerError;
use crate::keys::KeyProvider;
use crate::pipeline::{unpack_layer, LayerDescriptor};
use crate::registry::{Registry, RegistryError, ResolvedImage};
use crate::unpack::UnpackOptions;

/// Chunks buffered between the registry stream and the unpacking thread, per layer.
const CHANNEL_CHUNKS: usize = 8;

/// The tracing target of progress and summary lines.
pub const LOG_TARGET: &str = "image_pull";

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Layers fetched at the same time for one image (CDH's
    /// `max_concurrent_layer_downloads_per_image`, default 3).
    pub max_concurrent_layers: usize,
    /// How to unpack each layer.
    pub unpack: UnpackOptions,
    /// Interval between progress lines of a layer.
    pub progress_interval: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            max_concurrent_layers: 3,
            unpack: UnpackOptions::default(),
            progress_interval: Duration::from_secs(5),
        }
    }
}

/// The process defaults of an image config (`config` in the image-spec config JSON),
/// which the agent merges into a container's spec where the spec leaves them empty.
/// <https://github.com/opencontainers/image-spec/blob/main/config.md>
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProcessDefaults {
    /// `User`: `user`, `uid`, `user:group`, `uid:gid`, ...
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    /// `Env`: `NAME=value` entries.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ProcessDefaults>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

/// A pulled, verified image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference as asked for.
    pub image: String,
    /// Digest of the `linux/amd64` manifest.
    pub manifest_digest: String,
    /// Digest of the image config.
    pub config_digest: String,
    /// The config's process defaults.
    pub defaults: ProcessDefaults,
    /// Layer directories, bottom layer first (overlayfs wants them reversed).
    pub layers: Vec<PathBuf>,
    /// What the pull did.
    pub stats: PullStats,
}

/// What one pull did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PullStats {
    /// Layers in the image.
    pub layers: usize,
    /// Layers this pull fetched and unpacked (the others were in the store already, or
    /// fetched by a concurrent pull).
    pub fetched: usize,
    /// Blob bytes this pull fetched.
    pub blob_bytes: u64,
    /// Uncompressed tar bytes this pull unpacked.
    pub tar_bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Why a pull failed. Every variant names the image; layer failures name the layer too.
/// Nothing of a failed layer is visible in the store.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Resolving, or fetching the config or a blob, failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The image config is not usable.
    #[error("image {image}: config {digest}: {reason}")]
    Config {
        image: String,
        digest: String,
        reason: String,
    },
    /// A layer failed verification or unpacking.
    #[error("image {image}: {source}")]
    Layer {
        image: String,
        #[source]
        source: LayerError,
    },
    /// The layer store could not be used.
    #[error("image {image}: layer store {path}: {source}")]
    Store {
        image: String,
        path: String,
        #[source]
        source: io::Error,
    },
    /// A worker thread failed (a bug).
    #[error("image {image}: {reason}")]
    Internal { image: String, reason: String },
}

/// Where verified layers live: `<root>/<algorithm>-<hex of diff_id>`, each directory
/// created by renaming a fully verified staging directory, so a directory that exists is
/// a complete, verified layer.
pub struct LayerStore {
    root: PathBuf,
    cells: Mutex<HashMap<String, Arc<OnceCell<PathBuf>>>>,
}

impl LayerStore {
    /// Opens (creating, mode 0700) the store at `root`, removing staging directories a
    /// crashed earlier run may have left.
    pub fn open(root: &Path) -> io::Result<LayerStore> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().contains(".staging-") {
                crate::pipeline::force_remove(&entry.path())?;
            }
        }
        Ok(LayerStore {
            root: root.to_path_buf(),
            cells: Mutex::new(HashMap::new()),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the layer with this `diff_id`, or `None` when the digest is not
    /// one we can name a directory after.
    pub fn layer_dir(&self, diff_id: &str) -> Option<PathBuf> {
        let (algo, hex) = diff_id.split_once(':')?;
        let len = match algo {
            "sha256" => 64,
            "sha512" => 128,
            _ => return None,
        };
        let ok = hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| {
            self.root
                .join(format!("{algo}-{}", hex.to_ascii_lowercase()))
        })
    }

    fn cell(&self, diff_id: &str) -> Arc<OnceCell<PathBuf>> {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        cells.entry(diff_id.to_owned()).or_default().clone()
    }
}

/// Pulls images from a [`Registry`] into a [`LayerStore`], with keys from a
/// [`KeyProvider`].
pub struct ImagePuller {
    registry: Arc<dyn Registry>,
    keys: Arc<dyn KeyProvider>,
    store: Arc<LayerStore>,
    options: PullOptions,
}

/// Shared by the layer tasks of one pull.
struct Job {
    image: String,
    resolved: ResolvedImage,
    registry: Arc<dyn Registry>,
    keys: Arc<dyn KeyProvider>,
    unpack: UnpackOptions,
    progress_interval: Duration,
    /// Set when one layer failed: the others stop reading and clean up.
    cancel: watch::Receiver<bool>,
    fetched: AtomicUsize,
    blob_bytes: AtomicU64,
    tar_bytes: AtomicU64,
}

impl ImagePuller {
    /// A puller.
    pub fn new(
        registry: Arc<dyn Registry>,
        keys: Arc<dyn KeyProvider>,
        store: Arc<LayerStore>,
        options: PullOptions,
    ) -> ImagePuller {
        ImagePuller {
            registry,
            keys,
            store,
            options,
        }
    }

    /// The layer store.
    pub fn store(&self) -> &Arc<LayerStore> {
        &self.store
    }

    /// Pulls `image`: resolve → config (digest checked) → every layer verified and
    /// unpacked (or found in the store). On failure no layer of this pull is left half
    /// done: layers still running are told to stop and are waited for, so their staging
    /// directories are gone when this returns.
    pub async fn pull(&self, image: &str) -> Result<PulledImage, PullError> {
        let started = Instant::now();
        let resolved = self.registry.resolve(image).await?;
        let config_bytes = self.registry.fetch_config(&resolved).await?;
        let config_digest = resolved.manifest.config.digest.clone();
        let bad_config = |reason: String| PullError::Config {
            image: image.to_owned(),
            digest: config_digest.clone(),
            reason,
        };
        let config: ConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| bad_config(e.to_string()))?;
        if config.rootfs.kind != "layers" {
            return Err(bad_config(format!(
                "rootfs.type is {:?}, not \"layers\"",
                config.rootfs.kind
            )));
        }
        let descs = resolved.manifest.layers.clone();
        if descs.len() != config.rootfs.diff_ids.len() {
            return Err(bad_config(format!(
                "{} layers in the manifest but {} diff_ids in the config",
                descs.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut dirs = Vec::with_capacity(descs.len());
        for diff_id in &config.rootfs.diff_ids {
            dirs.push(
                self.store
                    .layer_dir(diff_id)
                    .ok_or_else(|| bad_config(format!("unusable diff_id {diff_id:?}")))?,
            );
        }

        let (cancel_tx, cancel) = watch::channel(false);
        let job = Arc::new(Job {
            image: image.to_owned(),
            resolved,
            registry: self.registry.clone(),
            keys: self.keys.clone(),
            unpack: self.options.unpack.clone(),
            progress_interval: self.options.progress_interval,
            cancel,
            fetched: AtomicUsize::new(0),
            blob_bytes: AtomicU64::new(0),
            tar_bytes: AtomicU64::new(0),
        });
        let limit = Arc::new(Semaphore::new(self.options.max_concurrent_layers.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let layers = descs
            .into_iter()
            .zip(config.rootfs.diff_ids)
            .zip(dirs.iter());
        for (i, ((desc, diff_id), dir)) in layers.enumerate() {
            let cell = self.store.cell(&diff_id);
            let dir = dir.clone();
            let (job, limit) = (job.clone(), limit.clone());
            tasks.spawn(async move {
                let result = cell
                    .get_or_try_init(|| async {
                        // Another process (an earlier agent run) may have left it complete.
                        if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
                            return Ok(dir.clone());
                        }
                        let _permit = limit.acquire().await.map_err(|e| PullError::Internal {
                            image: job.image.clone(),
                            reason: format!("layer limit: {e}"),
                        })?;
                        if *job.cancel.borrow() {
                            return Err(PullError::Internal {
                                image: job.image.clone(),
                                reason: "cancelled: another layer failed".to_owned(),
                            });
                        }
                        job.clone().layer(desc, diff_id, dir.clone()).await?;
                        Ok(dir.clone())
                    })
                    .await
                    .cloned();
                (i, result)
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let failed = match joined {
                Ok((_, Ok(_))) => None,
                Ok((_, Err(e))) => Some(e),
                Err(e) => Some(PullError::Internal {
                    image: image.to_owned(),
                    reason: format!("layer task: {e}"),
                }),
            };
            if let Some(e) = failed {
                // Tell the rest to stop; keep waiting so that they clean up first.
                let _ = cancel_tx.send(true);
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let stats = PullStats {
            layers: dirs.len(),
            fetched: job.fetched.load(Ordering::Relaxed),
            blob_bytes: job.blob_bytes.load(Ordering::Relaxed),
            tar_bytes: job.tar_bytes.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        };
        tracing::info!(
            target: LOG_TARGET,
            image,
            manifest = job.resolved.manifest_digest,
            layers = stats.layers,
            fetched = stats.fetched,
            bytes = stats.blob_bytes,
            unpacked_bytes = stats.tar_bytes,
            seconds = stats.elapsed.as_secs_f64(),
            "image pulled"
        );
        Ok(PulledImage {
            image: image.to_owned(),
            manifest_digest: job.resolved.manifest_digest.clone(),
            config_digest,
            defaults: config.config.unwrap_or_default(),
            layers: dirs,
            stats,
        })
    }
}

impl Job {
    /// Fetches one layer into `dir`: the pump (here) feeds the pipeline (a blocking
    /// thread) through a bounded channel.
    async fn layer(
        self: Arc<Self>,
        desc: OciDescriptor,
        diff_id: String,
        dir: PathBuf,
    ) -> Result<(), PullError> {
        let layer_desc = LayerDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: u64::try_from(desc.size).unwrap_or(0),
            annotations: desc
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        let total = layer_desc.size;
        let mut blob = self.registry.open_blob(&self.resolved, &desc).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let keys = self.keys.clone();
        let unpack = self.unpack.clone();
        let worker = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            unpack_layer(&layer_desc, &diff_id, reader, keys.as_ref(), &dir, &unpack)
        });

        let started = Instant::now();
        let mut last_report = started;
        let mut done: u64 = 0;
        let mut cancel = self.cancel.clone();
        loop {
            let next = tokio::select! {
                next = blob.stream.next() => next,
                _ = async { drop(cancel.wait_for(|c| *c).await) } => {
                    let _ = tx.send(Err(io::Error::other("pull cancelled: another layer failed"))).await;
                    break;
                }
            };
            let Some(chunk) = next else { break };
            if let Ok(c) = &chunk {
                done += c.len() as u64;
            }
            // The worker is gone (it failed); its result says why.
            if tx.send(chunk).await.is_err() {
                break;
            }
            if last_report.elapsed() >= self.progress_interval {
                last_report = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    target: LOG_TARGET,
                    image = self.image,
                    layer = desc.digest,
                    done,
                    total,
                    mib_per_s = (done as f64 / 1048576.0 / secs.max(1e-9)),
                    "pulling layer"
                );
            }
        }
        drop(tx);
        let stats = worker
            .await
            .map_err(|e| PullError::Internal {
                image: self.image.clone(),
                reason: format!("layer worker: {e}"),
            })?
            .map_err(|source| PullError::Layer {
                image: self.image.clone(),
                source,
            })?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        self.blob_bytes
            .fetch_add(stats.blob_bytes, Ordering::Relaxed);
        self.tar_bytes.fetch_add(stats.tar_bytes, Ordering::Relaxed);
        tracing::debug!(
            target: LOG_TARGET,
            image = self.image,
            layer = desc.digest,
            bytes = stats.blob_bytes,
            unpacked_bytes = stats.tar_bytes,
            entries = stats.entries,
            seconds = started.elapsed().as_secs_f64(),
            "layer verified"
        );
        Ok(())
    }
}

/// The channel as a blocking `Read` (used on a blocking thread only).
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.current.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.current.advance(n);
        Ok(n)
    }
}
