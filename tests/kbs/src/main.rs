//! `cocoon-test-kbs`: Trustee's KBS (RCAR 0.4.0) as a test double process.
//!
//! `cocoon-test-kbs --listen 127.0.0.1:0 --resources DIR [--policy FILE]` prints
//! `listening on http://127.0.0.1:PORT` as its first stdout line and serves until SIGTERM,
//! SIGINT, or (with `--exit-on-stdin-eof`) the end of its standard input.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal};

use cocoon_test_kbs::http::{tls_config, Server};
use cocoon_test_kbs::kbs::{Config, Evidence, Kbs};
use cocoon_test_kbs::policy::Policy;
use cocoon_test_kbs::protocol::{DEFAULT_SESSION_TTL_SECS, DEFAULT_TOKEN_LEEWAY_SECS};

#[derive(Clone, Copy, ValueEnum)]
enum AcceptEvidence {
    /// Trustee's sample verifier (tee `sample`).
    Sample,
    /// TEST MODE: SEV-SNP evidence (tee `snp`) whose report data is the binding (and
    /// HOST_DATA the init-data digest, given init-data); the report's SIGNATURE,
    /// certificate chain and TCB are NOT VERIFIED. For the fake SEV-SNP devices of
    /// tests/qemu/fake-tee only.
    SnpTest,
}

#[derive(Parser)]
#[command(
    version,
    about = "Test double of Trustee's KBS (RCAR protocol 0.4.0); test-only"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Resource `repo/type/tag` is the file DIR/repo/type/tag.
    #[arg(long, value_name = "DIR")]
    resources: PathBuf,
    /// JSON `{"default":"allow"|"deny","allow":[glob..],"deny":[glob..]}`; default: allow all.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Lifetime of attestation tokens (`exp` = `iat` + this), seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    token_ttl: u64,
    /// Leeway past `exp` when checking tokens (Trustee's is jsonwebtoken's 60 s).
    #[arg(long, default_value_t = DEFAULT_TOKEN_LEEWAY_SECS, value_name = "SECS")]
    token_leeway: u64,
    /// Lifetime of an RCAR session (cookie), seconds (Trustee: 5 minutes).
    #[arg(long, default_value_t = DEFAULT_SESSION_TTL_SECS, value_name = "SECS")]
    session_ttl: u64,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<String>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<String>,
    /// Which evidence `attest` accepts.
    #[arg(long, value_enum, default_value = "sample")]
    accept_evidence: AcceptEvidence,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Log each error answer and its cause to stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Also stop when standard input reaches end of file (a test harness that dies closes it).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let evidence = match cli.accept_evidence {
        AcceptEvidence::Sample => Evidence::Sample,
        AcceptEvidence::SnpTest => {
            eprintln!(
                "cocoon-test-kbs: WARNING: --accept-evidence snp-test: SEV-SNP report \
                 signatures are NOT verified (test mode; only the report-data and init-data \
                 bindings are checked)"
            );
            Evidence::SnpTestNoSignature
        }
    };
    if !cli.resources.is_dir() {
        bail!("--resources {}: not a directory", cli.resources.display());
    }
    let policy = match &cli.policy {
        None => Policy::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Policy::from_json(&text).with_context(|| format!("policy {}", path.display()))?
        }
    };
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Arc::new(tls_config(cert, key).map_err(anyhow::Error::msg)?))
        }
        _ => None,
    };
    let kbs = Kbs::new(Config {
        resources: cli.resources,
        policy,
        token_ttl: cli.token_ttl,
        token_leeway: cli.token_leeway,
        session_ttl: cli.session_ttl,
        evidence,
        verbose: cli.verbose,
    });
    let server = Server::bind(&cli.listen, tls, cli.workers)
        .with_context(|| format!("listening on {}", cli.listen))?;

    // Block the stop signals before any thread exists, so every thread inherits the mask
    // and only the waiter below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    let scheme = if server.is_tls() { "https" } else { "http" };
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {scheme}://{}", server.local_addr())?;
    out.flush()?;
    drop(out);

    let stopper = server.stopper();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            stopper.stop();
        }
    });
    if cli.exit_on_stdin_eof {
        let stopper = server.stopper();
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            stopper.stop();
        });
    }
    server.serve(Arc::new(kbs));
    Ok(())
}
