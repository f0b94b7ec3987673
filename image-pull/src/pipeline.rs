//! One layer, streaming: blob → sha256 (blob digest) → [AES-256-CTR + HMAC-SHA256] →
//! count → [gunzip | zstd] → sha256 (`diff_id`) → tar unpack into
//! a staging directory, renamed into place only when every check passed.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{from_chain, Carried, Failure, LayerError};
use crate::keys::KeyProvider;
use crate::ocicrypt::{unwrap_layer_key, LayerKey};
use crate::spec;
use crate::unpack::{unpack, UnpackOptions};

/// The OCI descriptor of a layer (as in a manifest's `layers`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayerDescriptor {
    /// Media type, e.g. `application/vnd.oci.image.layer.v1.tar+gzip+encrypted`.
    pub media_type: String,
    /// Digest of the blob as stored (`sha256:<hex>`).
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Annotations (ocicrypt's live here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (multi-member accepted).
    Gzip,
    /// zstd.
    Zstd,
}

/// What a layer media type says: compression, and whether ocicrypt encrypted it.
pub fn parse_media_type(media_type: &str) -> Option<(Compression, bool)> {
    let (base, encrypted) = match media_type.strip_suffix(spec::ENCRYPTED_SUFFIX) {
        Some(b) => (b, true),
        None => (media_type, false),
    };
    let c = match base {
        spec::MEDIA_TYPE_TAR | spec::MEDIA_TYPE_ND_TAR => Compression::None,
        spec::MEDIA_TYPE_TAR_GZIP
        | spec::MEDIA_TYPE_ND_TAR_GZIP
        | spec::MEDIA_TYPE_DOCKER_TAR_GZIP
        | spec::MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP => Compression::Gzip,
        spec::MEDIA_TYPE_TAR_ZSTD | spec::MEDIA_TYPE_ND_TAR_ZSTD => Compression::Zstd,
        _ => return None,
    };
    Some((c, encrypted))
}

/// What unpacking one layer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    /// Bytes of blob read.
    pub blob_bytes: u64,
    /// Bytes of uncompressed tar.
    pub tar_bytes: u64,
    /// Tar entries.
    pub entries: u64,
}

#[derive(Clone)]
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// A parsed `algorithm:hex` digest.
#[derive(Clone)]
struct Want {
    text: String,
    algo: Hasher,
}

impl Want {
    fn parse(d: &str) -> Result<Want, Failure> {
        let bad = || Failure::BadDigest(d.to_owned());
        let (algo, hex) = d.split_once(':').ok_or_else(bad)?;
        let (algo, len) = match algo {
            "sha256" => (Hasher::Sha256(sha2::Sha256::new()), 64),
            "sha512" => (Hasher::Sha512(sha2::Sha512::new()), 128),
            _ => return Err(bad()),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(Want {
            text: d.to_owned(),
            algo,
        })
    }
}

struct HashReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashReader<R> {
    fn new(inner: R, want: &Want) -> Self {
        HashReader {
            inner,
            hasher: want.algo.clone(),
            count: 0,
        }
    }
    fn digest(&self) -> String {
        match &self.hasher {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.clone().finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.clone().finalize())),
        }
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = filled(buf, n)?;
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(read),
            Hasher::Sha512(h) => h.update(read),
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// The first `n` bytes of `buf`, which a reader said it filled: an error, not a panic,
/// should a reader claim more than the buffer holds.
fn filled(buf: &[u8], n: usize) -> io::Result<&[u8]> {
    buf.get(..n).ok_or_else(|| {
        io::Error::other(format!(
            "a reader returned {n} bytes for a buffer of {}",
            buf.len()
        ))
    })
}

fn filled_mut(buf: &mut [u8], n: usize) -> io::Result<&mut [u8]> {
    let len = buf.len();
    buf.get_mut(..n).ok_or_else(|| {
        io::Error::other(format!("a reader returned {n} bytes for a buffer of {len}"))
    })
}

/// Refuses to read past the descriptor's size.
struct Limited<R> {
    inner: R,
    size: u64,
    read: u64,
    eof: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.eof {
            return Ok(0);
        }
        // Ask for one byte more than is left, to notice a longer blob.
        let left = self.size - self.read.min(self.size) + 1;
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let window = filled_mut(buf, max)?;
        let n = loop {
            match self.inner.read(window) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io::Error::other(Carried(Failure::Read(e)))),
                Ok(n) => break n,
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.read += n as u64;
        if self.read > self.size {
            return Err(io::Error::other(Carried(Failure::TooLong {
                want: self.size,
            })));
        }
        Ok(n)
    }
}

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// AES-256-CTR decryption with HMAC-SHA256 over the ciphertext, checked at EOF.
struct Decrypt<R> {
    inner: R,
    ctr: Aes256Ctr,
    mac: Option<HmacSha256>,
    expected: [u8; 32],
    ok: Option<bool>,
}

impl<R: Read> Decrypt<R> {
    fn new(inner: R, key: &LayerKey) -> Result<Self, Failure> {
        let ctr = Aes256Ctr::new((&*key.symkey).into(), (&key.nonce).into());
        let mac = <HmacSha256 as Mac>::new_from_slice(&*key.symkey)
            .map_err(|_| Failure::BadAnnotation("symkey length".into()))?;
        Ok(Decrypt {
            inner,
            ctr,
            mac: Some(mac),
            expected: key.hmac,
            ok: None,
        })
    }
    fn verify(&mut self) -> bool {
        if let Some(mac) = self.mac.take() {
            // Constant-time comparison.
            self.ok = Some(mac.verify_slice(&self.expected).is_ok());
        }
        self.ok == Some(true)
    }
}

impl<R: Read> Read for Decrypt<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if !self.verify() {
                return Err(io::Error::other(Carried(Failure::Hmac)));
            }
            return Ok(0);
        }
        let read = filled_mut(buf, n)?;
        if let Some(mac) = &mut self.mac {
            mac.update(read);
        }
        self.ctr.apply_keystream(read);
        Ok(n)
    }
}

#[allow(clippy::large_enum_variant)] // one per layer, on the stack
enum Stage<'a, R: Read> {
    Plain(&'a mut HashReader<Limited<R>>),
    Encrypted(Decrypt<&'a mut HashReader<Limited<R>>>),
}

impl<R: Read> Read for Stage<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stage::Plain(r) => r.read(buf),
            Stage::Encrypted(r) => r.read(buf),
        }
    }
}

fn drain(r: &mut dyn Read) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}

static STAGING: AtomicU64 = AtomicU64::new(0);

fn staging_path(dest: &Path) -> Result<PathBuf, Failure> {
    let shown = dest.display().to_string();
    let name = dest.file_name().ok_or_else(|| {
        Failure::io(
            "layer dir",
            shown.clone(),
            io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let n = STAGING.fetch_add(1, Ordering::Relaxed);
    let mut staged = std::ffi::OsString::from(".");
    staged.push(name);
    staged.push(format!(".staging-{}-{n}", std::process::id()));
    Ok(parent.join(staged))
}

/// Pulls one layer from `blob` into the new directory `dest` (which must not exist;
/// its parent must), decrypting with keys from `keys` when the media type says
/// `+encrypted`. The layer is unpacked into a hidden sibling staging directory and
/// renamed to `dest` only after the blob digest, the HMAC, the decrypted digest and
/// `diff_id` all verified; on any failure the staging directory is removed.
pub fn unpack_layer(
    desc: &LayerDescriptor,
    diff_id: &str,
    blob: impl Read,
    keys: &dyn KeyProvider,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<LayerStats, LayerError> {
    let err = |failure| LayerError {
        digest: desc.digest.clone(),
        failure,
    };
    let (compression, encrypted) = parse_media_type(&desc.media_type)
        .ok_or_else(|| err(Failure::UnsupportedMediaType(desc.media_type.clone())))?;
    let want_blob = Want::parse(&desc.digest).map_err(err)?;
    let want_diff = Want::parse(diff_id).map_err(err)?;
    let key = if encrypted {
        Some(unwrap_layer_key(&desc.annotations, keys).map_err(err)?)
    } else {
        None
    };
    let staging = staging_path(dest).map_err(err)?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| {
                err(Failure::io(
                    "create staging dir",
                    staging.display().to_string(),
                    e,
                ))
            })?;
    }
    let result = run(
        desc,
        compression,
        key.as_ref(),
        &want_blob,
        &want_diff,
        blob,
        &staging,
        opts,
    )
    .and_then(|stats| {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staging,
            rustix::fs::CWD,
            dest,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| {
            Failure::io(
                "rename staging dir to",
                dest.display().to_string(),
                e.into(),
            )
        })?;
        Ok(stats)
    });
    match result {
        Ok(stats) => Ok(stats),
        Err(failure) => {
            // Nothing of a failed layer stays; if even this fails, say so too.
            if let Err(e) = force_remove(&staging) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(err(Failure::io(
                        "removing staging dir (after the failure below) of",
                        format!("{}: {failure}", staging.display()),
                        e,
                    )));
                }
            }
            Err(err(failure))
        }
    }
}

/// Removes a staging tree, making its directories writable first where a layer's
/// read-only directory modes (applied at the end of unpacking) would stop an
/// unprivileged remove. Never follows symlinks.
pub(crate) fn force_remove(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    fn open_up(p: &Path) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        if meta.is_dir() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(p)? {
                open_up(&entry?.path())?;
            }
        }
        Ok(())
    }
    open_up(path)?;
    std::fs::remove_dir_all(path)
}

#[allow(clippy::too_many_arguments)]
fn run(
    desc: &LayerDescriptor,
    compression: Compression,
    key: Option<&LayerKey>,
    want_blob: &Want,
    want_diff: &Want,
    blob: impl Read,
    staging: &Path,
    opts: &UnpackOptions,
) -> Result<LayerStats, Failure> {
    let limited = Limited {
        inner: blob,
        size: desc.size,
        read: 0,
        eof: false,
    };
    let mut blob_hash = HashReader::new(limited, want_blob);
    let mut stage = match key {
        Some(k) => Stage::Encrypted(Decrypt::new(&mut blob_hash, k)?),
        None => Stage::Plain(&mut blob_hash),
    };
    // Counts what comes out of decryption. (The private options' `digest` is not
    // checked: skopeo records the source blob's digest there even when it compresses
    // the layer before encrypting; the HMAC and diff_id authenticate instead.)
    let mut plain_hash = HashReader::new(&mut stage, want_blob);
    let unpacked: Result<(u64, u64), Failure> = (|| {
        let decompressed: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut plain_hash),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut plain_hash)),
            Compression::Zstd => {
                Box::new(zstd::Decoder::new(&mut plain_hash).map_err(Failure::Corrupt)?)
            }
        };
        let mut tar_hash = HashReader::new(decompressed, want_diff);
        let entries = unpack(&mut tar_hash, staging, opts)?;
        // What follows the tar's end blocks counts for diff_id too.
        drain(&mut tar_hash).map_err(|e| from_chain(e, Failure::Corrupt))?;
        let got = tar_hash.digest();
        if got != want_diff.text {
            return Err(Failure::DiffId {
                want: want_diff.text.clone(),
                got,
            });
        }
        Ok((entries, tar_hash.count))
    })();
    // Read the rest of the blob through decryption and hashes, so that a corrupt blob
    // is reported as what it is, not as the decompression error it caused.
    let drained = drain(&mut plain_hash);
    let hmac_ok = match &mut stage {
        Stage::Encrypted(d) => d.verify(),
        Stage::Plain(_) => true,
    };
    drop(stage);
    if let Err(e) = drained {
        let f = from_chain(e, Failure::Read);
        if !matches!(f, Failure::Hmac) {
            return Err(f);
        }
    }
    let got_blob = blob_hash.count;
    if got_blob < desc.size {
        return Err(Failure::Truncated {
            want: desc.size,
            got: got_blob,
        });
    }
    let got = blob_hash.digest();
    if got != want_blob.text {
        return Err(Failure::BlobDigest {
            want: want_blob.text.clone(),
            got,
        });
    }
    if !hmac_ok {
        return Err(Failure::Hmac);
    }
    let (entries, tar_bytes) = unpacked?;
    Ok(LayerStats {
        blob_bytes: got_blob,
        tar_bytes,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that claims more bytes than the buffer holds.
    struct Liar;

    impl Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }

    #[test]
    fn a_reader_claiming_more_than_the_buffer_is_an_error_not_a_panic() {
        let mut buf = [0u8; 8];
        assert_eq!(filled(&buf, 8).unwrap().len(), 8);
        assert!(filled(&buf, 9).is_err());
        assert!(filled_mut(&mut buf, 9).is_err());
        let want = Want::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let mut r = HashReader::new(Liar, &want);
        assert!(r.read(&mut buf).is_err());
    }
}
