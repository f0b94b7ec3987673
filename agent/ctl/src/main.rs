//! `cocoon-ctl`: call the agent by hand.
//!
//! `cocoon-ctl --server-address unix:///tmp/agent.sock GetGuestDetails '{"mem_block_size":true}'`

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use cocoon_ctl::{call_json, connect, method_names, Address};

#[derive(Parser)]
#[command(
    version,
    about = "Call any Kata agent RPC with a JSON request; prints the JSON response"
)]
struct Cli {
    /// unix:///path, unix://@name, vsock://CID:PORT or hvsock:///path/to/socket:PORT
    #[arg(long, short = 'a')]
    server_address: Option<String>,
    /// Per-call timeout, seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Keep retrying connect + call for up to this many seconds (for an agent still starting).
    #[arg(long, default_value_t = 0)]
    wait: u64,
    /// List the methods and exit.
    #[arg(long)]
    list: bool,
    /// Spell namespace types in CreateContainer's spec (`run`, or a CreateContainer
    /// request) as the Go runtime does (`network`, `mount`) or as Kata's Rust clients do
    /// (`net`, `mnt`: runtime-rs, kata-agent-ctl). Default: `run` sends the Go names, a
    /// request is sent as written.
    #[arg(long, value_enum)]
    namespace_names: Option<cocoon_ctl::run::NamespaceNames>,
    /// Method name: Check, Version, or any AgentService method (CreateContainer, ...).
    method: Option<String>,
    /// Request as JSON (proto field names); default `{}`. `@FILE` reads it from FILE.
    request: Option<String>,
    #[command(subcommand)]
    command: Option<CtlCommand>,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Run a container from an OCI runtime spec (config.json) and show its output;
    /// exits with the container's status.
    Run {
        /// Container id.
        #[arg(long, default_value = "cocoon-run")]
        id: String,
        /// Leave the container in the agent (no RemoveContainer).
        #[arg(long)]
        keep: bool,
        /// Copy the spec's root.path from this host into the guest with CopyFile (as the
        /// Kata runtime does without a shared filesystem) and run the container there.
        #[arg(long)]
        copy_rootfs: bool,
        /// The guest's CopyFile directory (for --copy-rootfs).
        #[arg(long, default_value = cocoon_protocols::wire::SHARED_CONTAINERS_DIR)]
        guest_shared_dir: String,
        /// The OCI config.json; a relative root.path is taken from its directory.
        spec: std::path::PathBuf,
    },
    /// Copy a host file or directory tree into the guest with CopyFile, as the runtime does
    /// without a shared filesystem (1 MiB chunks, modes and owners kept); prints the bytes
    /// and the time it took.
    Copy {
        /// What to copy from this host.
        host: std::path::PathBuf,
        /// Where in the guest (under the shared containers directory, for the agent).
        guest: String,
    },
    /// Send SetPolicy with the Rego policy in FILE (checked by the agent's current policy,
    /// which replaces it atomically if it allows it and the new one loads).
    SetPolicy {
        /// The policy (Rego, package agent_policy; e.g. from genpolicy).
        file: std::path::PathBuf,
    },
    /// Sealed secrets as upstream's `secret` tool makes them: keygen, seal, inspect, verify.
    Secret {
        #[command(subcommand)]
        command: cocoon_ctl::secret::SecretCommand,
    },
    /// Encrypted images for Cocoon/CoCo: encrypt an OCI layout, make a KEK.
    Image {
        #[command(subcommand)]
        command: cocoon_ctl::image::ImageCommand,
    },
    /// initdata for a confidential pod: pack the annotation value and the digests to bind
    /// (SNP HOST_DATA, TDX MRCONFIGID), or inspect one.
    Initdata {
        #[command(subcommand)]
        command: cocoon_ctl::initdata::InitdataCommand,
    },
    /// An ocicrypt `cmd` key provider: layer keys wrapped under a KEK as CoCo packets.
    ///
    /// One JSON request on stdin, the answer on stdout. ocicrypt.conf:
    /// `{"key-providers":{"attestation-agent":{"cmd":{"path":"/usr/bin/cocoon-ctl","args":["keyprovider"]}}}}`,
    /// then `--encryption-key provider:attestation-agent:keyid=kbs:///default/key/1::keypath=/path/kek`.
    Keyprovider {
        /// The provider's name in ocicrypt.conf (the `Parameters` key, the annotation suffix).
        #[arg(long, default_value = cocoon_ctl::image::spec::DEFAULT_PROVIDER_NAME)]
        provider_name: String,
        /// A KEK for `keyunwrap` requests whose parameters name no `keypath` (testing).
        #[arg(long)]
        kek: Option<std::path::PathBuf>,
        /// How the answer writes bytes: base64 strings (Go's ocicrypt) or integer arrays
        /// (ocicrypt-rs).
        #[arg(long, value_enum, default_value_t = cocoon_ctl::image::keyprovider::ByteEncoding::Base64)]
        byte_encoding: cocoon_ctl::image::keyprovider::ByteEncoding,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.list {
        for name in method_names() {
            println!("{name}");
        }
        return Ok(());
    }
    match &cli.command {
        Some(CtlCommand::Secret { command }) => return Ok(cocoon_ctl::secret::run(command)?),
        Some(CtlCommand::Image { command }) => return Ok(cocoon_ctl::image::run(command)?),
        Some(CtlCommand::Initdata { command }) => return Ok(cocoon_ctl::initdata::run(command)?),
        Some(CtlCommand::Keyprovider {
            provider_name,
            kek,
            byte_encoding,
        }) => {
            return Ok(cocoon_ctl::image::run_keyprovider(
                &cocoon_ctl::image::keyprovider::KeyProviderOptions {
                    provider_name: provider_name.clone(),
                    kek: kek.clone(),
                    encoding: *byte_encoding,
                },
            )?)
        }
        _ => {}
    }
    let addr: Address = cli
        .server_address
        .as_deref()
        .context("--server-address is required")?
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(cli.timeout);
    if let Some(CtlCommand::Run {
        id,
        keep,
        copy_rootfs,
        guest_shared_dir,
        spec,
    }) = &cli.command
    {
        let status = runtime.block_on(cocoon_ctl::run::run_container(
            &addr,
            id,
            spec,
            timeout,
            *keep,
            copy_rootfs.then_some(guest_shared_dir.as_str()),
            cli.namespace_names.unwrap_or_default(),
        ))?;
        std::process::exit(status);
    }
    if let Some(CtlCommand::Copy { host, guest }) = &cli.command {
        let start = Instant::now();
        let bytes = runtime.block_on(cocoon_ctl::run::copy_tree(&addr, host, guest, timeout))?;
        println!(
            "{{\"bytes\":{bytes},\"seconds\":{:.6}}}",
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let (method, request) = if let Some(CtlCommand::SetPolicy { file }) = &cli.command {
        let policy = std::fs::read_to_string(file)
            .with_context(|| format!("reading the policy {}", file.display()))?;
        (
            "SetPolicy".to_owned(),
            serde_json::json!({ "policy": policy }).to_string(),
        )
    } else {
        let method = cli
            .method
            .clone()
            .context("a METHOD is required (try --list)")?;
        let mut request = request_text(cli.request.as_deref())?;
        if let (Some(names), "CreateContainer") = (cli.namespace_names, method.as_str()) {
            let mut v: serde_json::Value =
                serde_json::from_str(&request).context("the CreateContainer request")?;
            if let Some(spec) = v.get_mut("OCI") {
                names.respell(spec);
            }
            request = v.to_string();
        }
        (method, request)
    };
    let deadline = Instant::now() + Duration::from_secs(cli.wait);
    let response = runtime.block_on(async {
        loop {
            let attempt = async {
                let client = connect(&addr).await?;
                call_json(&client, &method, &request, timeout).await
            };
            match attempt.await {
                Ok(json) => return Ok(json),
                Err(e) if Instant::now() < deadline && retryable(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(e),
            }
        }
    })?;
    println!("{response}");
    Ok(())
}

/// The request JSON: none (`{}`), `@FILE`, or inline.
fn request_text(arg: Option<&str>) -> anyhow::Result<String> {
    Ok(match arg {
        None => "{}".to_string(),
        Some(file) if file.starts_with('@') => std::fs::read_to_string(&file[1..])
            .with_context(|| format!("reading request from {}", &file[1..]))?,
        Some(json) => json.to_string(),
    })
}

/// While waiting for an agent to come up, only connection-level failures are retried.
fn retryable(e: &cocoon_ctl::CtlError) -> bool {
    matches!(
        e,
        cocoon_ctl::CtlError::Connect { .. }
            | cocoon_ctl::CtlError::Handshake { .. }
            | cocoon_ctl::CtlError::Transport { .. }
    )
}
