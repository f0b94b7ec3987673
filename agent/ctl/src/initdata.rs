//! `cocoon-ctl initdata pack|inspect`: the tenant's initdata on the host.
//!
//! `pack` builds the initdata TOML as upstream kata-types writes it (`version = "0.1.0"`,
//! `algorithm`, a `[data]` table with `"aa.toml"`, `"cdh.toml"`, `"policy.rego"`), and
//! prints the pod annotation value (`io.katacontainers.config.hypervisor.cc_init_data` =
//! base64 of gzip of the TOML, what the Kata runtime decodes in
//! `pkg/oci/utils.go` `addHypervisorInitdataOverrides`) with the digests to bind at launch:
//! the declared hash of the TOML text, zero-padded or cut to SEV-SNP `HOST_DATA` (32 bytes)
//! and TDX `MRCONFIGID` (48 bytes), in hex and in the base64 QEMU's `sev-snp-guest
//! host-data=` and `tdx-guest mrconfigid=` take. It can also write the TOML and the block
//! device image the runtime hands the guest (`"initdata"`, u64 LE length, the gzip, zero
//! padding to 512 bytes). `inspect` reads any of those forms back.
//!
//! Host tools link no guest crate: this is our own small copy of the format, checked
//! against the agent's reader in the agent's tests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

/// The pod annotation carrying initdata.
pub const ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";
/// The initdata device's magic.
pub const MAGIC: &[u8; 8] = b"initdata";
/// The only version upstream defines.
pub const VERSION: &str = "0.1.0";
/// SEV-SNP `HOST_DATA` width.
pub const SNP_HOST_DATA_LEN: usize = 32;
/// TDX `MRCONFIGID` width.
pub const TDX_MRCONFIGID_LEN: usize = 48;
/// The runtime pads the device image to this.
pub const SECTOR: usize = 512;
/// Largest TOML `inspect` decompresses.
const MAX_TOML: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InitdataError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not valid TOML: {message}")]
    Toml { what: String, message: String },
    #[error("{0} is not UTF-8")]
    NotUtf8(String),
    #[error("bad --data {0:?}: expected KEY=PATH")]
    DataArg(String),
    #[error("[data] {0:?} given twice")]
    Duplicate(String),
    #[error("nothing to pack: give --aa, --cdh, --policy or --data")]
    Empty,
    #[error("not initdata: {0}")]
    Malformed(String),
}

/// The digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    pub fn from_name(name: &str) -> Option<Algorithm> {
        [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512]
            .into_iter()
            .find(|a| a.name() == name)
    }

    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
            Algorithm::Sha384 => sha2::Sha384::digest(bytes).to_vec(),
            Algorithm::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
        }
    }
}

/// The `initdata` subcommands.
#[derive(Subcommand, Debug)]
pub enum InitdataCommand {
    /// Build initdata; print the pod annotation value and the digests to bind (JSON).
    Pack {
        /// attestation-agent config (`[token_configs.kbs] url`, `cert`): `[data] "aa.toml"`.
        #[arg(long)]
        aa: Option<PathBuf>,
        /// confidential-data-hub config (`[kbc]`, `[image]`, ...): `[data] "cdh.toml"`.
        #[arg(long)]
        cdh: Option<PathBuf>,
        /// The agent policy (Rego, e.g. from genpolicy): `[data] "policy.rego"`.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Any other `[data]` entry, KEY=PATH (repeatable).
        #[arg(long, value_name = "KEY=PATH")]
        data: Vec<String>,
        /// The digest algorithm.
        #[arg(long, value_enum, default_value_t = Algorithm::Sha384)]
        algorithm: Algorithm,
        /// Also write the initdata TOML here.
        #[arg(long)]
        toml_out: Option<PathBuf>,
        /// Also write the block-device image the runtime gives the guest (for QEMU
        /// `-drive`, or `agent.initdata=`).
        #[arg(long)]
        image_out: Option<PathBuf>,
    },
    /// Show initdata: an annotation value, a device image, gzip or TOML (JSON summary).
    Inspect {
        /// The annotation value, `@FILE` (value, image, gzip or TOML in a file) or `-`
        /// (stdin).
        input: String,
        /// Print the TOML text only.
        #[arg(long)]
        toml: bool,
    },
}

#[derive(Serialize)]
struct Document<'a> {
    version: &'a str,
    algorithm: &'a str,
    data: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Parsed {
    version: String,
    algorithm: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// The initdata TOML for `entries`.
pub fn document(
    algorithm: Algorithm,
    entries: &BTreeMap<String, String>,
) -> Result<String, InitdataError> {
    toml::to_string_pretty(&Document {
        version: VERSION,
        algorithm: algorithm.name(),
        data: entries,
    })
    .map_err(|e| InitdataError::Toml {
        what: "the initdata document".into(),
        message: e.to_string(),
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// The annotation value: base64 (standard) of gzip of the TOML.
pub fn annotation_value(toml: &str) -> String {
    STANDARD.encode(gzip(toml.as_bytes()))
}

/// The device image: magic, u64 LE length, gzip of the TOML, zero padding to 512.
pub fn image(toml: &str) -> Vec<u8> {
    let payload = gzip(toml.as_bytes());
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out.resize(out.len().div_ceil(SECTOR) * SECTOR, 0);
    out
}

/// `digest` zero-padded or cut to `width` (as the runtime and the attesters do).
pub fn fit(digest: &[u8], width: usize) -> Vec<u8> {
    let mut out = digest.to_vec();
    out.resize(width, 0);
    out
}

/// Version, algorithm, digest and the register values of a TOML document.
pub fn summary(toml: &str) -> Result<Value, InitdataError> {
    let parsed: Parsed = toml::from_str(toml).map_err(|e| InitdataError::Toml {
        what: "the initdata".into(),
        message: e.to_string(),
    })?;
    if parsed.version != VERSION {
        return Err(InitdataError::Malformed(format!(
            "version {:?} (expected {VERSION:?})",
            parsed.version
        )));
    }
    let algorithm = Algorithm::from_name(&parsed.algorithm).ok_or_else(|| {
        InitdataError::Malformed(format!(
            "algorithm {:?} (expected sha256, sha384 or sha512)",
            parsed.algorithm
        ))
    })?;
    let digest = algorithm.digest(toml.as_bytes());
    let host_data = fit(&digest, SNP_HOST_DATA_LEN);
    let mrconfigid = fit(&digest, TDX_MRCONFIGID_LEN);
    Ok(json!({
        "annotation": ANNOTATION,
        "version": parsed.version,
        "algorithm": algorithm.name(),
        "digest": hex::encode(&digest),
        "snp_host_data": hex::encode(&host_data),
        "snp_host_data_base64": STANDARD.encode(&host_data),
        "tdx_mrconfigid": hex::encode(&mrconfigid),
        "tdx_mrconfigid_base64": STANDARD.encode(&mrconfigid),
        "data_keys": parsed.data.keys().collect::<Vec<_>>(),
        "data": parsed.data,
    }))
}

fn gunzip(bytes: &[u8]) -> Result<String, InitdataError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_TOML + 1)
        .read_to_end(&mut out)
        .map_err(|e| InitdataError::Malformed(format!("not valid gzip: {e}")))?;
    if out.len() as u64 > MAX_TOML {
        return Err(InitdataError::Malformed(format!(
            "the TOML is over {MAX_TOML} bytes"
        )));
    }
    String::from_utf8(out).map_err(|_| InitdataError::NotUtf8("the initdata TOML".into()))
}

/// The TOML from any form: a device image, gzip, the base64 annotation value, or TOML.
pub fn decode(bytes: &[u8]) -> Result<String, InitdataError> {
    if bytes.starts_with(MAGIC) {
        let len = bytes
            .get(8..16)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| InitdataError::Malformed("the image header is truncated".into()))?;
        let payload = usize::try_from(len)
            .ok()
            .and_then(|len| bytes.get(16..16usize.checked_add(len)?))
            .ok_or_else(|| {
                InitdataError::Malformed(format!(
                    "the image declares {len} payload bytes, only {} are there",
                    bytes.len().saturating_sub(16)
                ))
            })?;
        return gunzip(payload);
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return gunzip(bytes);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| InitdataError::Malformed("neither an image, gzip, base64 nor TOML".into()))?;
    let compact: String = text.split_ascii_whitespace().collect();
    if let Ok(gz) = STANDARD.decode(&compact) {
        if gz.starts_with(&[0x1f, 0x8b]) {
            return gunzip(&gz);
        }
    }
    Ok(text.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, InitdataError> {
    std::fs::read(path).map_err(|source| InitdataError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, InitdataError> {
    String::from_utf8(read(path)?).map_err(|_| InitdataError::NotUtf8(path.display().to_string()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), InitdataError> {
    std::fs::write(path, bytes).map_err(|source| InitdataError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The `[data]` entries from the files, each config checked to be TOML.
pub fn entries(
    aa: Option<&Path>,
    cdh: Option<&Path>,
    policy: Option<&Path>,
    data: &[String],
) -> Result<BTreeMap<String, String>, InitdataError> {
    let mut out = BTreeMap::new();
    let mut add = |key: String, text: String| {
        if out.insert(key.clone(), text).is_some() {
            return Err(InitdataError::Duplicate(key));
        }
        Ok(())
    };
    for (key, path) in [("aa.toml", aa), ("cdh.toml", cdh)] {
        if let Some(path) = path {
            let text = read_text(path)?;
            toml::from_str::<toml::Table>(&text).map_err(|e| InitdataError::Toml {
                what: path.display().to_string(),
                message: e.to_string(),
            })?;
            add(key.into(), text)?;
        }
    }
    if let Some(path) = policy {
        add("policy.rego".into(), read_text(path)?)?;
    }
    for arg in data {
        let (key, path) = arg
            .split_once('=')
            .filter(|(k, p)| !k.is_empty() && !p.is_empty())
            .ok_or_else(|| InitdataError::DataArg(arg.clone()))?;
        add(key.into(), read_text(Path::new(path))?)?;
    }
    if out.is_empty() {
        return Err(InitdataError::Empty);
    }
    Ok(out)
}

/// Runs a subcommand, printing to stdout.
pub fn run(command: &InitdataCommand) -> Result<(), InitdataError> {
    match command {
        InitdataCommand::Pack {
            aa,
            cdh,
            policy,
            data,
            algorithm,
            toml_out,
            image_out,
        } => {
            let entries = entries(aa.as_deref(), cdh.as_deref(), policy.as_deref(), data)?;
            let toml = document(*algorithm, &entries)?;
            if let Some(path) = toml_out {
                write(path, toml.as_bytes())?;
            }
            if let Some(path) = image_out {
                write(path, &image(&toml))?;
            }
            let mut out = summary(&toml)?;
            if let Some(m) = out.as_object_mut() {
                m.remove("data");
                m.insert("value".into(), json!(annotation_value(&toml)));
            }
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        InitdataCommand::Inspect { input, toml } => {
            let bytes = match input.as_str() {
                "-" => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut b)
                        .map_err(|source| InitdataError::Io {
                            path: "stdin".into(),
                            source,
                        })?;
                    b
                }
                s => match s.strip_prefix('@') {
                    Some(path) => read(Path::new(path))?,
                    None => s.as_bytes().to_vec(),
                },
            };
            let text = decode(&bytes)?;
            if *toml {
                print!("{text}");
            } else {
                let out = summary(&text)?;
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "aa.toml".to_string(),
                "[token_configs.kbs]\nurl = \"http://kbs:8080\"\ncert = '''\n-----BEGIN CERTIFICATE-----\n'''\n".to_string(),
            ),
            (
                "policy.rego".to_string(),
                "package agent_policy\n\ndefault ExecProcessRequest := false\n# it's \"quoted\" '''\n"
                    .to_string(),
            ),
        ])
    }

    #[test]
    fn every_form_round_trips() {
        let entries = sample();
        let toml = document(Algorithm::Sha384, &entries).unwrap();
        let parsed: Parsed = toml::from_str(&toml).unwrap();
        assert_eq!(parsed.data, entries);
        assert_eq!(parsed.version, "0.1.0");
        assert_eq!(parsed.algorithm, "sha384");
        let value = annotation_value(&toml);
        assert_eq!(decode(value.as_bytes()).unwrap(), toml);
        assert_eq!(decode(image(&toml).as_slice()).unwrap(), toml);
        assert_eq!(image(&toml).len() % SECTOR, 0);
        assert_eq!(decode(toml.as_bytes()).unwrap(), toml);
        let mut truncated = image(&toml);
        truncated.truncate(20);
        assert!(decode(&truncated)
            .unwrap_err()
            .to_string()
            .contains("declares"));
    }

    #[test]
    fn digests_fit_the_registers() {
        let toml = document(Algorithm::Sha512, &sample()).unwrap();
        let s = summary(&toml).unwrap();
        let digest = hex::decode(s["digest"].as_str().unwrap()).unwrap();
        assert_eq!(digest, sha2::Sha512::digest(toml.as_bytes()).to_vec());
        assert_eq!(
            s["snp_host_data"].as_str().unwrap(),
            hex::encode(&digest[..32])
        );
        assert_eq!(
            s["tdx_mrconfigid"].as_str().unwrap(),
            hex::encode(&digest[..48])
        );
        let toml = document(Algorithm::Sha256, &sample()).unwrap();
        let s = summary(&toml).unwrap();
        let mrconfigid = hex::decode(s["tdx_mrconfigid"].as_str().unwrap()).unwrap();
        assert_eq!(mrconfigid.len(), 48);
        assert_eq!(&mrconfigid[32..], &[0u8; 16]);
        assert_eq!(
            STANDARD
                .decode(s["snp_host_data_base64"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
}
