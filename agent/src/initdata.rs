//! initdata: the tenant's start-up data (KBS address and certificate, CDH settings, the
//! agent policy), handed in by the untrusted host but bound into the hardware evidence.
//!
//! Format, as upstream Kata writes it (runtime `virtcontainers/hypervisor.go`
//! `prepareInitdataImage`; read by kata-agent `src/agent/src/initdata.rs`):
//!
//! ```text
//! offset 0   "initdata"                       8-byte magic
//! offset 8   u64 little-endian                length of the gzip payload
//! offset 16  gzip(initdata TOML)              then zero padding to 512 bytes
//! ```
//!
//! The TOML (kata-types `initdata.rs`): `version = "0.1.0"`, `algorithm = "sha256" |
//! "sha384" | "sha512"`, and a `[data]` table of strings, of which we use `"aa.toml"`
//! (attestation-agent config: `[token_configs.kbs] url`, `cert`), `"cdh.toml"` (CDH
//! config: `[kbc] name/url/kbs_cert`, `[image]`, `skip_sealed_secret_verification`) and
//! `"policy.rego"` (the agent policy). The digest is the declared hash of the TOML text
//! exactly as decompressed; the host put it at launch into SNP `HOST_DATA` (32 bytes) or
//! TDX `MRCONFIGID` (48 bytes), zero-padded or cut, and we compare it with the register
//! through the attester. The same TOML text goes to the KBS as `init-data`
//! (`{"format":"toml","body":...}`), so Trustee can check it against the evidence too.
//!
//! Where: the file named by `agent.initdata` (tests, or a known device), else the first
//! `/dev/vd*` / `/dev/sd*` block device that starts with the magic.
//!
//! Fail closed: a malformed initdata, a digest that does not match the register, or a
//! register that cannot be read is an error that stops start-up. The register is that of
//! the hardware the probe sees, even when the sample attester was chosen. Only with no
//! sign of a TEE is initdata used unbound, with a warning; nothing is confidential then.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;

use cocoon_attester::{Attester, InitdataBinding, Probe};

use crate::config::{AgentConfig, ImageSettings, KbcParams};

/// The 8-byte magic at the start of an initdata device.
pub const MAGIC: &[u8; 8] = b"initdata";
/// Magic plus the u64 length.
pub const HEADER_LEN: usize = 16;
/// Largest gzip payload we read. Kubernetes caps all of a pod's annotations at 256 KiB,
/// so real initdata is far smaller.
pub const MAX_PAYLOAD: u64 = 8 * 1024 * 1024;
/// Largest decompressed TOML (a gzip bomb stops here).
pub const MAX_TOML: u64 = 16 * 1024 * 1024;
/// The only initdata version upstream defines.
pub const VERSION: &str = "0.1.0";
/// `[data]` keys we use.
pub const AA_TOML: &str = "aa.toml";
pub const CDH_TOML: &str = "cdh.toml";
pub const POLICY_REGO: &str = "policy.rego";
/// The kbc name the KBS client speaks (Trustee's RCAR).
pub const CC_KBC: &str = "cc_kbc";

/// Why initdata could not be used. Each names the initdata's origin and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum InitdataError {
    #[error("initdata {origin}: cannot read it: {error}")]
    Read {
        origin: String,
        error: std::io::Error,
    },
    #[error("looking for an initdata device in {dir}: {error}")]
    Scan { dir: String, error: std::io::Error },
    #[error("initdata {origin}: bad magic: expected \"initdata\", found {found:?}")]
    BadMagic { origin: String, found: String },
    #[error(
        "initdata {origin} is truncated: the {what} needs {expected} bytes, only {got} are there"
    )]
    Truncated {
        origin: String,
        what: &'static str,
        expected: u64,
        got: u64,
    },
    #[error(
        "initdata {origin} is oversized: the {what} is {len} bytes, at most {max} are accepted"
    )]
    Oversized {
        origin: String,
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("initdata {origin}: the payload is not valid gzip: {error}")]
    Gzip {
        origin: String,
        error: std::io::Error,
    },
    #[error("initdata {origin}: the TOML is not UTF-8")]
    NotUtf8 { origin: String },
    #[error("initdata {origin}: invalid TOML: {message}")]
    Toml { origin: String, message: String },
    #[error("initdata {origin}: unsupported version {found:?} (expected \"0.1.0\")")]
    Version { origin: String, found: String },
    #[error(
        "initdata {origin}: unsupported algorithm {found:?} (expected sha256, sha384 or sha512)"
    )]
    Algorithm { origin: String, found: String },
    #[error("initdata {origin}: [data] {key:?}: {message}")]
    Entry {
        origin: String,
        key: &'static str,
        message: String,
    },
    #[error("initdata {origin}: cannot read the hardware binding to check it against: {error}")]
    Binding {
        origin: String,
        error: cocoon_attester::Error,
    },
    #[error(
        "initdata {origin} is not the one this VM was launched with, refusing to start: {error}"
    )]
    Mismatch {
        origin: String,
        error: cocoon_attester::Error,
    },
    #[error("no initdata was found, but this VM was launched with initdata bound in {register} ({value}): refusing to start without it")]
    Missing {
        register: &'static str,
        value: String,
    },
}

/// The digest algorithm an initdata declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// From the TOML's `algorithm`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// The TOML name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The digest of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
            Algorithm::Sha384 => sha2::Sha384::digest(bytes).to_vec(),
            Algorithm::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
        }
    }
}

/// The TOML document's shape (unknown top-level keys are allowed, as upstream; they are
/// part of the digest all the same).
#[derive(Deserialize)]
struct Document {
    version: String,
    algorithm: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// A parsed initdata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initdata {
    /// Where it came from (a path), for messages.
    pub origin: String,
    pub version: String,
    pub algorithm: Algorithm,
    /// The `[data]` table.
    pub data: BTreeMap<String, String>,
    /// The TOML text exactly as decompressed: what is digested and sent to the KBS.
    pub toml: String,
    /// `algorithm` over `toml`.
    pub digest: Vec<u8>,
}

/// Whether the initdata was checked against the hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The register matched.
    Verified { register: &'static str },
    /// Nothing to check against (no TEE, or the sample attester): used unbound.
    Unverified { why: String },
}

impl Initdata {
    /// Parses the TOML text.
    pub fn parse(origin: &str, toml_text: &str) -> Result<Initdata, InitdataError> {
        let doc: Document = toml::from_str(toml_text).map_err(|e| InitdataError::Toml {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        if doc.version != VERSION {
            return Err(InitdataError::Version {
                origin: origin.to_string(),
                found: doc.version,
            });
        }
        let algorithm =
            Algorithm::from_name(&doc.algorithm).ok_or_else(|| InitdataError::Algorithm {
                origin: origin.to_string(),
                found: doc.algorithm.clone(),
            })?;
        Ok(Initdata {
            origin: origin.to_string(),
            version: doc.version,
            algorithm,
            digest: algorithm.digest(toml_text.as_bytes()),
            data: doc.data,
            toml: toml_text.to_string(),
        })
    }

    /// Decodes an initdata image (magic, length, gzip'd TOML, padding) held in memory.
    pub fn from_image(origin: &str, bytes: &[u8]) -> Result<Initdata, InitdataError> {
        read_image(origin, &mut &bytes[..])
    }

    /// Reads an initdata image from a file or block device (only the header and the
    /// declared payload are read).
    pub fn read(path: &Path) -> Result<Initdata, InitdataError> {
        let origin = path.display().to_string();
        let mut file = std::fs::File::open(path).map_err(|error| InitdataError::Read {
            origin: origin.clone(),
            error,
        })?;
        read_image(&origin, &mut file)
    }

    /// A `[data]` entry.
    pub fn entry(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// The agent policy it carries (`policy.rego`).
    pub fn policy(&self) -> Option<&str> {
        self.entry(POLICY_REGO)
    }

    /// Lower-case hex of the digest.
    pub fn digest_hex(&self) -> String {
        hex::encode(&self.digest)
    }

    /// Checks the digest against the attester's binding register: SNP `HOST_DATA`, TDX
    /// `MRCONFIGID`. `None` (no TEE) and the sample attester have none: unverified.
    pub fn check(&self, attester: Option<&Attester>) -> Result<Bound, InitdataError> {
        let Some(attester) = attester else {
            return Ok(Bound::Unverified {
                why: "no TEE was found".into(),
            });
        };
        let binding = attester
            .initdata_binding()
            .map_err(|error| InitdataError::Binding {
                origin: self.origin.clone(),
                error,
            })?;
        match binding {
            None => Ok(Bound::Unverified {
                why: format!("the {} attester has no binding register", attester.tee()),
            }),
            Some(binding) => {
                binding
                    .check(&self.digest)
                    .map_err(|error| InitdataError::Mismatch {
                        origin: self.origin.clone(),
                        error,
                    })?;
                Ok(Bound::Verified {
                    register: binding.register,
                })
            }
        }
    }

    /// Applies `aa.toml` and `cdh.toml` to `config`: the KBS (URL, certificate), the
    /// `[image]` settings and sealed-secret verification. initdata wins over the kernel
    /// command line and the agent's TOML: it is what the tenant chose and attested.
    /// Returns what was noticed, to log.
    pub fn apply(&self, config: &mut AgentConfig) -> Result<Vec<String>, InitdataError> {
        let mut notes = Vec::new();
        let aa = match self.entry(AA_TOML) {
            Some(text) => Some(self.section::<AaToml>(AA_TOML, text)?),
            None => None,
        };
        let cdh = match self.entry(CDH_TOML) {
            Some(text) => Some(self.section::<CdhToml>(CDH_TOML, text)?),
            None => None,
        };
        let aa_kbs = aa.and_then(|a| a.token_configs.kbs);
        let cdh_kbc = match cdh.as_ref().and_then(|c| c.kbc.clone()) {
            Some(kbc) if kbc.name != CC_KBC => {
                return Err(self.entry_error(
                    CDH_TOML,
                    format!("[kbc] name {:?} is not supported (only {CC_KBC})", kbc.name),
                ))
            }
            other => other,
        };
        // One KBS session serves both upstream roles (AA's tokens, CDH's resources): the
        // two must name the same KBS.
        let (url, cert) = match (aa_kbs, cdh_kbc) {
            (Some(aa), Some(cdh))
                if aa.url.trim_end_matches('/') != cdh.url.trim_end_matches('/') =>
            {
                return Err(self.entry_error(
                    CDH_TOML,
                    format!(
                        "[kbc] url {:?} is not the KBS aa.toml names ({:?}); one KBS serves both",
                        cdh.url, aa.url
                    ),
                ))
            }
            (Some(aa), cdh) => (
                Some((AA_TOML, aa.url)),
                aa.cert.or(cdh.and_then(|c| c.kbs_cert)),
            ),
            (None, Some(cdh)) => (Some((CDH_TOML, cdh.url)), cdh.kbs_cert),
            (None, None) => (None, None),
        };
        if let Some((key, url)) = url {
            let params: KbcParams = format!("{CC_KBC}::{url}")
                .parse()
                .map_err(|e: String| self.entry_error(key, format!("KBS url: {e}")))?;
            notes.push(format!("initdata: KBS {}", params.url));
            config.aa_kbc_params = Some(params);
            // The certificate belongs to that KBS: one from the config does not carry over.
            config.kbs_cert_file = None;
            config.kbs_cert = cert;
        }
        if let Some(cdh) = cdh {
            if let Some(image) = cdh.image {
                notes.push("initdata: [image] settings from cdh.toml".into());
                config.image = image;
            }
            if let Some(skip) = cdh.skip_sealed_secret_verification {
                config.sealed_secret_verify = !skip;
            }
            if !cdh.credentials.is_empty() {
                notes.push(format!(
                    "initdata: cdh.toml [[credentials]] ({}) are not fetched: not supported",
                    cdh.credentials.len()
                ));
            }
        }
        for key in self.data.keys() {
            if ![AA_TOML, CDH_TOML, POLICY_REGO].contains(&key.as_str()) {
                notes.push(format!("initdata: [data] {key:?} is not used by the agent"));
            }
        }
        Ok(notes)
    }

    fn section<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static str,
        text: &str,
    ) -> Result<T, InitdataError> {
        toml::from_str(text).map_err(|e| self.entry_error(key, e.to_string()))
    }

    fn entry_error(&self, key: &'static str, message: String) -> InitdataError {
        InitdataError::Entry {
            origin: self.origin.clone(),
            key,
            message,
        }
    }
}

/// `aa.toml`: only what the agent uses (upstream attestation-agent `Config`; other
/// sections such as `[eventlog_config]`, `[log]` are ignored).
#[derive(Deserialize)]
struct AaToml {
    #[serde(default)]
    token_configs: AaTokenConfigs,
}

#[derive(Deserialize, Default)]
struct AaTokenConfigs {
    kbs: Option<AaKbs>,
}

#[derive(Deserialize)]
struct AaKbs {
    url: String,
    /// PEM text of the KBS's certificate (or its CA).
    cert: Option<String>,
}

/// `cdh.toml`: upstream confidential-data-hub `CdhConfig`, what the agent uses.
#[derive(Deserialize)]
struct CdhToml {
    kbc: Option<CdhKbc>,
    image: Option<ImageSettings>,
    skip_sealed_secret_verification: Option<bool>,
    #[serde(default)]
    credentials: Vec<toml::Value>,
}

#[derive(Deserialize, Clone)]
struct CdhKbc {
    name: String,
    url: String,
    kbs_cert: Option<String>,
}

fn read_image(origin: &str, reader: &mut impl Read) -> Result<Initdata, InitdataError> {
    let read_err = |error| InitdataError::Read {
        origin: origin.to_string(),
        error,
    };
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(reader, &mut header).map_err(read_err)?;
    let seen = got.min(MAGIC.len());
    let (head, magic) = (
        header.get(..seen).unwrap_or_default(),
        MAGIC.get(..seen).unwrap_or_default(),
    );
    if head != magic {
        return Err(bad_magic(origin, head));
    }
    if got < HEADER_LEN {
        return Err(InitdataError::Truncated {
            origin: origin.to_string(),
            what: "header (magic and length)",
            expected: HEADER_LEN as u64,
            got: got as u64,
        });
    }
    let mut len = [0u8; 8];
    for (d, s) in len.iter_mut().zip(header.iter().skip(MAGIC.len())) {
        *d = *s;
    }
    let len = u64::from_le_bytes(len);
    if len > MAX_PAYLOAD {
        return Err(InitdataError::Oversized {
            origin: origin.to_string(),
            what: "gzip payload",
            len,
            max: MAX_PAYLOAD,
        });
    }
    // `len` ≤ MAX_PAYLOAD, so this fits in usize.
    let mut payload = vec![0u8; len as usize];
    let got = read_full(reader, &mut payload).map_err(read_err)?;
    if (got as u64) < len {
        return Err(InitdataError::Truncated {
            origin: origin.to_string(),
            what: "gzip payload the header declares",
            expected: len,
            got: got as u64,
        });
    }
    let mut toml = Vec::new();
    flate2::read::GzDecoder::new(&payload[..])
        .take(MAX_TOML + 1)
        .read_to_end(&mut toml)
        .map_err(|error| InitdataError::Gzip {
            origin: origin.to_string(),
            error,
        })?;
    if toml.len() as u64 > MAX_TOML {
        return Err(InitdataError::Oversized {
            origin: origin.to_string(),
            what: "decompressed TOML",
            len: toml.len() as u64,
            max: MAX_TOML,
        });
    }
    let text = String::from_utf8(toml).map_err(|_| InitdataError::NotUtf8 {
        origin: origin.to_string(),
    })?;
    Initdata::parse(origin, &text)
}

fn bad_magic(origin: &str, found: &[u8]) -> InitdataError {
    InitdataError::BadMagic {
        origin: origin.to_string(),
        found: String::from_utf8_lossy(found).into_owned(),
    }
}

/// Reads until `buf` is full or EOF; returns how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match reader.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The first `vd*` / `sd*` block device in `dev_dir` that starts with the magic (as
/// upstream looks for it). Devices that cannot be read are skipped.
pub fn find_device(dev_dir: &Path) -> Result<Option<PathBuf>, InitdataError> {
    let scan = |error| InitdataError::Scan {
        dir: dev_dir.display().to_string(),
        error,
    };
    let mut names: Vec<_> = std::fs::read_dir(dev_dir)
        .map_err(scan)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vd") || n.starts_with("sd"))
        })
        .collect();
    names.sort();
    for path in names {
        let is_block = std::fs::metadata(&path)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        if !is_block {
            continue;
        }
        let mut magic = [0u8; 8];
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        if matches!(read_full(&mut file, &mut magic), Ok(8)) && &magic == MAGIC {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// What start-up found.
#[derive(Debug)]
pub struct Found {
    pub initdata: Initdata,
    pub bound: Bound,
}

/// At start-up: the initdata named by `agent.initdata`, else a device in `dev_dir` (if
/// given);
/// checked against the register of the TEE the probe found
/// ([`Probe::binding_attester`]). `Ok(None)`: no initdata, and none bound in the
/// hardware. Any error must stop the agent.
pub fn startup(
    path: Option<&Path>,
    dev_dir: Option<&Path>,
    probe: &Probe,
) -> Result<Option<Found>, InitdataError> {
    let path = match (path, dev_dir) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(dir)) => find_device(dir)?,
        (None, None) => None,
    };
    // The register of the hardware the probe sees, even when another attester (`sample`)
    // was chosen: a choice on the command line must not turn the check off.
    let attester = probe.binding_attester();
    let Some(path) = path else {
        match attester {
            Ok(Some(attester)) => check_absent(&attester)?,
            Ok(None) => {}
            // Nothing was handed in that needs checking; attestation will say more.
            Err(e) => {
                tracing::warn!(error = %e, "initdata: no attester to check the binding register")
            }
        }
        return Ok(None);
    };
    // With any sign of a TEE its register must be readable (fail closed); only without
    // one is there nothing to check against.
    let attester = attester.map_err(|error| InitdataError::Binding {
        origin: path.display().to_string(),
        error,
    })?;
    let initdata = Initdata::read(&path)?;
    let bound = initdata.check(attester.as_ref())?;
    Ok(Some(Found { initdata, bound }))
}

/// Without initdata, the binding register must be all zero: a host that launched the VM
/// with initdata bound and then withheld it must not get the agent's defaults.
pub fn check_absent(attester: &Attester) -> Result<(), InitdataError> {
    match attester.initdata_binding() {
        Ok(Some(InitdataBinding { register, value })) if value.iter().any(|b| *b != 0) => {
            Err(InitdataError::Missing {
                register,
                value: hex::encode(value),
            })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            // Nothing was handed in that needs checking; attestation will say more.
            tracing::warn!(error = %e, "initdata: cannot read the binding register");
            Ok(())
        }
    }
}

/// The `extra_features` entry GetGuestDetails reports: `initdata=verified`,
/// `initdata=unverified` or `initdata=none`.
pub fn feature(found: Option<&Found>) -> String {
    match found.map(|f| &f.bound) {
        Some(Bound::Verified { .. }) => "initdata=verified".into(),
        Some(Bound::Unverified { .. }) => "initdata=unverified".into(),
        None => "initdata=none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn image(payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    const DOC: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\n'''\n";

    #[test]
    fn parses_an_image() {
        let d = Initdata::from_image("img", &image(&gzip(DOC.as_bytes()))).unwrap();
        assert_eq!(d.algorithm, Algorithm::Sha256);
        assert_eq!(d.toml, DOC);
        assert_eq!(d.policy(), Some("package agent_policy\n"));
        assert_eq!(d.digest, sha2::Sha256::digest(DOC.as_bytes()).to_vec());
    }

    #[test]
    fn digests_with_the_declared_algorithm() {
        for (name, len) in [("sha256", 32), ("sha384", 48), ("sha512", 64)] {
            let text = format!("version = \"0.1.0\"\nalgorithm = \"{name}\"\n[data]\n");
            let d = Initdata::parse("t", &text).unwrap();
            assert_eq!(d.digest.len(), len);
            assert_eq!(d.algorithm.name(), name);
        }
    }

    #[test]
    fn clear_errors() {
        let good = image(&gzip(DOC.as_bytes()));
        let err = |bytes: &[u8]| Initdata::from_image("img", bytes).unwrap_err().to_string();

        let e = err(&good[..10]);
        assert!(e.contains("truncated") && e.contains("header"), "{e}");
        let e = err(&good[..HEADER_LEN + 5]);
        assert!(e.contains("truncated") && e.contains("payload"), "{e}");

        let mut big = good.clone();
        big[8..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        let e = err(&big);
        assert!(e.contains("oversized") && e.contains("gzip payload"), "{e}");

        let bomb = image(&gzip(&vec![b' '; (MAX_TOML + 1) as usize]));
        let e = err(&bomb);
        assert!(
            e.contains("oversized") && e.contains("decompressed TOML"),
            "{e}"
        );

        let mut magic = good.clone();
        magic[..8].copy_from_slice(b"initdat4");
        let e = err(&magic);
        assert!(e.contains("bad magic") && e.contains("initdat4"), "{e}");
        assert!(err(b"ini").contains("truncated"));
        assert!(err(b"xyz").contains("bad magic"));

        let e = err(&image(b"this is not gzip"));
        assert!(e.contains("not valid gzip"), "{e}");
        let mut cut = gzip(DOC.as_bytes());
        cut.truncate(cut.len() - 8);
        let e = err(&image(&cut));
        assert!(e.contains("not valid gzip"), "{e}");

        let e = err(&image(&gzip(
            b"version = \"0.2.0\"\nalgorithm = \"sha256\"\n",
        )));
        assert!(e.contains("unsupported version \"0.2.0\""), "{e}");
        let e = err(&image(&gzip(b"version = \"0.1.0\"\nalgorithm = \"md5\"\n")));
        assert!(e.contains("unsupported algorithm \"md5\""), "{e}");
        let e = err(&image(&gzip(b"version = \"0.1.0\"\n[data]\nx = 1\n")));
        assert!(e.contains("invalid TOML"), "{e}");
        let e = err(&image(&gzip(&[0xff, 0xfe])));
        assert!(e.contains("not UTF-8"), "{e}");
    }

    fn with(data: &str) -> Initdata {
        Initdata::parse(
            "t",
            &format!("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n{data}"),
        )
        .unwrap()
    }

    #[test]
    fn aa_and_cdh_settings_apply() {
        let d = with(
            r#""aa.toml" = '''
[token_configs.kbs]
url = "https://kbs.example:8080"
cert = "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n"
[eventlog_config]
init_pcr = 17
enable_eventlog = false
'''
"cdh.toml" = '''
socket = "unix:///run/confidential-containers/cdh.sock"
skip_sealed_secret_verification = true
[kbc]
name = "cc_kbc"
url = "https://kbs.example:8080/"
[image]
max_concurrent_layer_downloads_per_image = 5
work_dir = "/run/image-rs"
'''
"other" = "x"
"#,
        );
        let mut config = AgentConfig {
            kbs_cert_file: Some("/etc/kbs.pem".into()),
            ..AgentConfig::default()
        };
        let notes = d.apply(&mut config).unwrap();
        let kbc = config.aa_kbc_params.unwrap();
        assert_eq!(kbc.url, "https://kbs.example:8080");
        assert_eq!(kbc.kbc, "cc_kbc");
        assert!(config.kbs_cert.unwrap().contains("AA"));
        assert_eq!(config.kbs_cert_file, None);
        assert!(!config.sealed_secret_verify);
        assert_eq!(config.image.max_concurrent_layer_downloads_per_image, 5);
        assert_eq!(config.image.work_dir, PathBuf::from("/run/image-rs"));
        assert!(notes.iter().any(|n| n.contains("\"other\"")), "{notes:?}");
    }

    #[test]
    fn cdh_alone_names_the_kbs() {
        let d = with(
            "\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.2.2:8080\"\nkbs_cert = \"PEM\"\n'''\n",
        );
        let mut config = AgentConfig::default();
        d.apply(&mut config).unwrap();
        assert_eq!(config.aa_kbc_params.unwrap().url, "http://10.0.2.2:8080");
        assert_eq!(config.kbs_cert.as_deref(), Some("PEM"));
        assert!(config.sealed_secret_verify);
    }

    #[test]
    fn bad_sections_name_the_key() {
        for (data, key, what) in [
            ("\"aa.toml\" = \"[token_configs.kbs]\\nurl = 3\\n\"", "aa.toml", "url"),
            ("\"aa.toml\" = \"[token_configs.kbs]\\nurl = \\\"ftp://x\\\"\\n\"", "aa.toml", "http"),
            ("\"cdh.toml\" = \"[kbc]\\nname = \\\"offline_fs_kbc\\\"\\nurl = \\\"http://x\\\"\\n\"", "cdh.toml", "offline_fs_kbc"),
            ("\"cdh.toml\" = \"[image]\\nno_such = 1\\n\"", "cdh.toml", "no_such"),
            (
                "\"cdh.toml\" = \"[kbc]\\nname = \\\"cc_kbc\\\"\\nurl = \\\"kbs:8080\\\"\\n\"",
                "cdh.toml",
                "http",
            ),
            (
                "\"aa.toml\" = \"[token_configs.kbs]\\nurl = \\\"http://a\\\"\\n\"\n\"cdh.toml\" = \"[kbc]\\nname = \\\"cc_kbc\\\"\\nurl = \\\"http://b\\\"\\n\"",
                "cdh.toml",
                "one KBS",
            ),
        ] {
            let e = with(data)
                .apply(&mut AgentConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(what), "{data}: {e}");
        }
    }

    #[test]
    fn reads_a_file_and_finds_no_device_in_an_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vda");
        std::fs::write(&path, image(&gzip(DOC.as_bytes()))).unwrap();
        assert_eq!(Initdata::read(&path).unwrap().toml, DOC);
        // A regular file is not a block device: not picked by the scan.
        assert_eq!(find_device(dir.path()).unwrap(), None);
        let e = Initdata::read(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
