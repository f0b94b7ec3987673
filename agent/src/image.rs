//! Guest image pull for CreateContainer: the `image_guest_pull` storage the Kata runtime
//! sends for a container whose image the guest pulls itself (the host never sees it).
//!
//! The pod's sandbox (pause) container comes from the bundle baked into the guest image
//! (copied into a small tmpfs), with no network. Any other container's image is pulled by `cocoon-image-pull`
//! (registry → decrypt → verify → unpack, every layer verified before it is visible),
//! with layer keys from the agent's one KBS session ([`KbsKeys`]), bounded by
//! `agent.image_pull_timeout`; its verified layers become a read-only overlay lower
//! stack with a per-container upper dir, mounted on the storage's mount point
//! (`/run/kata-containers/<cid>/rootfs`). The image config's process defaults fill in
//! what the container spec leaves empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cocoon_guest_components::ResourceSource;
use cocoon_image_pull::registry::{AuthConfig, OciRegistry, RegistriesConf, RegistryOptions};
use cocoon_image_pull::{
    BoxError, DecryptionKey, ImagePuller, KeyProvider, LayerStore, ProcessDefaults, PullOptions,
    UnpackOptions,
};
use cocoon_protocols::agent::Storage;
use cocoon_protocols::wire;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;
use serde::Deserialize;
use zeroize::Zeroizing;

use cocoon_attester::AttesterChoice;

use crate::config::{AgentConfig, ImageSettings};
use crate::error::{AgentError, Result};

/// `driver_options` value of an `image_guest_pull` storage (kata-containers
/// `kata_types::mount::ImagePullVolume`).
#[derive(Debug, Default, Deserialize)]
struct ImagePullVolume {
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// What the image stage mounted for a container: released by [`release`].
#[derive(Debug)]
pub struct ImageRootfs {
    /// The overlay (or the pause bundle's bind mount).
    pub mount_point: PathBuf,
    /// The container's overlay upper/work dirs, removed after the unmount.
    pub overlay_dir: Option<PathBuf>,
}

/// The guest image service: settings, the KBS, and (built on first use) the puller.
pub struct Images {
    settings: ImageSettings,
    timeout: Duration,
    https_proxy: String,
    no_proxy: String,
    source: std::result::Result<Arc<dyn ResourceSource>, String>,
    test_keys: std::result::Result<Vec<DecryptionKey>, String>,
    pause_bundle: PathBuf,
    puller: tokio::sync::OnceCell<Arc<ImagePuller>>,
}

impl Images {
    /// From the agent's configuration and its KBS (`source`).
    pub fn new(
        config: &AgentConfig,
        source: std::result::Result<Arc<dyn ResourceSource>, String>,
        pause_bundle: PathBuf,
    ) -> Images {
        let settings = config.image.clone();
        let test_keys = load_test_keys(&settings, config.attester);
        Images {
            timeout: config.image_pull_timeout,
            https_proxy: config.https_proxy.clone(),
            no_proxy: config.no_proxy.clone(),
            settings,
            source,
            test_keys,
            pause_bundle,
            puller: tokio::sync::OnceCell::new(),
        }
    }

    /// The `image_guest_pull` storage among `storages`, if any (at most one).
    pub fn take_storage(storages: &mut Vec<Storage>) -> Result<Option<Storage>> {
        let mut found: Vec<Storage> = Vec::new();
        storages.retain(|s| {
            if s.driver == wire::DRIVER_IMAGE_GUEST_PULL {
                found.push(s.clone());
                false
            } else {
                true
            }
        });
        if found.len() > 1 {
            return Err(AgentError::invalid(
                "storages",
                format!(
                    "{} image_guest_pull storages for one container",
                    found.len()
                ),
            ));
        }
        Ok(found.pop())
    }

    /// Sets the container's rootfs up from its `image_guest_pull` storage and fills the
    /// spec's process in: the pause bundle for the sandbox container, else the pulled
    /// image. `bundle` is `/run/kata-containers/<cid>`; the storage must mount on its
    /// `rootfs`.
    pub async fn prepare(
        &self,
        cid: &str,
        bundle: &Path,
        storage: &Storage,
        spec: &mut Spec,
    ) -> Result<ImageRootfs> {
        let mount_point = bundle.join("rootfs");
        if Path::new(&storage.mount_point) != mount_point {
            return Err(AgentError::invalid(
                "storages.mount_point",
                format!(
                    "an image_guest_pull storage mounts on {}, not {:?}",
                    mount_point.display(),
                    storage.mount_point
                ),
            ));
        }
        let volume = parse_volume(storage)?;
        let is_sandbox =
            is_sandbox(&volume.metadata) || spec.annotations().as_ref().is_some_and(is_sandbox);
        if is_sandbox {
            return self.pause(&mount_point, spec);
        }
        let image = storage.source.clone();
        if image.is_empty() {
            return Err(AgentError::invalid(
                "storages.source",
                "an image_guest_pull storage without an image reference",
            ));
        }
        self.refuse_unenforced_policy(&image)?;
        let puller = self.puller(&image).await?;
        let pulled = tokio::time::timeout(self.timeout, puller.pull(&image))
            .await
            .map_err(|_| {
                AgentError::DeadlineExceeded(format!(
                    "image {image}: pull not finished within {:?} (agent.image_pull_timeout)",
                    self.timeout
                ))
            })?
            .map_err(|e| AgentError::Image(e.to_string()))?;
        let overlay_dir = self.settings.work_dir.join("overlay").join(cid);
        let mp = mount_point.clone();
        let od = overlay_dir.clone();
        let layers = pulled.layers.clone();
        tokio::task::spawn_blocking(move || mount_overlay(&layers, &od, &mp))
            .await
            .map_err(|e| AgentError::internal("overlay mount", e))??;
        let rootfs = ImageRootfs {
            mount_point,
            overlay_dir: Some(overlay_dir),
        };
        if let Err(e) = merge_defaults(spec, &pulled.defaults, &rootfs.mount_point) {
            release(&rootfs);
            return Err(e);
        }
        tracing::info!(
            container = cid,
            image,
            manifest = pulled.manifest_digest,
            layers = pulled.layers.len(),
            "container rootfs from guest-pulled image"
        );
        Ok(rootfs)
    }

    /// The sandbox container: a copy of the pause bundle's rootfs in a small tmpfs (as
    /// upstream copies it, so the runtime can create its mount points), and its process.
    fn pause(&self, mount_point: &Path, spec: &mut Spec) -> Result<ImageRootfs> {
        let config = self.pause_bundle.join("config.json");
        let pause = Spec::load(&config).map_err(|e| {
            AgentError::FailedPrecondition(format!(
                "the pause bundle {} is not usable: {e}",
                config.display()
            ))
        })?;
        let process = pause.process().clone().ok_or_else(|| {
            AgentError::FailedPrecondition(format!("{} has no process", config.display()))
        })?;
        std::fs::create_dir_all(mount_point)
            .map_err(|e| AgentError::internal("creating the rootfs mount point", e))?;
        mount(
            Some("tmpfs"),
            mount_point,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=16m,mode=0755"),
        )
        .map_err(|e| AgentError::internal("mounting the pause rootfs tmpfs", e))?;
        let rootfs = ImageRootfs {
            mount_point: mount_point.to_path_buf(),
            overlay_dir: None,
        };
        let root = self.pause_bundle.join("rootfs");
        if let Err(e) = copy_tree(&root, mount_point) {
            release(&rootfs);
            return Err(AgentError::internal(
                &format!("copying the pause rootfs {}", root.display()),
                e,
            ));
        }
        spec.set_process(Some(process));
        Ok(rootfs)
    }

    /// Upstream's signature policy keys are not implemented: refuse rather than pull an
    /// image the tenant asked to have verified.
    fn refuse_unenforced_policy(&self, image: &str) -> Result<()> {
        let s = &self.settings;
        let set = [
            (
                "image_security_policy_uri",
                s.image_security_policy_uri.is_some(),
            ),
            ("image_security_policy", s.image_security_policy.is_some()),
            ("sigstore_config_uri", s.sigstore_config_uri.is_some()),
            ("sigstore_config", s.sigstore_config.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
            return Err(AgentError::FailedPrecondition(format!(
                "image {image}: [image] {key} is set, but image signature policies are not \
                 supported by this agent; refusing to pull unverified"
            )));
        }
        Ok(())
    }

    /// The puller, built on first use: registry settings may live in the KBS.
    async fn puller(&self, image: &str) -> Result<Arc<ImagePuller>> {
        self.puller
            .get_or_try_init(|| async {
                let options = self.registry_options().await?;
                let registry = OciRegistry::new(options)
                    .map_err(|e| AgentError::Image(format!("registry client: {e}")))?;
                let store_dir = self.settings.work_dir.join("layers");
                let store = tokio::task::spawn_blocking(move || LayerStore::open(&store_dir))
                    .await
                    .map_err(|e| AgentError::internal("layer store", e))?
                    .map_err(|e| {
                        AgentError::internal(
                            &format!(
                                "opening the layer store in {}",
                                self.settings.work_dir.display()
                            ),
                            e,
                        )
                    })?;
                let keys = KbsKeys {
                    source: self.source.clone(),
                    key_uris: self.settings.decryption_key_uris.clone(),
                    test_keys: self.test_keys.clone(),
                    keks: Mutex::new(HashMap::new()),
                    private: OnceLock::new(),
                };
                Ok::<_, AgentError>(Arc::new(ImagePuller::new(
                    Arc::new(registry),
                    Arc::new(keys),
                    Arc::new(store),
                    PullOptions {
                        max_concurrent_layers: self
                            .settings
                            .max_concurrent_layer_downloads_per_image
                            .max(1),
                        unpack: UnpackOptions::default(),
                        ..Default::default()
                    },
                )))
            })
            .await
            .cloned()
            .map_err(|e| match e {
                AgentError::Image(m) => AgentError::Image(format!("image {image}: {m}")),
                other => other,
            })
    }

    async fn registry_options(&self) -> Result<RegistryOptions> {
        let s = &self.settings;
        let mut registries = s.registry_config.clone().unwrap_or_default();
        if let Some(uri) = &s.registry_configuration_uri {
            let text = self.fetch(uri, "registry_configuration_uri").await?;
            let parsed = std::str::from_utf8(&text)
                .map_err(|e| e.to_string())
                .and_then(|t| RegistriesConf::parse(t).map_err(|e| e.to_string()))
                .map_err(|e| AgentError::Image(format!("registry_configuration_uri {uri}: {e}")))?;
            // The URI's rules come after the inline ones (longest prefix wins anyway).
            registries.registry.extend(parsed.registry);
        }
        let auth = match &s.authenticated_registry_credentials_uri {
            Some(uri) => {
                let bytes = self
                    .fetch(uri, "authenticated_registry_credentials_uri")
                    .await?;
                AuthConfig::parse(&bytes).map_err(|e| {
                    AgentError::Image(format!("authenticated_registry_credentials_uri {uri}: {e}"))
                })?
            }
            None => AuthConfig::default(),
        };
        let proxy = s.image_pull_proxy.clone().unwrap_or_default();
        let nonempty = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        Ok(RegistryOptions {
            registries,
            auth,
            https_proxy: proxy.https_proxy.or_else(|| nonempty(&self.https_proxy)),
            http_proxy: proxy.http_proxy,
            no_proxy: proxy.no_proxy.or_else(|| nonempty(&self.no_proxy)),
            extra_root_certificates: s
                .extra_root_certificates
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        })
    }

    /// Reads a `kbs:///`, `file:///` or absolute-path URI.
    async fn fetch(&self, uri: &str, key: &str) -> Result<Zeroizing<Vec<u8>>> {
        let uri = uri.to_owned();
        let source = self.source.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || read_uri(&uri, &source, &key))
            .await
            .map_err(|e| AgentError::internal("fetching image settings", e))?
    }
}

fn read_uri(
    uri: &str,
    source: &std::result::Result<Arc<dyn ResourceSource>, String>,
    key: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    if uri.starts_with("kbs://") {
        let src = source
            .as_ref()
            .map_err(|why| AgentError::Image(format!("[image] {key} {uri}: {why}")))?;
        return src
            .get_resource(uri)
            .map_err(|e| AgentError::Image(format!("[image] {key} {uri}: {e}")));
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if !path.starts_with('/') {
        return Err(AgentError::invalid(
            format!("[image] {key}"),
            format!("{uri:?} is neither kbs:///..., file:///... nor an absolute path"),
        ));
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| AgentError::Image(format!("[image] {key} {uri}: {e}")))
}

/// Local private keys, only with the explicitly requested sample attester.
fn load_test_keys(
    settings: &ImageSettings,
    attester: Option<AttesterChoice>,
) -> std::result::Result<Vec<DecryptionKey>, String> {
    if settings.test_decryption_key_files.is_empty() {
        return Ok(Vec::new());
    }
    if attester != Some(AttesterChoice::Sample) {
        return Err(
            "[image] test_decryption_key_files is a test mode: it needs attester = \"sample\" \
             (a key baked into the measured initrd is no secret)"
                .to_owned(),
        );
    }
    settings
        .test_decryption_key_files
        .iter()
        .map(|p| {
            let bytes =
                Zeroizing::new(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
            DecryptionKey::from_pem_or_der(&bytes).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

fn parse_volume(storage: &Storage) -> Result<ImagePullVolume> {
    let prefix = format!("{}=", wire::DRIVER_IMAGE_GUEST_PULL);
    match storage
        .driver_options
        .iter()
        .find_map(|o| o.strip_prefix(&prefix))
    {
        Some(json) => serde_json::from_str(json).map_err(|e| {
            AgentError::invalid("storages.driver_options", format!("{prefix}...: {e}"))
        }),
        None => Err(AgentError::invalid(
            "storages.driver_options",
            format!("an image_guest_pull storage without {prefix}<json>"),
        )),
    }
}

fn is_sandbox(metadata: &HashMap<String, String>) -> bool {
    wire::CONTAINER_TYPE_ANNOTATIONS
        .iter()
        .any(|k| metadata.get(*k).is_some_and(|v| v == "sandbox"))
}

/// Mounts `layers` (bottom first) as an overlay on `mount_point`, with upper and work
/// dirs in `overlay_dir`.
fn mount_overlay(layers: &[PathBuf], overlay_dir: &Path, mount_point: &Path) -> Result<()> {
    let (upper, work) = (overlay_dir.join("upper"), overlay_dir.join("work"));
    for d in [&upper, &work, &mount_point.to_path_buf()] {
        std::fs::create_dir_all(d)
            .map_err(|e| AgentError::internal(&format!("creating {}", d.display()), e))?;
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    // The kernel copies at most a page of mount data.
    if data.len() >= 4096 {
        let _ = std::fs::remove_dir_all(overlay_dir);
        return Err(AgentError::Image(format!(
            "{} layers make an overlay option string of {} bytes (the kernel takes < 4096)",
            layers.len(),
            data.len()
        )));
    }
    mount(
        Some("overlay"),
        mount_point,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| {
        let _ = std::fs::remove_dir_all(overlay_dir);
        let hint = if e == nix::errno::Errno::ENODEV {
            " (the guest kernel has no overlayfs: build the initrd with --module overlay)"
        } else {
            ""
        };
        AgentError::internal(
            &format!("mounting the overlay on {}{hint}", mount_point.display()),
            e,
        )
    })
}

/// Copies a small trusted tree (the initrd's pause rootfs): dirs, files, symlinks, modes.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src)?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if meta.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode()))?;
        } else if meta.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Unmounts a container's image rootfs and removes its overlay dirs.
pub fn release(rootfs: &ImageRootfs) {
    if let Err(e) = umount2(&rootfs.mount_point, MntFlags::MNT_DETACH) {
        tracing::warn!(path = %rootfs.mount_point.display(), error = %e, "unmounting an image rootfs");
    }
    if let Some(dir) = &rootfs.overlay_dir {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(path = %dir.display(), error = %e, "removing overlay dirs");
        }
    }
}

/// Fills in what the spec leaves empty from the image config, as containerd does when it
/// builds a spec from an image: args = Entrypoint + Cmd when the spec has none, the
/// image's Env under the spec's (the spec wins per name), WorkingDir when the spec's
/// cwd is empty or `/`, and User when the spec runs as 0:0 without a user name.
pub fn merge_defaults(spec: &mut Spec, d: &ProcessDefaults, rootfs: &Path) -> Result<()> {
    let mut process = spec.process().clone().unwrap_or_default();
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        let args: Vec<String> = d
            .entrypoint
            .iter()
            .flatten()
            .chain(d.cmd.iter().flatten())
            .cloned()
            .collect();
        if args.is_empty() {
            return Err(AgentError::invalid(
                "OCI.process.args",
                "empty, and the image config has no Entrypoint or Cmd",
            ));
        }
        process.set_args(Some(args));
    }
    if let Some(image_env) = &d.env {
        let spec_env = process.env().clone().unwrap_or_default();
        let name = |e: &String| e.split('=').next().unwrap_or("").to_owned();
        let set: std::collections::HashSet<String> = spec_env.iter().map(name).collect();
        let mut env: Vec<String> = image_env
            .iter()
            .filter(|e| !set.contains(&name(e)))
            .cloned()
            .collect();
        env.extend(spec_env);
        process.set_env(Some(env));
    }
    if let Some(wd) = d.working_dir.as_ref().filter(|w| !w.is_empty()) {
        let cwd = process.cwd();
        if cwd.as_os_str().is_empty() || cwd == Path::new("/") {
            process.set_cwd(PathBuf::from(wd));
        }
    }
    if let Some(user) = d.user.as_ref().filter(|u| !u.is_empty()) {
        let u = process.user();
        if u.uid() == 0 && u.gid() == 0 && u.username().is_none() {
            let (uid, gid) = crate::users::resolve(rootfs, user)?;
            let mut nu = u.clone();
            nu.set_uid(uid);
            nu.set_gid(gid);
            process.set_user(nu);
        }
    }
    spec.set_process(Some(process));
    Ok(())
}

/// The image-pull crate's key seam, on the agent's KBS session: provider-packet KEKs by
/// their `kid` URI, and the PEM/DER private keys named by `decryption_key_uris` (plus
/// local files in the explicit test mode). Fetched once, kept (zeroized on drop).
struct KbsKeys {
    source: std::result::Result<Arc<dyn ResourceSource>, String>,
    key_uris: Vec<String>,
    test_keys: std::result::Result<Vec<DecryptionKey>, String>,
    keks: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
    private: OnceLock<Vec<DecryptionKey>>,
}

impl KeyProvider for KbsKeys {
    fn kbs_resource(&self, uri: &str) -> std::result::Result<Zeroizing<Vec<u8>>, BoxError> {
        if let Some(k) = self
            .keks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uri)
        {
            return Ok(k.clone());
        }
        let source = self.source.as_ref().map_err(|why| why.clone())?;
        let kek = source.get_resource(uri)?;
        self.keks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uri.to_owned(), kek.clone());
        Ok(kek)
    }

    fn private_keys(&self) -> Vec<DecryptionKey> {
        if let Some(keys) = self.private.get() {
            return keys.clone();
        }
        let mut keys = match &self.test_keys {
            Ok(k) => k.clone(),
            Err(why) => {
                tracing::error!("{why}");
                Vec::new()
            }
        };
        let mut complete = true;
        for uri in &self.key_uris {
            let fetched = self
                .source
                .as_ref()
                .map_err(|why| why.clone())
                .and_then(|s| s.get_resource(uri).map_err(|e| e.to_string()))
                .and_then(|pem| DecryptionKey::from_pem_or_der(&pem).map_err(|e| e.to_string()));
            match fetched {
                Ok(k) => keys.push(k),
                Err(e) => {
                    complete = false;
                    tracing::error!(uri, error = %e, "[image] decryption_key_uris: key not usable");
                }
            }
        }
        // Cache only a complete set: a KBS that was down gets asked again.
        if complete {
            let _ = self.private.set(keys.clone());
        }
        keys
    }
}
