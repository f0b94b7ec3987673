//! Reference values: artefact digests, the kernel command line, the SEV-SNP launch
//! measurement and TDX RTMRs, as one JSON document that also carries a ready-to-send
//! Trustee RVPS message. `verify` recomputes a document from the files it names.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};

use crate::snp::{self, SnpInput};
use crate::spec::rvps;
use crate::tdx::{self, TdxValues};

/// Digests of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtefactDigest {
    /// File name, the key used in `reference_values`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub sha384: String,
}

/// Streams a file through SHA-256 and SHA-384.
pub fn digest_file(path: &Path) -> io::Result<ArtefactDigest> {
    let mut f = File::open(path)?;
    let mut s256 = Sha256::new();
    let mut s384 = Sha384::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s256.update(&buf[..n]);
        s384.update(&buf[..n]);
        size += n as u64;
    }
    Ok(ArtefactDigest {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        size,
        sha256: hex::encode(s256.finalize()),
        sha384: hex::encode(s384.finalize()),
    })
}

/// What to compute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Files to digest (initrd, rootfs images, ...).
    pub artefacts: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub initrd: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ovmf: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cmdline: Option<String>,
    pub vcpus: u32,
    pub vcpu_type: String,
    pub guest_features: String,
    pub vmm: String,
    pub memory_mib: u64,
    /// Compute TDX RTMRs when a kernel is given.
    pub tdx: bool,
    /// How the firmware adds `initrd=initrd` to the measured command line.
    #[serde(default)]
    pub tdx_initrd_arg: tdx::InitrdArg,
}

/// The SEV-SNP part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpSection {
    pub launch_measurement: String,
    pub input: SnpInput,
}

/// A Trustee RVPS `sample` message: `payload` is the base64 of the JSON map of
/// reference value names to accepted values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RvpsMessage {
    pub version: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: String,
}

/// The document `reference-values` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceValues {
    pub request: Request,
    pub artefacts: Vec<ArtefactDigest>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel: Option<ArtefactDigest>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub initrd: Option<ArtefactDigest>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ovmf: Option<ArtefactDigest>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel_cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snp: Option<SnpSection>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tdx: Option<TdxValues>,
    /// Flat name -> accepted values, what a policy queries.
    pub reference_values: BTreeMap<String, Vec<String>>,
    pub rvps_message: RvpsMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Snp(#[from] snp::SnpError),
    #[error(transparent)]
    Tdx(#[from] tdx::TdxError),
}

fn digest(path: &Path) -> Result<ArtefactDigest, ReferenceError> {
    digest_file(path).map_err(|source| ReferenceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ReferenceError> {
    std::fs::read(path).map_err(|source| ReferenceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Computes the reference values of `req`.
pub fn compute(req: &Request) -> Result<ReferenceValues, ReferenceError> {
    let mut rv: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut put = |k: String, v: String| rv.entry(k).or_default().push(v);

    let artefacts = req
        .artefacts
        .iter()
        .map(|p| digest(p))
        .collect::<Result<Vec<_>, _>>()?;
    for a in &artefacts {
        put(format!("{}.sha256", a.name), a.sha256.clone());
        put(format!("{}.sha384", a.name), a.sha384.clone());
    }
    let kernel = req.kernel.as_deref().map(digest).transpose()?;
    let initrd = req.initrd.as_deref().map(digest).transpose()?;
    let ovmf = req.ovmf.as_deref().map(digest).transpose()?;
    for (label, d) in [("kernel", &kernel), ("initrd", &initrd), ("ovmf", &ovmf)] {
        if let Some(d) = d {
            put(format!("{label}.sha256"), d.sha256.clone());
            put(format!("{label}.sha384"), d.sha384.clone());
        }
    }
    if let Some(c) = &req.cmdline {
        put("kernel_cmdline".into(), c.clone());
    }

    let snp = match &req.ovmf {
        Some(ovmf) => {
            let input = SnpInput {
                ovmf: ovmf.clone(),
                kernel: req.kernel.clone(),
                initrd: req.initrd.clone(),
                cmdline: req.cmdline.clone(),
                vcpus: req.vcpus,
                vcpu_type: req.vcpu_type.clone(),
                guest_features: req.guest_features.clone(),
                vmm: req.vmm.clone(),
            };
            let launch_measurement = snp::launch_measurement(&input)?;
            put("snp_launch_measurement".into(), launch_measurement.clone());
            Some(SnpSection {
                launch_measurement,
                input,
            })
        }
        None => None,
    };

    let tdx = match (&req.kernel, req.tdx) {
        (Some(k), true) => {
            let kernel = read(k)?;
            let initrd = req.initrd.as_deref().map(read).transpose()?;
            let v = tdx::rtmrs(
                &kernel,
                initrd.as_deref(),
                req.cmdline.as_deref().unwrap_or(""),
                req.memory_mib,
                req.tdx_initrd_arg,
            )?;
            put("tdx_rtmr_1".into(), v.rtmr_1.clone());
            put("tdx_rtmr_2".into(), v.rtmr_2.clone());
            Some(v)
        }
        _ => None,
    };

    let payload = serde_json::to_vec(&rv).unwrap_or_default();
    Ok(ReferenceValues {
        request: req.clone(),
        artefacts,
        kernel,
        initrd,
        ovmf,
        kernel_cmdline: req.cmdline.clone(),
        snp,
        tdx,
        rvps_message: RvpsMessage {
            version: rvps::MESSAGE_VERSION.into(),
            kind: rvps::MESSAGE_TYPE.into(),
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
        },
        reference_values: rv,
    })
}

/// Recomputes `doc` from the files it names and lists every value that differs.
pub fn verify(doc: &ReferenceValues) -> Result<Vec<String>, ReferenceError> {
    let fresh = compute(&doc.request)?;
    let mut diffs = Vec::new();
    let keys: std::collections::BTreeSet<_> = doc
        .reference_values
        .keys()
        .chain(fresh.reference_values.keys())
        .collect();
    for k in keys {
        let old = doc.reference_values.get(k);
        let new = fresh.reference_values.get(k);
        if old != new {
            diffs.push(format!(
                "{k}: recorded {}, recomputed {}",
                old.map(|v| v.join(",")).unwrap_or_else(|| "-".into()),
                new.map(|v| v.join(",")).unwrap_or_else(|| "-".into()),
            ));
        }
    }
    if doc.rvps_message != fresh.rvps_message && diffs.is_empty() {
        diffs.push("rvps_message differs from the reference values".into());
    }
    Ok(diffs)
}
