//! `rootfs-builder` CLI: `initrd`, `rootfs`, `reference-values`, `verify`, `list`.
//! Results are JSON on stdout; progress and errors go to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use rootfs_builder::compress::Compression;
use rootfs_builder::content::{self, ContentSpec};
use rootfs_builder::initrd::{self, InitrdManifest};
use rootfs_builder::reference::{self, ReferenceValues, Request};
use rootfs_builder::rootfs::{self, FsType, RootfsManifest};
use rootfs_builder::{snp, source_date_epoch, verity};

/// Builds reproducible guest images for Cocoon and the reference values to attest them.
#[derive(Parser)]
#[command(name = "rootfs-builder", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a deterministic newc initrd (gzip or zstd) and print its manifest as JSON.
    Initrd(InitrdArgs),
    /// Write an ext4 or erofs image with an appended dm-verity tree; print root hash,
    /// kernel command line fragment and manifest as JSON.
    Rootfs(RootfsArgs),
    /// Print reference values (digests, cmdline, SNP launch measurement, TDX RTMRs) as JSON.
    ReferenceValues(RefArgs),
    /// Recompute and compare: reference values, an initrd against its manifest, or a
    /// rootfs image against its manifest (with `veritysetup verify`).
    Verify(VerifyArgs),
    /// List the members of an initrd (gzip, zstd or plain cpio), like `cpio -tv`.
    List {
        /// The initrd.
        initrd: PathBuf,
    },
}

/// What goes into the image (shared by `initrd` and `rootfs`).
#[derive(Args)]
struct ContentArgs {
    /// The static agent binary, installed as /init.
    #[arg(long)]
    agent: PathBuf,
    /// A kernel's /lib/modules/<version> directory (with modules.dep, see `depmod -b`);
    /// the modules the agent needs are copied, decompressed, with their dependencies.
    #[arg(long, value_name = "DIR")]
    kernel_modules: Option<PathBuf>,
    /// Kernel version (default: the name of the --kernel-modules directory).
    #[arg(long, value_name = "VER")]
    kernel_version: Option<String>,
    /// Another module to ship and load (repeatable), e.g. `--module virtio_blk`.
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// Ship only the --module list, not the default vsock/virtio set.
    #[arg(long)]
    no_default_modules: bool,
    /// Ship the modules without their appended signatures. For kernels that do not
    /// enforce module signatures: they then load unsigned modules (tainted) and skip a
    /// check that costs ~25 ms per module under emulation; the initrd itself is
    /// measured. A kernel with module.sig_enforce=1 or lockdown refuses such modules.
    #[arg(long)]
    strip_module_signatures: bool,
    /// An OCI bundle copied to /pause_bundle (default: a built-in one).
    #[arg(long, value_name = "DIR")]
    pause_bundle: Option<PathBuf>,
    /// Ship no pause bundle at all.
    #[arg(long, conflicts_with = "pause_bundle")]
    no_pause_bundle: bool,
    /// Default agent policy, installed as /etc/kata-opa/default-policy.rego.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// CA bundle, installed as /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, value_name = "FILE")]
    ca_certs: Option<PathBuf>,
    /// A static busybox, installed as /bin/busybox with applet links (debug console).
    #[arg(long, value_name = "PATH")]
    busybox: Option<PathBuf>,
    /// An agent config (TOML), installed as /etc/cocoon/agent.toml (name it on the kernel
    /// command line with agent.config_file=/etc/cocoon/agent.toml). It is measured with
    /// the initrd, so what it says (the KBS, registries) is attested.
    #[arg(long, value_name = "FILE")]
    agent_config: Option<PathBuf>,
}

impl ContentArgs {
    fn spec(&self) -> ContentSpec {
        ContentSpec {
            agent: self.agent.clone(),
            kernel_modules: self.kernel_modules.clone(),
            kernel_version: self.kernel_version.clone(),
            extra_modules: self.modules.clone(),
            no_default_modules: self.no_default_modules,
            strip_module_signatures: self.strip_module_signatures,
            pause_bundle: self.pause_bundle.clone(),
            no_pause_bundle: self.no_pause_bundle,
            policy: self.policy.clone(),
            ca_certs: self.ca_certs.clone(),
            busybox: self.busybox.clone(),
            agent_config: self.agent_config.clone(),
        }
    }
}

#[derive(Args)]
struct InitrdArgs {
    #[command(flatten)]
    content: ContentArgs,
    /// Where to write the initrd.
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Compression,
    /// Compression level (gzip 1-9, default 9; zstd 1-19, default 19).
    #[arg(long)]
    compression_level: Option<i32>,
    /// Also write the manifest to this file.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
}

#[derive(Args)]
struct RootfsArgs {
    #[command(flatten)]
    content: ContentArgs,
    /// Where to write the image (filesystem followed by its hash tree).
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "ext4")]
    format: FsType,
    /// The guest block device the image appears as, for the command line fragment.
    #[arg(long, default_value = "/dev/vda")]
    root_device: String,
    /// Also write the manifest to this file.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
}

#[derive(Args)]
struct RefArgs {
    /// Files to digest (initrd, rootfs image, ...).
    artefacts: Vec<PathBuf>,
    /// The guest kernel (bzImage/vmlinuz) for direct boot.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The initrd booted with --kernel.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// OVMF firmware (an AmdSev build for kernel hashes); enables the SNP measurement.
    #[arg(long)]
    ovmf: Option<PathBuf>,
    /// The kernel command line exactly as the VMM passes it.
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// QEMU CPU model of the SNP guest (EPYC, EPYC-v4, EPYC-Milan, EPYC-Genoa, ...).
    #[arg(long, default_value = snp::DEFAULT_VCPU_TYPE)]
    vcpu_type: String,
    /// SEV features of the guest (hex).
    #[arg(long, default_value = "0x1")]
    guest_features: String,
    /// VMM: qemu or ec2.
    #[arg(long, default_value = "qemu")]
    vmm: String,
    /// Guest memory (MiB), which decides where QEMU loads the initrd (TDX RTMR1).
    #[arg(long, default_value_t = 2048)]
    memory_mib: u64,
    /// Skip the TDX RTMRs.
    #[arg(long)]
    no_tdx: bool,
    /// Where TDVF puts `initrd=initrd` in the measured command line (current edk2:
    /// prefix; older builds: suffix).
    #[arg(long, value_enum, default_value = "prefix")]
    tdx_initrd_arg: rootfs_builder::tdx::InitrdArg,
    /// Also write the JSON to this file.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct VerifyArgs {
    /// A reference-values JSON: recompute it from the files it names.
    #[arg(long, value_name = "FILE")]
    reference_values: Option<PathBuf>,
    /// An initrd to check against --manifest.
    #[arg(long, requires = "manifest")]
    initrd: Option<PathBuf>,
    /// A rootfs image to check against --manifest (digest and dm-verity tree).
    #[arg(long, requires = "manifest", conflicts_with = "initrd")]
    rootfs: Option<PathBuf>,
    /// The manifest `initrd` or `rootfs` printed.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
}

fn print_json<T: Serialize>(v: &T, also: Option<&Path>) -> Result<()> {
    let text = serde_json::to_string_pretty(v)? + "\n";
    if let Some(p) = also {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    print!("{text}");
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

fn epoch() -> Result<u32> {
    source_date_epoch().context("SOURCE_DATE_EPOCH must be a non-negative 32-bit integer")
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Initrd(a) => {
            let started = std::time::Instant::now();
            let (tree, info) = content::build(&a.content.spec())?;
            let m = initrd::write(
                &tree,
                &info,
                &a.output,
                a.compression,
                a.compression_level,
                epoch()?,
            )?;
            eprintln!(
                "rootfs-builder: {} ({} bytes, {} entries, {} modules) in {:.2}s",
                a.output.display(),
                m.artefact.size,
                m.entries.len(),
                m.modules.len(),
                started.elapsed().as_secs_f64()
            );
            print_json(&m, a.manifest.as_deref())?;
        }
        Cmd::Rootfs(a) => {
            let (tree, _) = content::build(&a.content.spec())?;
            let m = rootfs::build(&tree, &a.output, a.format, epoch()?, &a.root_device)?;
            eprintln!(
                "rootfs-builder: {} root hash {}",
                a.output.display(),
                m.verity.root_hash
            );
            print_json(&m, a.manifest.as_deref())?;
        }
        Cmd::ReferenceValues(a) => {
            let req = Request {
                artefacts: a.artefacts,
                kernel: a.kernel,
                initrd: a.initrd,
                ovmf: a.ovmf,
                cmdline: a.cmdline,
                vcpus: a.vcpus,
                vcpu_type: a.vcpu_type,
                guest_features: a.guest_features,
                vmm: a.vmm,
                memory_mib: a.memory_mib,
                tdx: !a.no_tdx,
                tdx_initrd_arg: a.tdx_initrd_arg,
            };
            let rv = reference::compute(&req)?;
            print_json(&rv, a.output.as_deref())?;
        }
        Cmd::Verify(a) => return verify(a),
        Cmd::List { initrd } => {
            for e in initrd::read(&initrd)? {
                let m = rootfs_builder::tree::ManifestEntry::from_cpio(&e);
                let extra = m.target.map(|t| format!(" -> {t}")).unwrap_or_default();
                println!(
                    "{} {:>4} {}:{} {:>9} {}{}",
                    m.kind,
                    m.mode,
                    e.uid,
                    e.gid,
                    m.size.unwrap_or(0),
                    m.path,
                    extra
                );
            }
        }
    }
    Ok(true)
}

fn verify(a: VerifyArgs) -> Result<bool> {
    let mut diffs: Vec<String> = Vec::new();
    let mut checked = false;
    if let Some(p) = &a.reference_values {
        let doc: ReferenceValues = read_json(p)?;
        diffs.extend(reference::verify(&doc)?);
        checked = true;
    }
    if let (Some(img), Some(man)) = (&a.initrd, &a.manifest) {
        let m: InitrdManifest = read_json(man)?;
        diffs.extend(initrd::verify(img, &m)?);
        checked = true;
    }
    if let (Some(img), Some(man)) = (&a.rootfs, &a.manifest) {
        let m: RootfsManifest = read_json(man)?;
        let d = reference::digest_file(img).with_context(|| img.display().to_string())?;
        if d.sha256 != m.artefact.sha256 {
            diffs.push(format!(
                "{}: sha256 {} != manifest {}",
                img.display(),
                d.sha256,
                m.artefact.sha256
            ));
        }
        if !verity::verify(img, &m.verity)? {
            diffs.push(format!("{}: veritysetup verify failed", img.display()));
        }
        checked = true;
    }
    if !checked {
        bail!("nothing to verify: give --reference-values, or --initrd/--rootfs with --manifest");
    }
    for d in &diffs {
        println!("MISMATCH {d}");
    }
    if diffs.is_empty() {
        println!("OK");
    }
    Ok(diffs.is_empty())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("rootfs-builder: {e:#}");
            ExitCode::from(2)
        }
    }
}
