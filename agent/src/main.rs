//! `cocoon-agent`: the binary's edge. Parses arguments, runs the agent, and — as PID 1 —
//! makes sure the VM powers off instead of returning (which would panic the kernel).
// Guest code: a panic here takes the agent (PID 1) and the VM down. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cocoon_agent::config::AgentConfig;
use cocoon_agent::rpc::agent::GuestInfo;
use cocoon_agent::{attestation, init, initdata, logging, reaper, sandbox, server};

#[derive(Parser)]
#[command(
    name = "cocoon-agent",
    version,
    about = "Kata agent for confidential VMs"
)]
struct Cli {
    /// TOML configuration file (replaces the kernel command line's agent.* keys).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// For people debugging a guest: print this guest's evidence, or parse a report/quote.
    Attest {
        /// Up to 64 bytes of report data, hex: print the TEE type and evidence JSON.
        #[arg(long, conflicts_with = "parse")]
        report_data: Option<String>,
        /// Pretty-print an SNP report, TDREPORT, TD quote or evidence JSON file.
        #[arg(long)]
        parse: Option<PathBuf>,
        /// Attester to use: auto, snp, tdx or sample (default: agent.attester, else auto).
        #[arg(long)]
        attester: Option<String>,
    },
}

fn main() {
    // Without arguments (PID 1, or a runtime starting the agent) skip the parser: building
    // clap's command tree is a noticeable share of the time to listening (natively about
    // 40 page faults of heap; under emulation more). No argument reads the environment.
    let cli = if std::env::args_os().len() <= 1 {
        Cli {
            config: None,
            command: None,
        }
    } else {
        Cli::parse()
    };
    if let Some(Command::Attest {
        report_data,
        parse,
        attester,
    }) = cli.command
    {
        if let Err(e) = attestation::attest_command(report_data, parse, attester) {
            eprintln!("cocoon-agent attest: {}", error_chain(&e));
            std::process::exit(1);
        }
        return;
    }

    let is_init = init::is_init();
    if is_init {
        // With panic=abort a panic in PID 1 would kill init and panic the kernel.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("cocoon-agent: fatal: {info}");
            init::power_off();
        }));
    }
    let result = run(cli.config, is_init);
    if let Err(e) = &result {
        let message = error_chain(e);
        tracing::error!(error = message, "agent failed");
        eprintln!("cocoon-agent: {message}");
    }
    if is_init {
        init::power_off();
    }
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// `e` and its causes, joined by ": ", leaving out a cause whose text is already there.
/// The libraries' errors name their cause in their own message (an RPC status carries
/// only the top one), so anyhow's `{:#}` would print it twice.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(config_file: Option<PathBuf>, is_init: bool) -> anyhow::Result<()> {
    let t_main = std::time::Instant::now();
    // The same clock as the kernel's log timestamps: `Run /init` → here is the exec.
    let main_at = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| std::time::Duration::from(t).as_secs_f64())
        .unwrap_or_default();
    if is_init {
        init::early_mounts().context("PID 1 early mounts")?;
    }
    let t_mounts = std::time::Instant::now();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let loaded = AgentConfig::load(config_file.as_deref(), &cmdline, |k| std::env::var(k).ok())
        .context("reading the agent configuration")?;
    let mut config = loaded.config;
    let t_config = std::time::Instant::now();

    // As PID 1: the vsock transport, then listen at once, so the runtime's connection
    // waits in the backlog instead of being refused and retried; the rest of start-up
    // follows, logging first (its set-up and first line are cold code that would delay
    // the listen by more than the listen itself takes under emulation: until then an
    // error goes to stderr, from main). Nothing is read from a connection before the
    // policy below is loaded, and if start-up fails the VM powers off with the
    // connection unanswered.
    let mut modules = Vec::new();
    let mut vsock_loaded = 0;
    if is_init {
        let (vsock, rest) = init::split_vsock_modules(
            init::module_list(std::path::Path::new(init::MODULES_ORDER))
                .context("reading the kernel module list")?,
        );
        vsock_loaded = init::load_modules(&vsock).context("loading the vsock transport")?;
        modules = rest;
    }
    let t_vsock = std::time::Instant::now();
    let listening = server::listen(&config.server_addr).context("listening for the runtime")?;
    if is_init {
        // (Not as PID 1, the line waits for the server's signal handlers: a test may send
        // SIGTERM as soon as it reads it.)
        logging::announce_early(&format!("listening on {}", listening.addr()));
    }
    let t_listen = std::time::Instant::now();
    let sink = logging::init(config.log_level);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        version = cocoon_agent::VERSION,
        pid = std::process::id(),
        is_init,
        // When main() began (seconds since boot, as the kernel's log), and where the
        // time since went: mounts, configuration, the vsock modules, the listen and its
        // line, logging set-up.
        main_at = format!("{main_at:.6}"),
        vsock_modules = vsock_loaded,
        setup_us = format!(
            "mounts={} config={} vsock={} listen={} logging={}",
            (t_mounts - t_main).as_micros(),
            (t_config - t_mounts).as_micros(),
            (t_vsock - t_config).as_micros(),
            (t_listen - t_vsock).as_micros(),
            t_listen.elapsed().as_micros()
        ),
        "starting"
    );
    if is_init {
        init::mount_cgroups().context("mounting cgroup2")?;
        init::finish_setup().context("PID 1 setup")?;
        let t = std::time::Instant::now();
        let loaded = init::load_modules(&modules).context("loading kernel modules")?;
        tracing::info!(
            modules = loaded,
            ms = t.elapsed().as_millis() as u64,
            "other kernel modules loaded"
        );
        match init::mount_configfs() {
            Ok(mounted) => tracing::debug!(mounted, "configfs"),
            Err(e) => tracing::warn!(error = %e, "configfs not mounted (configfs-tsm unusable)"),
        }
        tracing::info!("init done");
    }
    if config.log_vport != 0 {
        logging::serve_vsock(&sink, config.log_vport);
    }

    let probe = attestation::probe(config.attester, config_file.is_some());
    tracing::info!("attestation probe: {probe}");
    // initdata, checked against the hardware binding; a bad or mismatched one stops the
    // agent before anything listens (fail closed).
    let initdata = initdata_startup(&mut config, &probe, is_init)?;
    // Before anything listens: a policy that does not load stops the agent (fail closed).
    let policy = std::sync::Arc::new(match initdata.as_ref().and_then(|d| d.initdata.policy()) {
        Some(rego) => cocoon_agent::policy::Policy::from_rego("initdata policy.rego", rego)
            .context("loading the agent policy from initdata")?,
        None => cocoon_agent::policy::Policy::startup(
            config.policy_file.as_deref(),
            cocoon_agent::policy::is_confidential(
                &probe,
                cocoon_agent::policy::forced_confidential(),
            ),
            &cocoon_agent::paths::Paths::from_env(is_init).run_dir,
        )
        .context("loading the agent policy")?,
    });
    tracing::info!(policy = policy.origin(), "agent policy loaded");
    let kbs = cocoon_agent::kbs::Kbs::with_init_data(
        &config,
        &probe,
        initdata.as_ref().map(|d| d.initdata.toml.clone()),
    );
    if let cocoon_agent::kbs::Kbs::Unavailable(why) = &kbs {
        tracing::info!("no KBS session: {why}");
    }
    let _rest_api = kbs.serve_rest_api(&config);
    let secrets = cocoon_agent::secrets::Secrets::new(
        kbs.source(),
        cocoon_guest_components::sealed::UnsealOptions {
            verify: config.sealed_secret_verify,
            ..Default::default()
        },
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let reaper = reaper::Reaper::start(is_init).context("starting the reaper")?;
        let paths = cocoon_agent::paths::Paths::from_env(is_init);
        let images =
            cocoon_agent::image::Images::new(&config, kbs.source(), paths.pause_bundle.clone());
        let sandbox = std::sync::Arc::new(sandbox::Sandbox::new(
            paths,
            reaper,
            config.hotplug_timeout,
            secrets,
            images,
        ));
        cocoon_agent::debug_console::start_from(&config, &probe, &policy, &sandbox.reaper);
        let info = GuestInfo {
            init_daemon: is_init,
            extra_features: vec![
                attestation::tee_feature(&probe),
                initdata::feature(initdata.as_ref()),
            ],
        };
        server::serve(
            listening,
            info,
            &sink,
            is_init,
            sandbox.clone(),
            kbs,
            policy,
        )
        .await?;
        // Stopped by a signal (not PID 1) or after DestroySandbox: leave no container.
        if let Err(e) = sandbox
            .destroy_all(cocoon_agent::rpc::agent::DESTROY_TIMEOUT)
            .await
        {
            tracing::warn!(error = %e, "tearing down containers at exit");
        }
        anyhow::Ok(())
    })
}

/// Finds, checks and applies initdata (`agent.initdata`, else the `/dev/vd*` device —
/// looked for in a VM: as PID 1 or with any sign of a TEE, not among a host's disks).
fn initdata_startup(
    config: &mut AgentConfig,
    probe: &cocoon_attester::Probe,
    is_init: bool,
) -> anyhow::Result<Option<initdata::Found>> {
    let scan = is_init || cocoon_agent::policy::is_confidential(probe, false);
    let found = initdata::startup(
        config.initdata.as_deref(),
        scan.then_some(std::path::Path::new("/dev")),
        probe,
    )?;
    let Some(found) = found else {
        tracing::info!("no initdata");
        return Ok(None);
    };
    let d = &found.initdata;
    match &found.bound {
        initdata::Bound::Verified { register } => tracing::info!(
            origin = d.origin,
            algorithm = d.algorithm.name(),
            digest = d.digest_hex(),
            register,
            "initdata matches the hardware binding"
        ),
        initdata::Bound::Unverified { why } => tracing::warn!(
            origin = d.origin,
            algorithm = d.algorithm.name(),
            digest = d.digest_hex(),
            "initdata is NOT bound to hardware ({why}): used unverified"
        ),
    }
    for note in d.apply(config)? {
        tracing::info!("{note}");
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read policy file /p.rego: {source}")]
    struct ReadError {
        source: std::io::Error,
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(ReadError { source: io }).context("loading the agent policy");
        assert_eq!(
            error_chain(&e),
            "loading the agent policy: cannot read policy file /p.rego: entity not found"
        );
        // A cause its parent does not repeat is kept.
        let e = anyhow::anyhow!("connection refused").context("dialling the KBS");
        assert_eq!(error_chain(&e), "dialling the KBS: connection refused");
    }
}
