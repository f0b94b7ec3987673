//! Registry client: resolve a reference to a `linux/amd64` image manifest, fetch its config
//! and stream its layer blobs, on `oci-client` (reqwest + rustls, no OpenSSL).
//!
//! The seam is the async [`Registry`] trait (async-trait): the agent holds a
//! `Box<dyn Registry>`, tests can substitute their own. [`OciRegistry`] implements it and
//! applies a containers-registries.conf v2 ([`RegistriesConf`]): longest-prefix rewrite of
//! the reference to `location`, `blocked` refused, plain HTTP only where `insecure = true`,
//! mirrors tried in order before the location. Credentials come from a docker `auth.json`
//! ([`AuthConfig`]); oci-client does the basic / bearer-token dance.
//!
//! Not done yet: wildcard prefixes (`*.example.com`), `unqualified-search-registries`,
//! short-name aliases, `pull-from-mirror`.

use std::collections::BTreeMap;
use std::str::FromStr;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Media types and platform names the registry client negotiates and selects on.
/// <https://github.com/opencontainers/image-spec/blob/main/media-types.md>,
/// <https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests>,
/// docker: <https://distribution.github.io/distribution/spec/manifest-v2-2/>.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index (multi-platform).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest v2 schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list (multi-platform).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Every manifest media type we accept, in `Accept` order.
    pub const ACCEPTED: &[&str] = &[
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
    /// The platform we run on (image-spec `platform.os` / `platform.architecture`).
    pub const PLATFORM_OS: &str = "linux";
    /// See [`PLATFORM_OS`].
    pub const PLATFORM_ARCH: &str = "amd64";
}

/// What a registry operation failed on, with the image reference and registry named.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("image {image}: invalid reference: {reason}")]
    InvalidReference { image: String, reason: String },
    #[error("registries.conf: {0}")]
    Config(String),
    #[error("auth.json: {0}")]
    AuthJson(String),
    #[error("image {image}: registry {registry} is blocked by registries.conf (prefix {prefix})")]
    Blocked {
        image: String,
        registry: String,
        prefix: String,
    },
    #[error(
        "image {image}: registry {registry}: plain HTTP refused (location is http:// but not marked insecure = true)"
    )]
    InsecureRefused { image: String, registry: String },
    #[error("image {image}: registry {registry}: {what} not found")]
    NotFound {
        image: String,
        registry: String,
        what: String,
    },
    #[error("image {image}: registry {registry}: unauthorized fetching {what}")]
    Unauthorized {
        image: String,
        registry: String,
        what: String,
    },
    #[error("image {image}: registry {registry}: index {index} has no linux/amd64 manifest")]
    NoPlatform {
        image: String,
        registry: String,
        index: String,
    },
    #[error(
        "image {image}: registry {registry}: manifest digest mismatch: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        image: String,
        registry: String,
        expected: String,
        actual: String,
    },
    #[error("image {image}: registry {registry}: {what}: {reason}")]
    Other {
        image: String,
        registry: String,
        what: String,
        reason: String,
    },
}

/// A manifest resolved for `linux/amd64`, and the endpoint that served it (blobs are
/// fetched from the same endpoint).
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as the caller gave it.
    pub image: String,
    /// The repository on the endpoint that served the manifest (after rewriting).
    pub source: Reference,
    /// Digest of the image manifest (`sha256:...`).
    pub manifest_digest: String,
    /// Digest of the index it was chosen from, when the reference named an index.
    pub index_digest: Option<String>,
    /// The raw manifest bytes (their sha256 is `manifest_digest`).
    pub manifest_bytes: Bytes,
    /// The parsed manifest.
    pub manifest: OciImageManifest,
}

/// A layer blob as a stream of chunks; never buffered whole.
pub struct BlobStream {
    /// `Content-Length`, when the registry sent one.
    pub content_length: Option<u64>,
    /// The chunks. oci-client verifies the digest at the end of the stream; callers hash
    /// it again in their pipeline anyway.
    pub stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

/// The registry seam (async).
#[async_trait]
pub trait Registry: Send + Sync {
    /// Resolve a tag or digest reference to a `linux/amd64` image manifest.
    async fn resolve(&self, image: &str) -> Result<ResolvedImage, RegistryError>;
    /// Fetch the image config blob (small; buffered, its digest checked).
    async fn fetch_config(&self, image: &ResolvedImage) -> Result<Vec<u8>, RegistryError>;
    /// Open a blob (a layer) as a stream.
    async fn open_blob(
        &self,
        image: &ResolvedImage,
        descriptor: &OciDescriptor,
    ) -> Result<BlobStream, RegistryError>;
}

/// containers-registries.conf v2 (TOML), the parts we honour.
/// <https://github.com/containers/image/blob/main/docs/containers-registries.conf.5.md>
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistriesConf {
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistryEntry {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub mirror: Vec<MirrorEntry>,
}

/// One `[[registry.mirror]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MirrorEntry {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

impl RegistriesConf {
    /// Parse a registries.conf v2 document.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        toml::from_str(text).map_err(|e| RegistryError::Config(e.to_string()))
    }
}

/// Docker `auth.json` credentials: `{"auths":{"host":{"auth":"b64(user:pass)"}}}`.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    auths: BTreeMap<String, RegistryAuth>,
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl AuthConfig {
    /// Parse an `auth.json` document.
    pub fn parse(bytes: &[u8]) -> Result<Self, RegistryError> {
        let file: AuthFile =
            serde_json::from_slice(bytes).map_err(|e| RegistryError::AuthJson(e.to_string()))?;
        let mut auths = BTreeMap::new();
        for (host, entry) in file.auths {
            let auth = if let Some(token) = entry.registrytoken {
                RegistryAuth::Bearer(token)
            } else if let Some(b64) = entry.auth {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| RegistryError::AuthJson(format!("{host}: auth: {e}")))?;
                let text = String::from_utf8(raw)
                    .map_err(|_| RegistryError::AuthJson(format!("{host}: auth is not UTF-8")))?;
                let (user, pass) = text.split_once(':').ok_or_else(|| {
                    RegistryError::AuthJson(format!("{host}: auth is not user:password"))
                })?;
                RegistryAuth::Basic(user.to_owned(), pass.to_owned())
            } else if let (Some(u), Some(p)) = (entry.username, entry.password) {
                RegistryAuth::Basic(u, p)
            } else {
                continue;
            };
            auths.insert(normalize_auth_host(&host), auth);
        }
        Ok(Self { auths })
    }

    /// Credentials for a registry host (`host[:port]`), anonymous when none.
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        let key = normalize_auth_host(registry);
        self.auths
            .get(&key)
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

fn normalize_auth_host(host: &str) -> String {
    let h = host
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let h = h.split('/').next().unwrap_or(h);
    match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

/// Settings for [`OciRegistry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub registries: RegistriesConf,
    pub auth: AuthConfig,
    /// `agent.https_proxy` / `image_pull_proxy.https_proxy`: for HTTPS registries.
    pub https_proxy: Option<String>,
    /// `image_pull_proxy.http_proxy`: for the plain-HTTP (`insecure`) ones.
    pub http_proxy: Option<String>,
    /// `agent.no_proxy`.
    pub no_proxy: Option<String>,
    /// Extra PEM root certificates.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

/// One place to try: a rewritten reference. (Whether it is plain HTTP is decided by the
/// client's `HttpsExcept` list, built from the same registries.conf.)
#[derive(Debug, Clone)]
struct Endpoint {
    reference: Reference,
}

/// [`Registry`] on oci-client.
pub struct OciRegistry {
    client: Client,
    options: RegistryOptions,
}

impl OciRegistry {
    /// Build a client. Plain HTTP is used exactly for the hosts whose registries.conf
    /// entry (or mirror) says `insecure = true`.
    pub fn new(options: RegistryOptions) -> Result<Self, RegistryError> {
        // oci-client 0.18 builds a `reqwest::Client::new()` inside every `Client` (its
        // `Default`), and that panics when the system has no root certificate at all —
        // extra roots do not help. In PID 1 a panic powers the VM off: say what is
        // missing instead.
        if rustls_native_certs::load_native_certs().certs.is_empty() {
            return Err(RegistryError::Config(
                "no CA certificates in the guest (/etc/ssl/certs; rootfs-builder --ca-certs \
                 installs a bundle): the registry client cannot be built without them"
                    .to_owned(),
            ));
        }
        let mut insecure_hosts = Vec::new();
        for entry in &options.registries.registry {
            if entry.insecure {
                insecure_hosts.push(host_of(&entry.location));
            }
            for m in &entry.mirror {
                if m.insecure {
                    insecure_hosts.push(host_of(&m.location));
                }
            }
        }
        // reqwest is built without a crypto provider of its own and takes the process's
        // default: ring. An error only says one is installed already (ours, earlier).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure_hosts),
            https_proxy: options.https_proxy.clone(),
            http_proxy: options.http_proxy.clone(),
            no_proxy: options.no_proxy.clone(),
            extra_root_certificates: options
                .extra_root_certificates
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..ClientConfig::default()
        };
        Ok(Self {
            client: Client::new(config),
            options,
        })
    }

    /// The endpoints to try for `image`, mirrors first, after registries.conf rules.
    fn endpoints(&self, image: &str) -> Result<Vec<Endpoint>, RegistryError> {
        let reference =
            Reference::from_str(image).map_err(|e| RegistryError::InvalidReference {
                image: image.to_owned(),
                reason: e.to_string(),
            })?;
        let name = format!("{}/{}", reference.registry(), reference.repository());
        let best = self
            .options
            .registries
            .registry
            .iter()
            .filter_map(|e| {
                let prefix = e.prefix.clone().unwrap_or_else(|| e.location.clone());
                prefix_matches(&name, &prefix).then_some((prefix, e))
            })
            .max_by_key(|(p, _)| p.len());
        let Some((prefix, entry)) = best else {
            return Ok(vec![Endpoint { reference }]);
        };
        if entry.blocked {
            return Err(RegistryError::Blocked {
                image: image.to_owned(),
                registry: reference.registry().to_owned(),
                prefix,
            });
        }
        let mut out = Vec::new();
        let candidates = entry
            .mirror
            .iter()
            .map(|m| (m.location.as_str(), m.insecure))
            .chain(
                (!entry.location.is_empty()).then_some((entry.location.as_str(), entry.insecure)),
            );
        for (location, insecure) in candidates {
            let location = if let Some(rest) = location.strip_prefix("http://") {
                if !insecure {
                    return Err(RegistryError::InsecureRefused {
                        image: image.to_owned(),
                        registry: rest.to_owned(),
                    });
                }
                rest
            } else {
                location.strip_prefix("https://").unwrap_or(location)
            };
            let rewritten = format!("{location}{}", &name[prefix.len()..]);
            out.push(Endpoint {
                reference: rebuild(image, &rewritten, &reference)?,
            });
        }
        if out.is_empty() {
            out.push(Endpoint { reference });
        }
        Ok(out)
    }

    async fn resolve_at(&self, image: &str, ep: &Endpoint) -> Result<ResolvedImage, RegistryError> {
        let reference = &ep.reference;
        let registry = reference.registry().to_owned();
        let auth = self.options.auth.for_registry(&registry);
        let (bytes, _registry_digest) = self
            .client
            .pull_manifest_raw(reference, &auth, media::ACCEPTED)
            .await
            .map_err(|e| map_err(image, &registry, "manifest", e))?;
        let actual = sha256_digest(&bytes);
        if let Some(expected) = reference.digest() {
            if expected != actual {
                return Err(RegistryError::DigestMismatch {
                    image: image.to_owned(),
                    registry,
                    expected: expected.to_owned(),
                    actual,
                });
            }
        }
        let kind = manifest_kind(&bytes);
        if kind == media::OCI_INDEX || kind == media::DOCKER_MANIFEST_LIST {
            let index: OciImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::Other {
                    image: image.to_owned(),
                    registry: registry.clone(),
                    what: "index".to_owned(),
                    reason: e.to_string(),
                })?;
            let chosen = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform.as_ref().is_some_and(|p| {
                        p.os.to_string() == media::PLATFORM_OS
                            && p.architecture.to_string() == media::PLATFORM_ARCH
                    })
                })
                .ok_or_else(|| RegistryError::NoPlatform {
                    image: image.to_owned(),
                    registry: registry.clone(),
                    index: actual.clone(),
                })?;
            let child = Reference::with_digest(
                registry.clone(),
                reference.repository().to_owned(),
                chosen.digest.clone(),
            );
            let (cbytes, _) = self
                .client
                .pull_manifest_raw(&child, &auth, media::ACCEPTED)
                .await
                .map_err(|e| map_err(image, &registry, "manifest", e))?;
            let cactual = sha256_digest(&cbytes);
            if cactual != chosen.digest {
                return Err(RegistryError::DigestMismatch {
                    image: image.to_owned(),
                    registry,
                    expected: chosen.digest.clone(),
                    actual: cactual,
                });
            }
            let manifest = parse_manifest(image, &registry, &cbytes)?;
            return Ok(ResolvedImage {
                image: image.to_owned(),
                source: child,
                manifest_digest: cactual,
                index_digest: Some(actual),
                manifest_bytes: cbytes,
                manifest,
            });
        }
        let manifest = parse_manifest(image, &registry, &bytes)?;
        Ok(ResolvedImage {
            image: image.to_owned(),
            source: reference.clone(),
            manifest_digest: actual,
            index_digest: None,
            manifest_bytes: bytes,
            manifest,
        })
    }
}

#[async_trait]
impl Registry for OciRegistry {
    async fn resolve(&self, image: &str) -> Result<ResolvedImage, RegistryError> {
        let endpoints = self.endpoints(image)?;
        let mut last = None;
        for ep in &endpoints {
            match self.resolve_at(image, ep).await {
                Ok(r) => return Ok(r),
                // A wrong digest is not a reason to try the next mirror: it is an attack
                // or a broken reference either way; report it.
                Err(e @ RegistryError::DigestMismatch { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::InvalidReference {
            image: image.to_owned(),
            reason: "no endpoint".to_owned(),
        }))
    }

    async fn fetch_config(&self, image: &ResolvedImage) -> Result<Vec<u8>, RegistryError> {
        let registry = image.source.registry().to_owned();
        let desc = &image.manifest.config;
        let mut out = Vec::new();
        self.client
            .pull_blob(&image.source, desc, &mut out)
            .await
            .map_err(|e| map_err(&image.image, &registry, "config blob", e))?;
        let actual = sha256_digest(&out);
        if actual != desc.digest {
            return Err(RegistryError::DigestMismatch {
                image: image.image.clone(),
                registry,
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(out)
    }

    async fn open_blob(
        &self,
        image: &ResolvedImage,
        descriptor: &OciDescriptor,
    ) -> Result<BlobStream, RegistryError> {
        let registry = image.source.registry().to_owned();
        let sized = self
            .client
            .pull_blob_stream(&image.source, descriptor)
            .await
            .map_err(|e| {
                map_err(
                    &image.image,
                    &registry,
                    &format!("blob {}", descriptor.digest),
                    e,
                )
            })?;
        Ok(BlobStream {
            content_length: sized.content_length,
            stream: sized.stream,
        })
    }
}

fn parse_manifest(
    image: &str,
    registry: &str,
    bytes: &[u8],
) -> Result<OciImageManifest, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Other {
        image: image.to_owned(),
        registry: registry.to_owned(),
        what: "manifest".to_owned(),
        reason: e.to_string(),
    })
}

/// The manifest's `mediaType` field (index vs manifest is decided on the body, not on
/// the `Content-Type` header, which oci-client does not return).
fn manifest_kind(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => media::OCI_INDEX.to_owned(),
        _ => media::OCI_MANIFEST.to_owned(),
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn host_of(location: &str) -> String {
    let l = location
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    l.split('/').next().unwrap_or(l).to_owned()
}

/// registries.conf prefix matching: the prefix ends at a path component boundary.
fn prefix_matches(name: &str, prefix: &str) -> bool {
    let prefix = prefix
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn rebuild(image: &str, name: &str, original: &Reference) -> Result<Reference, RegistryError> {
    let (registry, repository) =
        name.split_once('/')
            .ok_or_else(|| RegistryError::InvalidReference {
                image: image.to_owned(),
                reason: format!("rewritten name {name} has no repository"),
            })?;
    let (r, p) = (registry.to_owned(), repository.to_owned());
    Ok(match (original.tag(), original.digest()) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(r, p, t.to_owned(), d.to_owned()),
        (None, Some(d)) => Reference::with_digest(r, p, d.to_owned()),
        (Some(t), None) => Reference::with_tag(r, p, t.to_owned()),
        (None, None) => Reference::with_tag(r, p, "latest".to_owned()),
    })
}

fn map_err(image: &str, registry: &str, what: &str, e: OciDistributionError) -> RegistryError {
    let (image, registry, what) = (image.to_owned(), registry.to_owned(), what.to_owned());
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
            image,
            registry,
            what,
        },
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
            image,
            registry,
            what,
        },
        OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound {
            image,
            registry,
            what,
        },
        OciDistributionError::ServerError { code: 401, .. } => RegistryError::Unauthorized {
            image,
            registry,
            what,
        },
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            RegistryError::Unauthorized {
                image,
                registry,
                what,
            }
        }
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                )
            }) =>
        {
            RegistryError::NotFound {
                image,
                registry,
                what,
            }
        }
        other => RegistryError::Other {
            image,
            registry,
            what,
            reason: format!("{other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_and_blocked() {
        let conf = RegistriesConf::parse(
            r#"
[[registry]]
prefix = "example.com/foo"
location = "mirror.local:5000/bar"
insecure = true

[[registry]]
prefix = "example.com"
location = "example.com"
[[registry.mirror]]
location = "m1.local"

[[registry]]
prefix = "evil.io"
location = "evil.io"
blocked = true

[[registry]]
prefix = "plain.io"
location = "http://plain.io"
"#,
        )
        .unwrap();
        let reg = OciRegistry::new(RegistryOptions {
            registries: conf,
            ..Default::default()
        })
        .unwrap();
        let eps = reg.endpoints("example.com/foo/x:1").unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].reference.registry(), "mirror.local:5000");
        assert_eq!(eps[0].reference.repository(), "bar/x");
        let eps = reg.endpoints("example.com/foobar/x:1").unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].reference.registry(), "m1.local");
        assert_eq!(eps[1].reference.registry(), "example.com");
        assert!(matches!(
            reg.endpoints("evil.io/a/b:1"),
            Err(RegistryError::Blocked { .. })
        ));
        assert!(matches!(
            reg.endpoints("plain.io/a:1"),
            Err(RegistryError::InsecureRefused { .. })
        ));
    }

    #[test]
    fn auth_json() {
        let a = AuthConfig::parse(br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"127.0.0.1:5000":{"auth":"YTpiOmM="}}}"#).unwrap();
        assert!(
            matches!(a.for_registry("docker.io"), RegistryAuth::Basic(u, p) if u == "u" && p == "p")
        );
        assert!(
            matches!(a.for_registry("127.0.0.1:5000"), RegistryAuth::Basic(u, p) if u == "a" && p == "b:c")
        );
        assert!(matches!(a.for_registry("other"), RegistryAuth::Anonymous));
    }
}
