//! configfs-tsm: the kernel's vendor-neutral report interface (Linux ≥ 6.7).
//!
//! One request is one directory under the report root: `mkdir` it, check `provider`, write
//! `inblob`, read `outblob` (and `auxblob`), check that `generation` moved by exactly our
//! one write (otherwise another writer raced us and the blob may answer *their* inblob),
//! then `rmdir`. The root is injectable so tests can play the kernel in a temp dir.
//!
//! See Linux `Documentation/ABI/testing/configfs-tsm`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::abi;

/// What can go wrong talking to configfs-tsm. Each failure mode is its own variant.
#[derive(Debug, thiserror::Error)]
pub enum TsmError {
    /// The report root does not exist: kernel too old or configfs not mounted.
    #[error("configfs-tsm is not available: {} does not exist (needs Linux >= 6.7 with configfs mounted)", root.display())]
    Unavailable {
        /// The root we looked at.
        root: PathBuf,
    },
    /// `mkdir` of a report entry failed.
    #[error("configfs-tsm: cannot create report entry {}: {source}", path.display())]
    Mkdir {
        /// The entry we tried to create.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading or writing one attribute failed.
    #[error("configfs-tsm: {} failed on {}: {source}", op, path.display())]
    Attribute {
        /// `read` or `write`.
        op: &'static str,
        /// The attribute file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The entry belongs to another TEE's driver than the one we want.
    #[error("configfs-tsm: provider is {found:?}, expected {expected:?}")]
    WrongProvider {
        /// The provider we need.
        expected: String,
        /// The provider the kernel reported.
        found: String,
    },
    /// The kernel returned an empty `outblob`: no report was produced.
    #[error("configfs-tsm: outblob is empty (the {provider} driver produced no report)")]
    EmptyOutblob {
        /// The provider that answered.
        provider: String,
    },
    /// `generation` moved by more than our write: another writer used the same entry.
    #[error("configfs-tsm: generation is {found} after our write, expected {expected}: another writer raced this request")]
    GenerationRace {
        /// The generation our single write should have produced.
        expected: u64,
        /// The generation the kernel reported.
        found: u64,
    },
    /// `generation` did not hold a number.
    #[error("configfs-tsm: generation is not a number: {text:?}")]
    BadGeneration {
        /// What we read.
        text: String,
    },
    /// The inblob is empty or longer than the kernel accepts.
    #[error("configfs-tsm: inblob must be 1..={max} bytes, got {len}")]
    InblobLength {
        /// Length offered.
        len: usize,
        /// Kernel maximum.
        max: usize,
    },
}

/// What one report request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmOutput {
    /// The provider that produced it (`tdx_guest`, `sev_guest`, ...).
    pub provider: String,
    /// The report or quote.
    pub outblob: Vec<u8>,
    /// Auxiliary data (SEV-SNP: the certificate table), if asked for and non-empty.
    pub auxblob: Option<Vec<u8>>,
}

/// The configfs-tsm report root (`/sys/kernel/config/tsm/report` on a real guest).
#[derive(Debug, Clone)]
pub struct TsmReport {
    root: PathBuf,
}

impl TsmReport {
    /// A report root at `root` (tests pass a temp dir).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The system root, [`abi::TSM_REPORT_DIR`].
    pub fn system() -> Self {
        Self::new(abi::TSM_REPORT_DIR)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root exists.
    pub fn is_present(&self) -> bool {
        self.root.is_dir()
    }

    /// `mkdir` a fresh report entry; it is removed again when the returned value drops.
    pub fn create_entry(&self) -> Result<TsmEntry, TsmError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        if !self.is_present() {
            return Err(TsmError::Unavailable {
                root: self.root.clone(),
            });
        }
        let pid = std::process::id();
        let mut attempt = 0;
        loop {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = self.root.join(format!("cocoon-{pid}-{seq}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TsmEntry { path }),
                // A leftover from an earlier process with our pid: pick the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(source) => return Err(TsmError::Mkdir { path, source }),
            }
        }
    }

    /// Which provider serves this root (`tdx_guest`, `sev_guest`, ...). Creates and removes
    /// one entry; generates no report.
    pub fn provider(&self) -> Result<String, TsmError> {
        self.create_entry()?.provider()
    }

    /// One complete request: mkdir, check provider, write `inblob`, read `outblob` (and
    /// `auxblob` if `want_aux`), check generation, rmdir.
    pub fn generate(
        &self,
        expected_provider: &str,
        inblob: &[u8],
        want_aux: bool,
    ) -> Result<TsmOutput, TsmError> {
        self.create_entry()?
            .generate(expected_provider, inblob, want_aux)
    }
}

/// One report entry (a directory under the root). Dropping it runs `rmdir`.
#[derive(Debug)]
pub struct TsmEntry {
    path: PathBuf,
}

impl TsmEntry {
    /// The entry directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `provider` attribute without its trailing newline.
    pub fn provider(&self) -> Result<String, TsmError> {
        let raw = self.read("provider")?;
        Ok(String::from_utf8_lossy(&raw).trim_end().to_owned())
    }

    /// The `generation` attribute: how many writes this entry has seen.
    pub fn generation(&self) -> Result<u64, TsmError> {
        let raw = self.read("generation")?;
        let text = String::from_utf8_lossy(&raw).trim().to_owned();
        text.parse().map_err(|_| TsmError::BadGeneration { text })
    }

    /// Produce one report in this entry. See [`TsmReport::generate`].
    pub fn generate(
        &self,
        expected_provider: &str,
        inblob: &[u8],
        want_aux: bool,
    ) -> Result<TsmOutput, TsmError> {
        if inblob.is_empty() || inblob.len() > abi::TSM_INBLOB_MAX {
            return Err(TsmError::InblobLength {
                len: inblob.len(),
                max: abi::TSM_INBLOB_MAX,
            });
        }
        let provider = self.provider()?;
        if provider != expected_provider {
            return Err(TsmError::WrongProvider {
                expected: expected_provider.to_owned(),
                found: provider,
            });
        }
        let before = self.generation()?;
        self.write("inblob", inblob)?;
        let outblob = self.read("outblob")?;
        let auxblob = if want_aux {
            self.read_optional("auxblob")?
        } else {
            None
        };
        let expected = before + 1;
        let found = self.generation()?;
        if found != expected {
            return Err(TsmError::GenerationRace { expected, found });
        }
        if outblob.is_empty() {
            return Err(TsmError::EmptyOutblob { provider });
        }
        Ok(TsmOutput {
            provider,
            outblob,
            auxblob: auxblob.filter(|a| !a.is_empty()),
        })
    }

    fn read(&self, attr: &str) -> Result<Vec<u8>, TsmError> {
        let path = self.path.join(attr);
        std::fs::read(&path).map_err(|source| TsmError::Attribute {
            op: "read",
            path,
            source,
        })
    }

    fn read_optional(&self, attr: &str) -> Result<Option<Vec<u8>>, TsmError> {
        match self.read(attr) {
            Ok(v) => Ok(Some(v)),
            Err(TsmError::Attribute { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn write(&self, attr: &str, data: &[u8]) -> Result<(), TsmError> {
        let path = self.path.join(attr);
        std::fs::write(&path, data).map_err(|source| TsmError::Attribute {
            op: "write",
            path,
            source,
        })
    }
}

impl Drop for TsmEntry {
    fn drop(&mut self) {
        // configfs removes the attributes with the directory; a plain rmdir is right.
        if let Err(e) = std::fs::remove_dir(&self.path) {
            tracing::warn!(entry = %self.path.display(), error = %e, "configfs-tsm: rmdir failed");
        }
    }
}
