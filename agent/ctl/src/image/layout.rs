//! `image encrypt`: encrypts the layers of an OCI image layout (the directory
//! `skopeo copy docker://.. oci:DIR:TAG` writes) as ocicrypt does, with CoCo annotation
//! packets for the key provider — what `skopeo copy --encryption-key
//! provider:attestation-agent:keyid=..::keypath=..` makes with upstream's coco_keyprovider.
//!
//! Per layer: blob (its digest checked) → AES-256-CTR with a fresh key and nonce → a new
//! blob; the descriptor gets `+encrypted`, the new digest and size, `enc.pubopts` (the
//! HMAC) and `enc.keys.provider.<name>` (the packet). The image config, and so its
//! `diff_ids`, stays as it is. Manifests, nested indexes and `index.json` are rewritten
//! bottom-up (a Docker v2s2 manifest becomes OCI, as containers/image does when it
//! encrypts). In place, the replaced plaintext blobs are removed once nothing in the
//! layout refers to them; with an output directory only the blobs the result needs are
//! written there (hard links where possible).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::Digest as _;

use super::jwe::{self, Recipient};
use super::keywrap::{self, EncryptedBlob, Kek, LayerSecret, B64};
use super::{spec, ImageError};
use base64::Engine as _;

/// What to encrypt, with which key.
#[derive(Debug)]
pub struct EncryptOptions {
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// Write the result here (a new or empty directory) instead of in place.
    pub output: Option<PathBuf>,
    /// Only the `index.json` entries with these `org.opencontainers.image.ref.name`s (all
    /// when empty).
    pub tags: Vec<String>,
    /// Only these layers of each manifest, 0-based, negative from the end (skopeo's
    /// `--encrypt-layer`); all when empty.
    pub layers: Vec<i64>,
    /// The key-encryption key and its KBS resource URI (`kbs:///<repo>/<type>/<tag>`):
    /// a CoCo annotation packet.
    pub kbs: Option<(Kek, String)>,
    /// JWE recipients (`enc.keys.jwe`).
    pub recipients: Vec<Recipient>,
    /// Annotation suffix: `org.opencontainers.image.enc.keys.provider.<name>`.
    pub provider_name: String,
    /// Encrypt zstd layers too. Upstream image-rs knows only `tar+encrypted` and
    /// `tar+gzip+encrypted` (`image-rs/src/decrypt.rs` `Decryptor::from_media_type`), so by
    /// default a zstd layer is an error; Cocoon's guest decrypts `tar+zstd+encrypted`.
    pub allow_zstd: bool,
}

/// What one encrypted image manifest became.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestChange {
    /// Its tag in `index.json`, if any.
    pub tag: Option<String>,
    /// The old manifest (or index) digest.
    pub from: String,
    /// The new one.
    pub to: String,
    /// Layers encrypted now.
    pub encrypted: usize,
    /// Layers that were encrypted already (left as they were).
    pub already: usize,
}

/// The result of [`encrypt_layout`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EncryptReport {
    /// One per image manifest touched (nested ones included).
    pub manifests: Vec<ManifestChange>,
    /// Plaintext blobs removed from the layout (in place only).
    pub removed: Vec<String>,
}

struct Store {
    src: PathBuf,
    dst: PathBuf,
    tmp_seq: u64,
    /// Blobs this run wrote (removed again when the run fails).
    created: Vec<PathBuf>,
}

fn blob_rel(digest: &str) -> Result<PathBuf, ImageError> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| ImageError::Layout(format!("bad digest {digest:?}")))?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(ImageError::Layout(format!("bad digest {digest:?}"))),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ImageError::Layout(format!("bad digest {digest:?}")));
    }
    Ok(Path::new("blobs").join(alg).join(hex))
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn check_digest(digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let got = match digest.split_once(':') {
        Some(("sha512", _)) => format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes))),
        _ => sha256_digest(bytes),
    };
    if got != digest {
        return Err(ImageError::Layout(format!(
            "blob {digest} has digest {got}: the layout is corrupt"
        )));
    }
    Ok(())
}

/// Removes a temporary file unless it was kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Store {
    /// Where a blob is: the output first, then the source.
    fn path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let rel = blob_rel(digest)?;
        let d = self.dst.join(&rel);
        if d.exists() {
            return Ok(d);
        }
        Ok(self.src.join(rel))
    }

    fn read_verified(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.path(digest)?;
        let bytes = std::fs::read(&p).map_err(|e| ImageError::io(&p, e))?;
        check_digest(digest, &bytes)?;
        Ok(bytes)
    }

    fn temp(&mut self) -> PathBuf {
        self.tmp_seq += 1;
        self.dst.join("blobs").join("sha256").join(format!(
            ".cocoon-tmp-{}-{}",
            std::process::id(),
            self.tmp_seq
        ))
    }

    /// Writes a small blob (manifest, index) and returns its sha256 digest.
    fn put(&mut self, bytes: &[u8]) -> Result<String, ImageError> {
        let digest = sha256_digest(bytes);
        let path = self.dst.join(blob_rel(&digest)?);
        if !path.exists() {
            let tmp = TempFile(Some(self.temp()));
            let t = tmp.path();
            std::fs::write(t, bytes).map_err(|e| ImageError::io(t, e))?;
            persist(tmp, &path)?;
            self.created.push(path);
        }
        Ok(digest)
    }

    /// Encrypts the layer blob `digest` into a new blob.
    fn encrypt(&mut self, digest: &str, secret: &LayerSecret) -> Result<EncryptedBlob, ImageError> {
        if !digest.starts_with("sha256:") {
            return Err(ImageError::Layout(format!(
                "layer {digest}: only sha256 layer digests are supported"
            )));
        }
        let src = self.path(digest)?;
        let input = File::open(&src).map_err(|e| ImageError::io(&src, e))?;
        let tmp = TempFile(Some(self.temp()));
        let t = tmp.path().to_owned();
        let out = File::create(&t).map_err(|e| ImageError::io(&t, e))?;
        let mut w = BufWriter::new(out);
        let r = keywrap::encrypt_stream(secret, BufReader::new(input), &mut w)
            .map_err(|e| ImageError::io(&src, e))?;
        let out = w
            .into_inner()
            .map_err(|e| ImageError::io(&t, e.into_error()))?;
        out.sync_all().map_err(|e| ImageError::io(&t, e))?;
        if r.plain_digest != digest {
            return Err(ImageError::Layout(format!(
                "blob {digest} has digest {}: the layout is corrupt",
                r.plain_digest
            )));
        }
        let path = self.dst.join(blob_rel(&r.digest)?);
        persist(tmp, &path)?;
        self.created.push(path);
        Ok(r)
    }
}

fn persist(mut tmp: TempFile, to: &Path) -> Result<(), ImageError> {
    let Some(from) = tmp.0.take() else {
        return Ok(());
    };
    std::fs::rename(&from, to).map_err(|e| {
        let _ = std::fs::remove_file(&from);
        ImageError::io(to, e)
    })
}

fn media_type(desc: &Value) -> &str {
    desc.get("mediaType").and_then(Value::as_str).unwrap_or("")
}

fn digest_of(desc: &Value) -> Result<&str, ImageError> {
    desc.get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| ImageError::Layout("descriptor without digest".into()))
}

/// The encrypted media type of a layer, `None` when it is encrypted already.
fn encrypted_media_type(mt: &str) -> Result<Option<String>, ImageError> {
    if mt.ends_with(spec::ENCRYPTED_SUFFIX) {
        return Ok(None);
    }
    let base = match mt {
        spec::MEDIA_TYPE_TAR
        | spec::MEDIA_TYPE_TAR_GZIP
        | spec::MEDIA_TYPE_TAR_ZSTD
        | spec::MEDIA_TYPE_ND_TAR
        | spec::MEDIA_TYPE_ND_TAR_GZIP
        | spec::MEDIA_TYPE_ND_TAR_ZSTD => mt,
        spec::MEDIA_TYPE_DOCKER_TAR_GZIP => spec::MEDIA_TYPE_TAR_GZIP,
        spec::MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP => spec::MEDIA_TYPE_ND_TAR_GZIP,
        other => {
            return Err(ImageError::Layout(format!(
                "layer media type {other:?} is not one we can encrypt"
            )))
        }
    };
    Ok(Some(format!("{base}{}", spec::ENCRYPTED_SUFFIX)))
}

/// Docker v2s2 → OCI media types (for a manifest that gets encrypted layers).
fn oci_media_type(mt: &str) -> &str {
    match mt {
        spec::MEDIA_TYPE_DOCKER_TAR_GZIP => spec::MEDIA_TYPE_TAR_GZIP,
        spec::MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP => spec::MEDIA_TYPE_ND_TAR_GZIP,
        spec::MEDIA_TYPE_DOCKER_CONFIG => spec::MEDIA_TYPE_OCI_CONFIG,
        spec::MEDIA_TYPE_DOCKER_MANIFEST => spec::MEDIA_TYPE_OCI_MANIFEST,
        spec::MEDIA_TYPE_DOCKER_MANIFEST_LIST => spec::MEDIA_TYPE_OCI_INDEX,
        other => other,
    }
}

fn selected(layers: &[i64], count: usize) -> Result<BTreeSet<usize>, ImageError> {
    if layers.is_empty() {
        return Ok((0..count).collect());
    }
    let n = count as i64;
    layers
        .iter()
        .map(|&i| {
            let j = if i < 0 { n + i } else { i };
            if (0..n).contains(&j) {
                Ok(j as usize)
            } else {
                Err(ImageError::Layout(format!(
                    "layer index {i} is out of range: the image has {count} layers"
                )))
            }
        })
        .collect()
}

struct Encryptor<'a> {
    opts: &'a EncryptOptions,
    store: Store,
    /// Old layer digest → its encrypted descriptor (a layer shared by two manifests is
    /// encrypted once).
    done: BTreeMap<String, Value>,
    report: EncryptReport,
    replaced: BTreeSet<String>,
}

impl Encryptor<'_> {
    fn annotation_name(&self) -> String {
        format!(
            "{}{}",
            spec::ANNOTATION_KEYS_PROVIDER_PREFIX,
            self.opts.provider_name
        )
    }

    fn encrypt_layer(&mut self, layer: &Value) -> Result<Option<Value>, ImageError> {
        let mt = media_type(layer);
        if !self.opts.allow_zstd
            && (mt == spec::MEDIA_TYPE_TAR_ZSTD || mt == spec::MEDIA_TYPE_ND_TAR_ZSTD)
        {
            return Err(ImageError::Layout(format!(
                "layer {}: {mt}: upstream CoCo cannot decrypt encrypted zstd layers; \
                 recompress with gzip (skopeo copy --dest-compress-format gzip) or pass \
                 --allow-zstd (Cocoon's guest only)",
                digest_of(layer)?
            )));
        }
        let Some(new_mt) = encrypted_media_type(mt)? else {
            return Ok(None);
        };
        let digest = digest_of(layer)?.to_owned();
        if let Some(done) = self.done.get(&digest) {
            return Ok(Some(done.clone()));
        }
        let secret = LayerSecret::random();
        let r = self.store.encrypt(&digest, &secret)?;
        if let Some(size) = layer.get("size").and_then(Value::as_u64) {
            if size != r.size {
                return Err(ImageError::Layout(format!(
                    "layer {digest}: descriptor says {size} bytes, blob has {}",
                    r.size
                )));
            }
        }
        let privopts = secret.private_options(&digest);
        let packet = match &self.opts.kbs {
            Some((kek, kid)) => Some(keywrap::wrap_packet(kek, kid, &privopts)?),
            None => None,
        };
        let jwe = match self.opts.recipients.as_slice() {
            [] => None,
            r => Some(jwe::encrypt(r, &privopts)?),
        };
        let mut new = layer.clone();
        let obj = new
            .as_object_mut()
            .ok_or_else(|| ImageError::Layout("layer descriptor is not an object".into()))?;
        obj.insert("mediaType".into(), json!(new_mt));
        obj.insert("digest".into(), json!(r.digest));
        obj.insert("size".into(), json!(r.size));
        let ann = obj
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| ImageError::Layout("layer annotations are not an object".into()))?;
        if let Some(packet) = packet {
            ann.insert(self.annotation_name(), json!(B64.encode(packet)));
        }
        if let Some(jwe) = jwe {
            ann.insert(spec::ANNOTATION_KEYS_JWE.into(), json!(B64.encode(jwe)));
        }
        ann.insert(
            spec::ANNOTATION_PUBOPTS.into(),
            json!(keywrap::public_options_annotation(&r.hmac)),
        );
        self.replaced.insert(digest.clone());
        self.done.insert(digest, new.clone());
        Ok(Some(new))
    }

    /// Rewrites the blob a descriptor points to; returns the new descriptor, or `None`
    /// when nothing changed.
    fn descriptor(&mut self, desc: &Value, tag: Option<&str>) -> Result<Option<Value>, ImageError> {
        let digest = digest_of(desc)?.to_owned();
        let bytes = self.store.read_verified(&digest)?;
        let mut body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Layout(format!("{digest}: not JSON: {e}")))?;
        let mt = match media_type(desc) {
            "" => media_type(&body).to_owned(),
            m => m.to_owned(),
        };
        let changed = match mt.as_str() {
            spec::MEDIA_TYPE_OCI_INDEX | spec::MEDIA_TYPE_DOCKER_MANIFEST_LIST => {
                self.index(&mut body)?
            }
            spec::MEDIA_TYPE_OCI_MANIFEST | spec::MEDIA_TYPE_DOCKER_MANIFEST => {
                self.manifest(&mut body, &digest, tag)?
            }
            other => {
                return Err(ImageError::Layout(format!(
                    "{digest}: media type {other:?} is neither an image manifest nor an index"
                )))
            }
        };
        if !changed {
            return Ok(None);
        }
        let new_mt = oci_media_type(&mt).to_owned();
        if body.get("mediaType").is_some() || new_mt != mt {
            body["mediaType"] = json!(new_mt);
        }
        let out = serde_json::to_vec(&body).map_err(|e| ImageError::Layout(e.to_string()))?;
        let new_digest = self.store.put(&out)?;
        self.replaced.insert(digest.clone());
        if let Some(m) = self.report.manifests.iter_mut().find(|m| m.from == digest) {
            m.to = new_digest.clone();
        }
        let mut new = desc.clone();
        new["mediaType"] = json!(new_mt);
        new["digest"] = json!(new_digest);
        new["size"] = json!(out.len());
        Ok(Some(new))
    }

    fn index(&mut self, body: &mut Value) -> Result<bool, ImageError> {
        let Some(list) = body.get_mut("manifests").and_then(Value::as_array_mut) else {
            return Err(ImageError::Layout("index without manifests".into()));
        };
        let mut changed = false;
        for entry in list.iter_mut() {
            if let Some(new) = self.descriptor(entry, None)? {
                *entry = new;
                changed = true;
            }
        }
        Ok(changed)
    }

    fn manifest(
        &mut self,
        body: &mut Value,
        digest: &str,
        tag: Option<&str>,
    ) -> Result<bool, ImageError> {
        let layers = body
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| ImageError::Layout(format!("manifest {digest} without layers")))?;
        let chosen = selected(&self.opts.layers, layers.len())?;
        let (mut encrypted, mut already) = (0, 0);
        let mut new_layers = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            if media_type(layer).ends_with(spec::ENCRYPTED_SUFFIX) {
                already += 1;
            }
            if !chosen.contains(&i) {
                new_layers.push(layer.clone());
                continue;
            }
            match self.encrypt_layer(layer)? {
                Some(new) => {
                    encrypted += 1;
                    new_layers.push(new);
                }
                None => new_layers.push(layer.clone()),
            }
        }
        if encrypted == 0 {
            return Ok(false);
        }
        // An encrypted image is an OCI one: Docker types become OCI types throughout.
        for l in new_layers.iter_mut() {
            let mt = oci_media_type(media_type(l)).to_owned();
            l["mediaType"] = json!(mt);
        }
        body["layers"] = Value::Array(new_layers);
        if let Some(cfg) = body.get_mut("config") {
            let mt = oci_media_type(media_type(cfg)).to_owned();
            cfg["mediaType"] = json!(mt);
        }
        self.report.manifests.push(ManifestChange {
            tag: tag.map(str::to_owned),
            from: digest.to_owned(),
            to: String::new(),
            encrypted,
            already,
        });
        Ok(true)
    }
}

fn read_json(path: &Path) -> Result<Value, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::Layout(format!("{}: not JSON: {e}", path.display())))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("cocoon-tmp-{}", std::process::id()));
    let t = TempFile(Some(tmp.clone()));
    let mut f = File::create(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ImageError::io(&tmp, e))?;
    persist(t, path)
}

/// Every blob reachable from `index` (indexes and manifests read from `store`).
fn reachable(store: &Store, index: &Value) -> Result<BTreeSet<String>, ImageError> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<Value> = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    while let Some(desc) = todo.pop() {
        let digest = digest_of(&desc)?.to_owned();
        if !seen.insert(digest.clone()) {
            continue;
        }
        let mt = media_type(&desc);
        let json_kind = matches!(
            mt,
            spec::MEDIA_TYPE_OCI_INDEX
                | spec::MEDIA_TYPE_DOCKER_MANIFEST_LIST
                | spec::MEDIA_TYPE_OCI_MANIFEST
                | spec::MEDIA_TYPE_DOCKER_MANIFEST
                | ""
        );
        if !json_kind {
            continue;
        }
        let body: Value = serde_json::from_slice(&store.read_verified(&digest)?)
            .map_err(|e| ImageError::Layout(format!("{digest}: not JSON: {e}")))?;
        for key in ["manifests", "layers"] {
            if let Some(a) = body.get(key).and_then(Value::as_array) {
                todo.extend(a.iter().cloned());
            }
        }
        if let Some(c) = body.get("config") {
            // A leaf blob: never parsed.
            seen.insert(digest_of(c)?.to_owned());
        }
    }
    Ok(seen)
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), ImageError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
    }
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| ImageError::io(from, e))
}

/// Encrypts the chosen images of an OCI layout (see the module doc).
pub fn encrypt_layout(opts: &EncryptOptions) -> Result<EncryptReport, ImageError> {
    match &opts.kbs {
        Some((_, kid)) => keywrap::check_kid(kid)?,
        None if opts.recipients.is_empty() => {
            return Err(ImageError::Layout(
                "nothing to wrap the layer keys for: give --kek and --kid, or --recipient".into(),
            ))
        }
        None => {}
    }
    if opts.provider_name.is_empty() || opts.provider_name.contains([',', '/', ' ']) {
        return Err(ImageError::Layout(format!(
            "bad provider name {:?}",
            opts.provider_name
        )));
    }
    let src = opts.layout.clone();
    let layout_file = src.join("oci-layout");
    let layout_json = read_json(&layout_file)?;
    if layout_json.get("imageLayoutVersion").is_none() {
        return Err(ImageError::Layout(format!(
            "{}: no imageLayoutVersion",
            layout_file.display()
        )));
    }
    let index_path = src.join("index.json");
    let index = read_json(&index_path)?;
    let dst = match &opts.output {
        None => src.clone(),
        Some(out) => {
            if out.exists() {
                let mut entries = std::fs::read_dir(out).map_err(|e| ImageError::io(out, e))?;
                if entries.next().is_some() {
                    return Err(ImageError::Layout(format!(
                        "{}: output directory is not empty",
                        out.display()
                    )));
                }
            }
            let blobs = out.join("blobs").join("sha256");
            std::fs::create_dir_all(&blobs).map_err(|e| ImageError::io(&blobs, e))?;
            out.clone()
        }
    };
    std::fs::create_dir_all(dst.join("blobs").join("sha256"))
        .map_err(|e| ImageError::io(&dst, e))?;
    let mut enc = Encryptor {
        opts,
        store: Store {
            src: src.clone(),
            dst: dst.clone(),
            tmp_seq: 0,
            created: Vec::new(),
        },
        done: BTreeMap::new(),
        report: EncryptReport::default(),
        replaced: BTreeSet::new(),
    };
    let result = encrypt_entries(&mut enc, &index);
    let new_index = match result {
        Ok(i) => i,
        Err(e) => {
            for p in &enc.store.created {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    finish(enc, opts, &src, &dst, &layout_file, &index_path, new_index)
}

fn encrypt_entries(enc: &mut Encryptor<'_>, index: &Value) -> Result<Value, ImageError> {
    let opts = enc.opts;
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ImageError::Layout("index.json without manifests".into()))?;
    let tag_of = |e: &Value| {
        e.get("annotations")
            .and_then(|a| a.get(spec::ANNOTATION_REF_NAME))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    for t in &opts.tags {
        if !entries.iter().any(|e| tag_of(e).as_deref() == Some(t)) {
            return Err(ImageError::Layout(format!(
                "no image tagged {t:?} in index.json"
            )));
        }
    }
    let mut new_entries = Vec::new();
    for entry in &entries {
        let tag = tag_of(entry);
        let chosen = opts.tags.is_empty() || tag.as_ref().is_some_and(|t| opts.tags.contains(t));
        if !chosen {
            if opts.output.is_none() {
                new_entries.push(entry.clone());
            }
            continue;
        }
        match enc.descriptor(entry, tag.as_deref())? {
            Some(new) => new_entries.push(new),
            None => new_entries.push(entry.clone()),
        }
    }
    let mut new_index = index.clone();
    new_index["manifests"] = Value::Array(new_entries);
    Ok(new_index)
}

fn finish(
    mut enc: Encryptor<'_>,
    opts: &EncryptOptions,
    src: &Path,
    dst: &Path,
    layout_file: &Path,
    index_path: &Path,
    new_index: Value,
) -> Result<EncryptReport, ImageError> {
    let bytes = serde_json::to_vec(&new_index).map_err(|e| ImageError::Layout(e.to_string()))?;
    let mut report = std::mem::take(&mut enc.report);
    let store = enc.store;
    if opts.output.is_some() {
        // Everything the new index needs, in the output.
        for digest in reachable(&store, &new_index)? {
            let rel = blob_rel(&digest)?;
            let to = dst.join(&rel);
            if !to.exists() {
                link_or_copy(&src.join(&rel), &to)?;
            }
        }
        link_or_copy(layout_file, &dst.join("oci-layout"))?;
        write_atomic(&dst.join("index.json"), &bytes)?;
    } else {
        write_atomic(index_path, &bytes)?;
        // Something in the layout we cannot read might still use a replaced blob: then
        // remove nothing.
        let keep = match reachable(&store, &new_index) {
            Ok(k) => k,
            Err(_) => return Ok(report),
        };
        for digest in &enc.replaced {
            if keep.contains(digest) {
                continue;
            }
            let p = dst.join(blob_rel(digest)?);
            if std::fs::remove_file(&p).is_ok() {
                report.removed.push(digest.clone());
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn layer_selection_like_skopeo() {
        assert_eq!(selected(&[], 3).unwrap(), [0, 1, 2].into());
        assert_eq!(selected(&[0, -1], 3).unwrap(), [0, 2].into());
        assert!(selected(&[3], 3).is_err());
        assert!(selected(&[-4], 3).is_err());
    }

    #[test]
    fn media_types() {
        assert_eq!(
            encrypted_media_type(spec::MEDIA_TYPE_DOCKER_TAR_GZIP)
                .unwrap()
                .unwrap(),
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
        );
        assert_eq!(
            encrypted_media_type(spec::MEDIA_TYPE_TAR).unwrap().unwrap(),
            "application/vnd.oci.image.layer.v1.tar+encrypted"
        );
        assert!(
            encrypted_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
                .unwrap()
                .is_none()
        );
        assert!(encrypted_media_type("text/plain").is_err());
    }
}
