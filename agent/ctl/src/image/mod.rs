//! Host-side image encryption for Cocoon: `cocoon-ctl image encrypt` (an OCI layout, in
//! place or into a new one), `cocoon-ctl image keygen` (a KEK), and `cocoon-ctl
//! keyprovider` (an ocicrypt `cmd` key provider for tools whose ocicrypt has the key
//! provider protocol). Both write what upstream's coco_keyprovider writes: CoCo annotation
//! packets whose `kid` is the KEK's KBS resource (`kbs:///<repo>/<type>/<tag>`). The
//! guest's `cocoon-image-pull` (and upstream image-rs/CDH) asks the KBS for the KEK and
//! unwraps. Facts: `shared/reference/confidential.md`, "Encrypted image layers", and
//! [`spec`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;

pub mod jwe;
pub mod keyprovider;
pub mod keywrap;
pub mod layout;
pub mod spec;

pub use keywrap::Kek;

/// What went wrong encrypting an image or answering the key-provider protocol.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("KEK {0}")]
    Kek(String),
    #[error("kid {kid:?}: {why}")]
    Kid { kid: String, why: String },
    #[error("the KEK does not open the annotation packet for {0}")]
    WrongKek(String),
    #[error("annotation packet: {0}")]
    Packet(String),
    #[error("recipient: {0}")]
    Recipient(String),
    #[error("key provider parameters: {0}")]
    Params(String),
    #[error("key provider protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Crypto(String),
    #[error("OCI layout: {0}")]
    Layout(String),
}

impl ImageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The `image` subcommands.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Encrypt the layers of an OCI image layout (e.g. from `skopeo copy docker://IMG
    /// oci:DIR:TAG`) for Cocoon / CoCo: AES_256_CTR_HMAC_SHA256 layers whose keys are
    /// wrapped under a KEK the guest gets from the KBS as `--kid`. Prints a JSON report.
    Encrypt {
        /// The KEK file: 32 raw bytes (as stored in the KBS), or their base64.
        #[arg(long, requires = "kid")]
        kek: Option<PathBuf>,
        /// The KEK's KBS resource URI, `kbs:///<repository>/<type>/<tag>`.
        #[arg(long, alias = "keyid", requires = "kek")]
        kid: Option<String>,
        /// Also (or instead) wrap the layer keys for this public key as a JWE, like
        /// skopeo's `--encryption-key jwe:pub.pem` (RSA: RSA-OAEP; P-256: ECDH-ES+A256KW);
        /// repeatable. The guest needs the private key then.
        #[arg(long = "recipient", value_name = "jwe:PUBLIC_KEY")]
        recipients: Vec<String>,
        /// Write the encrypted image to this new (or empty) layout directory instead of
        /// rewriting LAYOUT in place.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Only the image(s) with this tag (`org.opencontainers.image.ref.name`); repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only this layer of each image, 0-based, negative from the end (like skopeo's
        /// `--encrypt-layer`); repeatable. Default: every layer.
        #[arg(long = "encrypt-layer", allow_negative_numbers = true)]
        layers: Vec<i64>,
        /// Annotation `org.opencontainers.image.enc.keys.provider.<NAME>`.
        #[arg(long, default_value = spec::DEFAULT_PROVIDER_NAME)]
        provider_name: String,
        /// Encrypt zstd layers too (`tar+zstd+encrypted`: Cocoon's guest decrypts them,
        /// upstream image-rs does not).
        #[arg(long)]
        allow_zstd: bool,
        /// The OCI layout directory (`DIR` or `oci:DIR`, or `oci:DIR:TAG` for `--tag TAG`).
        layout: String,
    },
    /// Make a random 32-byte KEK (raw bytes, mode 0600; store it in the KBS as the `kid`).
    Keygen {
        /// Where to write it (never overwritten).
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
}

/// Splits `oci:DIR:TAG` / `oci:DIR` / `DIR` into the directory and an optional tag.
pub fn parse_layout_arg(arg: &str) -> (PathBuf, Option<String>) {
    match arg.strip_prefix("oci:") {
        Some(rest) => match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => {
                (PathBuf::from(dir), Some(tag.to_owned()))
            }
            _ => (PathBuf::from(rest), None),
        },
        None => (PathBuf::from(arg), None),
    }
}

/// Runs one `image` subcommand, printing its result on stdout.
pub fn run(cmd: &ImageCommand) -> Result<(), ImageError> {
    match cmd {
        ImageCommand::Encrypt {
            kek,
            kid,
            recipients,
            output,
            tags,
            layers,
            provider_name,
            allow_zstd,
            layout: arg,
        } => {
            let (layout, tag) = parse_layout_arg(arg);
            let mut tags = tags.clone();
            tags.extend(tag);
            let kbs = match (kek, kid) {
                (Some(kek), Some(kid)) => Some((Kek::from_file(kek)?, kid.clone())),
                _ => None,
            };
            let recipients = recipients
                .iter()
                .map(|r| jwe::Recipient::from_arg(r))
                .collect::<Result<Vec<_>, _>>()?;
            let opts = layout::EncryptOptions {
                layout,
                output: output.clone(),
                tags,
                layers: layers.clone(),
                kbs,
                recipients,
                provider_name: provider_name.clone(),
                allow_zstd: *allow_zstd,
            };
            let report = layout::encrypt_layout(&opts)?;
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| ImageError::Layout(e.to_string()))?;
            println!("{text}");
            Ok(())
        }
        ImageCommand::Keygen { output } => write_new_secret(output, Kek::random().as_bytes()),
    }
}

fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ImageError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ImageError::io(path, e))
}

/// The largest request `keyprovider` reads from stdin.
pub const MAX_REQUEST: u64 = 16 << 20;

/// `cocoon-ctl keyprovider`: one request from stdin, the answer on stdout.
pub fn run_keyprovider(opts: &keyprovider::KeyProviderOptions) -> Result<(), ImageError> {
    let mut request = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST)
        .read_to_end(&mut request)
        .map_err(|e| ImageError::io(Path::new("<stdin>"), e))?;
    let answer = keyprovider::handle(&request, opts)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&answer)
        .and_then(|()| out.flush())
        .map_err(|e| ImageError::io(Path::new("<stdout>"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_args() {
        assert_eq!(parse_layout_arg("dir"), (PathBuf::from("dir"), None));
        assert_eq!(parse_layout_arg("oci:dir"), (PathBuf::from("dir"), None));
        assert_eq!(
            parse_layout_arg("oci:/a/dir:v1"),
            (PathBuf::from("/a/dir"), Some("v1".into()))
        );
    }
}
