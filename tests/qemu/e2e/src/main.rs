//! `cocoon-e2e`: the confidential pod end to end under QEMU, as the main job and as a
//! test. It owns every process it starts (registry, test KBS, vhost-device-vsock, QEMU)
//! and leaves none behind on success, failure or Ctrl-C; its files stay in one temp dir.
//!
//! Test-only (it runs the test KBS, whose SNP mode skips signature checks, and the guest
//! with fake TEE devices when asked): never part of a product image.

mod floor;
mod hotplug;
mod images;
mod procs;
mod qmp;
mod scenario;
mod services;
mod vm;
mod volume;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use serde_json::json;
use sha2::Digest as _;

use scenario::Client;

#[derive(Parser)]
#[command(about = "Boot the guest, attest, pull an encrypted image, unseal secrets, run it")]
struct Cli {
    /// The static guest agent (musl).
    #[arg(long)]
    agent: PathBuf,
    /// rootfs-builder, to make the initrd.
    #[arg(long)]
    rootfs_builder: PathBuf,
    /// The test KBS binary (cocoon-test-kbs).
    #[arg(long)]
    test_kbs: PathBuf,
    /// The guest kernel image.
    #[arg(long)]
    kernel: PathBuf,
    /// The kernel's /lib/modules/<version> directory (with the fake TEE modules when
    /// --fake-tee is given).
    #[arg(long)]
    kernel_modules: PathBuf,
    /// Static busybox for the test images.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// Load these test-only fake TEE modules (from --kernel-modules) and attest as SNP
    /// with the test KBS's `snp-test` verifier; without it the guest uses the sample
    /// attester.
    #[arg(long = "fake-tee-module")]
    fake_tee_modules: Vec<String>,
    /// The agent policy baked into the initrd (and named by the measured agent config).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// CA bundle for the guest (the registry client needs a root store).
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    ca_certs: PathBuf,
    /// Keep the whole work directory.
    #[arg(long)]
    keep: bool,
    /// Keep only the logs (console, KBS, registry, QEMU) in the work directory.
    #[arg(long)]
    keep_logs: bool,
    /// Skip the floor boot (a busybox `/init` that prints a line, booted the same way)
    /// that the agent's start-up is compared with.
    #[arg(long)]
    no_floor: bool,
    /// Benchmark only the start-up: boot the pod's guest N times (Check, then
    /// DestroySandbox) and the floor N times, and print the medians instead of running
    /// the pod.
    #[arg(long, value_name = "N")]
    startup_runs: Option<usize>,
}

fn main() {
    let cli = Cli::parse();
    let work = match tempfile::Builder::new().prefix("cocoon-e2e").tempdir() {
        Ok(d) => d.keep(),
        Err(e) => {
            eprintln!("e2e: no temp dir: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = procs::on_signal_cleanup(work.clone(), cli.keep) {
        eprintln!("e2e: cannot handle signals: {e:#}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("e2e: no runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(run(&cli, &work));
    procs::kill_all();
    let ok = result.is_ok();
    match result {
        Ok(summary) => println!("{summary}"),
        Err(e) => {
            eprintln!("e2e: FAIL: {e:#}");
            show_logs(&work);
        }
    }
    finish(&work, &cli, ok);
    std::process::exit(if ok { 0 } else { 1 });
}

/// Removes the work dir, or all but its logs.
fn finish(work: &Path, cli: &Cli, ok: bool) {
    if cli.keep {
        eprintln!("e2e: kept {}", work.display());
        return;
    }
    if cli.keep_logs || !ok {
        if let Ok(entries) = std::fs::read_dir(work) {
            for e in entries.flatten() {
                let p = e.path();
                let is_log = p.extension().is_some_and(|x| x == "log");
                if !is_log {
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
        eprintln!("e2e: logs in {}", work.display());
        return;
    }
    let _ = std::fs::remove_dir_all(work);
}

fn show_logs(work: &Path) {
    for (name, lines) in [("console.log", 80), ("kbs.log", 20), ("qemu.log", 20)] {
        let Ok(text) = std::fs::read_to_string(work.join(name)) else {
            continue;
        };
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        eprintln!("e2e: --- last {} lines of {name} ---", all.len() - from);
        for l in all.iter().skip(from) {
            eprintln!("  | {l}");
        }
    }
}

fn random(n: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut v)?;
    Ok(v)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// The guest's kernel command line (the agent reads its configuration file from the initrd).
const BASE_CMDLINE: &str = "console=ttyS0 agent.config_file=/etc/cocoon/agent.toml panic=1";
const KEK_ID: &str = "kbs:///default/image-key/1";
const DENIED_KEK_ID: &str = "kbs:///default/denied-key/1";
const SEAL_KEY_ID: &str = "kbs:///default/sealed-key/1";

async fn run(cli: &Cli, work: &Path) -> Result<String> {
    let fake_tee = !cli.fake_tee_modules.is_empty();

    // Keys and secrets, fresh for this run.
    let kek = random(32)?;
    let denied_kek = random(32)?;
    let (rsa_pub, rsa_private) = images::rsa_key(work)?;
    let seal_key =
        p256::ecdsa::SigningKey::from_slice(&random(32)?).context("a P-256 signing key")?;
    let db_password = hex::encode(random(12)?);
    let token = hex::encode(random(16)?);
    let seal = |resource: &str| {
        let payload = cocoon_ctl::secret::vault_payload(
            resource,
            "kbs",
            &serde_json::Map::new(),
            &serde_json::Map::new(),
        );
        cocoon_ctl::secret::seal(&payload, &seal_key, SEAL_KEY_ID)
    };
    let sealed_env = seal("kbs:///default/secret/db-password");
    let sealed_token = seal("kbs:///default/secret/token");

    // The registry and its images.
    let registry = services::Registry::start(work)?;
    let plain = work.join("layout-plain");
    images::plain_layout(&plain, &cli.busybox, "")?;
    let repo = |tag: &str| format!("{}/cocoon/app:{tag}", registry.addr);
    let guest = |tag: &str| format!("{}/cocoon/app:{tag}", vm::GUEST_REGISTRY);
    let rsa_arg = format!("jwe:{}", rsa_pub.display());
    images::push(&plain, &repo("jwe"), &["--encryption-key", &rsa_arg])?;
    for (tag, key, kid) in [
        ("provider", &kek, KEK_ID),
        ("tampered", &kek, KEK_ID),
        ("denied", &denied_kek, DENIED_KEK_ID),
    ] {
        let out = work.join(format!("layout-{tag}"));
        // Each image has its own app layer: one the guest already holds (by diff_id) is
        // not fetched again, so neither its key nor its registry copy would matter.
        let variant = work.join(format!("layout-plain-{tag}"));
        images::plain_layout(&variant, &cli.busybox, &format!(" ({tag})"))?;
        let source = variant;
        images::provider_encrypted(&source, &out, key, kid)?;
        images::push(&out, &repo(tag), &[])?;
        if tag == "tampered" {
            images::tamper_top_layer(&out, &registry.root)?;
        }
    }

    // The KBS: keys, the sealing key's public half, the secrets.
    let public_jwk = cocoon_ctl::secret::public_jwk(&seal_key, SEAL_KEY_ID).to_string();
    let resources: Vec<(&str, Vec<u8>)> = vec![
        ("default/image-key/1", kek.clone()),
        ("default/image-key/rsa", rsa_private),
        ("default/denied-key/1", denied_kek),
        ("default/sealed-key/1", public_jwk.into_bytes()),
        (
            "default/secret/db-password",
            db_password.clone().into_bytes(),
        ),
        ("default/secret/token", token.clone().into_bytes()),
    ];
    let policy = json!({"default": "allow", "deny": ["default/denied-key/1"]});
    let evidence = if fake_tee { "snp-test" } else { "sample" };
    let kbs = services::Kbs::start(&cli.test_kbs, work, &resources, &policy, evidence)?;
    let kbs_port: u16 = kbs
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("KBS port")?;
    let registry_port: u16 = registry
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("registry port")?;
    eprintln!(
        "e2e: registry on {} (guest: {}), test KBS on {} (guest: {}, evidence {evidence}, pid {})",
        registry.addr,
        vm::GUEST_REGISTRY,
        kbs.addr,
        vm::GUEST_KBS,
        kbs.pid()
    );

    // The initrd: the agent, its config (measured with the initrd), the NIC driver.
    let config = format!(
        "aa_kbc_params = \"cc_kbc::http://{kbs}\"\n{attester}\
         {policy}[image]\ndecryption_key_uris = [\"kbs:///default/image-key/rsa\"]\n\
         [[image.registry_config.registry]]\nlocation = \"{reg}\"\ninsecure = true\n",
        kbs = vm::GUEST_KBS,
        reg = vm::GUEST_REGISTRY,
        attester = if fake_tee {
            ""
        } else {
            "attester = \"sample\"\n"
        },
        policy = if cli.policy.is_some() {
            "policy_file = \"/etc/kata-opa/default-policy.rego\"\n"
        } else {
            ""
        },
    );
    let config_path = work.join("agent.toml");
    std::fs::write(&config_path, &config)?;
    let initrd = work.join("initrd.img");
    let mut rb = std::process::Command::new(&cli.rootfs_builder);
    rb.arg("initrd")
        .arg("--agent")
        .arg(&cli.agent)
        .arg("--kernel-modules")
        .arg(&cli.kernel_modules)
        .args(["--module", "virtio_net", "--module", "overlay"])
        // The direct-assigned volume (volume.rs): its disk, ext4 and the checksum
        // ext4 asks the crypto API for at mount (no modprobe in the guest).
        .args([
            "--module",
            "virtio_blk",
            "--module",
            "crc32c_generic",
            "--module",
            "ext4",
        ])
        // Debian's kernel does not enforce module signatures; checking them costs ~25 ms
        // per module under TCG and protects nothing the initrd's measurement does not.
        // (The smoke test boots signed modules.)
        .arg("--strip-module-signatures")
        .arg("--agent-config")
        .arg(&config_path)
        .arg("--ca-certs")
        .arg(&cli.ca_certs)
        .arg("-o")
        .arg(&initrd);
    for m in &cli.fake_tee_modules {
        rb.args(["--module", m]);
    }
    if let Some(p) = &cli.policy {
        rb.arg("--policy").arg(p);
    }
    procs::run(&mut rb).context("building the initrd")?;

    // Boot. CPU and memory hotplug in the pod's VM (not in the start-up benchmark's);
    // COCOON_E2E_HOTPLUG=0 leaves them out.
    let hotplug =
        cli.startup_runs.is_none() && std::env::var("COCOON_E2E_HOTPLUG").as_deref() != Ok("0");
    let mut cmdline = BASE_CMDLINE.to_string();
    if hotplug {
        // Debian's kernel onlines hot-added memory by itself; the runtime's
        // OnlineCPUMem is what onlines it here.
        cmdline.push_str(" memhp_default_state=offline");
    }
    // COCOON_E2E_KERNEL_ARGS: extra kernel parameters for diagnosis (e.g.
    // `initcall_debug ignore_loglevel` to see where boot time goes).
    if let Ok(extra) = std::env::var("COCOON_E2E_KERNEL_ARGS") {
        if !extra.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(extra.trim());
        }
    }
    // The pod's VM also gets a block volume to grow (with the hotplug step: QMP).
    let volume = if hotplug {
        let image = work.join("volume.img");
        volume::make_image(&image)?;
        Some(image)
    } else {
        None
    };
    let vm_cfg = vm::VmConfig {
        kernel: cli.kernel.clone(),
        initrd,
        cmdline,
        memory: "1024M".into(),
        registry_port,
        kbs_port,
        hotplug,
        volume,
    };
    if let Some(n) = cli.startup_runs {
        return startup_bench(work, cli, &vm_cfg, n).await;
    }
    let (mut vm, client) = boot_and_connect(work, &vm_cfg).await?;
    let ready = vm.started.elapsed();
    let run_init = vm.console.seen("Run /init");
    let listening = vm.console.seen("listening on vsock://");
    let serving = vm.console.seen("serving requests");

    // The pod.
    scenario::network(&client).await.context("network")?;
    client
        .call(
            "CreateSandbox",
            &json!({"hostname": "cocoon-e2e", "sandbox_id": "e2e"}),
        )
        .await?;
    let details = client
        .call("GetGuestDetails", &json!({"mem_block_size": true}))
        .await?;
    let details_text = details.to_string();
    if fake_tee {
        ensure!(
            details_text.to_lowercase().contains("snp"),
            "GetGuestDetails does not report SEV-SNP: {details_text}"
        );
    }

    // The pause container, from the initrd's bundle: no pull.
    client
        .call_timeout(
            "CreateContainer",
            &scenario::create_request("pause", "pause", &[], &[]),
            scenario::PULL_TIMEOUT_PUB,
        )
        .await
        .context("the pause container")?;
    client
        .call("StartContainer", &json!({"container_id": "pause"}))
        .await?;

    // The workload, from the JWE-encrypted image, with a sealed env var and a sealed
    // secret volume.
    let expect = |out: &str, what: &str| -> Result<()> {
        let want = [
            format!("image file: {}", images::IMAGE_FILE_TEXT),
            // Not the guest's PID namespace, though the spec names none (as the runtime's).
            "pid in its own namespace: 1".to_owned(),
            format!("env secret sha256: {}", sha256_hex(db_password.as_bytes())),
            format!("volume secret sha256: {}", sha256_hex(token.as_bytes())),
            "sealed env replaced: yes".to_owned(),
            // containerd's default profile (scenario::spec), filter mode 2.
            "seccomp: Seccomp:2, userns denied".to_owned(),
            // The pod's own rules on top (scenario::default_seccomp): errnoRet 38 and
            // KILL_PROCESS (SIGSYS: 128 + 31).
            "Function not implemented".to_owned(),
            "seccomp sync: exit 159".to_owned(),
        ];
        for w in &want {
            ensure!(
                out.contains(w.as_str()),
                "{what}: want {w:?} in the output:\n{out}"
            );
        }
        Ok(())
    };
    let mut outputs = Vec::new();
    let mut first = None;
    for (cid, tag) in [("app-jwe", "jwe"), ("app-provider", "provider")] {
        let volume = scenario::copy_secret_volume(
            &client,
            work,
            &format!("{cid}-secret"),
            &[("token", &sealed_token)],
        )
        .await?;
        let env = vec![format!("DB_PASSWORD={sealed_env}")];
        let mounts = vec![json!({"destination": "/etc/secret", "source": volume,
                                 "type": "bind", "options": ["rbind", "ro"]})];
        let req = scenario::create_request(cid, &guest(tag), &env, &mounts);
        let ran = scenario::run_container(&client, cid, &req)
            .await
            .with_context(|| format!("the workload from {}", guest(tag)))?;
        ensure!(ran.exit == 0, "{cid} exited {}: {}", ran.exit, ran.output);
        expect(&ran.output, cid)?;
        if first.is_none() {
            first = Some((ran.create, ran.first_byte));
        }
        outputs.push((cid, ran.output));
    }
    let metrics = client.call("GetMetrics", &json!({})).await?;
    let attest_secs = metrics["metrics"]
        .as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix("coco_attestation_duration_seconds_sum "))
        .and_then(|v| v.trim().parse::<f64>().ok());

    // Negative cases: nothing runs, each says why.
    let denied = client
        .fails(
            "CreateContainer",
            &scenario::create_request("app-denied", &guest("denied"), &[], &[]),
            scenario::PULL_TIMEOUT_PUB,
        )
        .await?;
    ensure!(
        denied.contains(&guest("denied")) && denied.to_lowercase().contains("denied"),
        "the denied key: unexpected error: {denied}"
    );
    let tampered = client
        .fails(
            "CreateContainer",
            &scenario::create_request("app-tampered", &guest("tampered"), &[], &[]),
            scenario::PULL_TIMEOUT_PUB,
        )
        .await?;
    ensure!(
        tampered.contains(&guest("tampered")) && tampered.contains("layer sha256:"),
        "the tampered layer: unexpected error: {tampered}"
    );
    for cid in ["app-denied", "app-tampered"] {
        let e = client
            .fails(
                "StartContainer",
                &json!({"container_id": cid}),
                Duration::from_secs(20),
            )
            .await?;
        ensure!(
            e.contains("NOT_FOUND"),
            "{cid} exists after its failed create: {e}"
        );
    }
    let exec = client
        .fails(
            "ExecProcess",
            &json!({"container_id": "pause", "exec_id": "peek",
                    "process": {"Args": ["/bin/sh", "-c", "env"], "Cwd": "/",
                                "User": {"UID": 0, "GID": 0}}}),
            Duration::from_secs(20),
        )
        .await;
    let exec_note = match exec {
        Ok(e) if e.contains("PERMISSION_DENIED") && e.contains("blocked by policy") => {
            "ExecProcess denied by the confidential default policy".to_owned()
        }
        Ok(e) if !fake_tee => format!("ExecProcess refused ({e}); no TEE: policy allows all"),
        Ok(e) => bail!("ExecProcess: want a policy denial, got: {e}"),
        Err(e) if !fake_tee => format!("ExecProcess allowed without a TEE (allow-all): {e}"),
        Err(e) => bail!("ExecProcess was allowed in a confidential guest: {e}"),
    };

    // CPU and memory hotplug, with the pod running.
    let hotplugged = match &vm.qmp {
        Some(sock) => Some(
            hotplug::cpu_and_memory(&client, sock)
                .await
                .context("CPU and memory hotplug")?,
        ),
        None => None,
    };
    // A direct-assigned volume grown online: ResizeVolume and GetVolumeStats.
    let resized = match &vm.qmp {
        Some(sock) => Some(
            volume::grow(&client, sock, &guest("jwe"))
                .await
                .context("growing the block volume")?,
        ),
        None => None,
    };

    let stats = kbs.stats()?;
    let handshakes = stats["handshakes"].as_u64().unwrap_or(u64::MAX);
    ensure!(
        handshakes == 1,
        "want exactly one attestation for the pod, the KBS saw {handshakes}: {stats}"
    );

    // The end: DestroySandbox powers the VM off.
    let _ = client
        .call_timeout("DestroySandbox", &json!({}), Duration::from_secs(30))
        .await;
    vm.wait_poweroff(Duration::from_secs(60))
        .context("the VM did not power off after DestroySandbox")?;

    // The floor, booted after the pod's VM is gone (one VM at a time).
    let floor = if cli.no_floor {
        None
    } else {
        Some(floor::measure(
            work,
            &cli.rootfs_builder,
            &cli.busybox,
            &vm_cfg,
        )?)
    };

    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let (create, first_byte) = first.unwrap_or_default();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let since_init = |t: Option<Duration>| match (run_init, t) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let init_to_listen = since_init(listening);
    let init_to_serving = since_init(serving);
    let startup = match (init_to_listen, floor) {
        (Some(l), Some(f)) => format!(
            "/init -> listening {}, -> serving {}; floor (busybox /init prints a line) {}: {:.2}x, {:.2}x",
            ms(l),
            init_to_serving.map_or("?".into(), ms),
            ms(f),
            l.as_secs_f64() / f.as_secs_f64().max(1e-3),
            init_to_serving.map_or(f64::NAN, |s| s.as_secs_f64() / f.as_secs_f64().max(1e-3)),
        ),
        (Some(l), None) => format!(
            "/init -> listening {}, -> serving {}",
            ms(l),
            init_to_serving.map_or("?".into(), ms)
        ),
        _ => "?".into(),
    };
    let mut s = String::new();
    s.push_str("Cocoon: a confidential pod under QEMU (TCG, OVMF)\n");
    s.push_str(&format!(
        "  TEE                {}\n",
        if fake_tee {
            "SEV-SNP (fake test device, recorded report; test KBS checks the binding only)"
        } else {
            "none: sample attester (explicit)"
        }
    ));
    s.push_str(&format!(
        "  agent ready        {} after QEMU start (first Check answered)\n  agent start-up     {startup}\n",
        secs(ready)
    ));
    s.push_str(&format!(
        "  attestation        {} (1 handshake for the whole pod)\n",
        attest_secs.map_or("?".into(), |v| format!("{:.2} s", v))
    ));
    s.push_str(&format!(
        "  pull + decrypt     {} (CreateContainer of {}, attestation included); first output after {}\n",
        secs(create),
        guest("jwe"),
        secs(first_byte)
    ));
    for (cid, out) in &outputs {
        s.push_str(&format!("  {cid} said:\n"));
        for l in out.lines() {
            s.push_str(&format!("    {l}\n"));
        }
    }
    s.push_str(&format!(
        "  denied key         refused: {}\n",
        first_line(&denied)
    ));
    s.push_str(&format!(
        "  tampered layer     refused: {}\n",
        first_line(&tampered)
    ));
    s.push_str(&format!("  exec               {exec_note}\n"));
    match &hotplugged {
        Some(h) => s.push_str(&h.summary()),
        None => s.push_str("  hotplug            not tried (COCOON_E2E_HOTPLUG=0)\n"),
    }
    match &resized {
        Some(r) => s.push_str(&r.summary()),
        None => s.push_str("  volume resize      not tried (COCOON_E2E_HOTPLUG=0)\n"),
    }
    if cli.keep || cli.keep_logs {
        s.push_str(&format!("  logs               {}\n", work.display()));
    }
    Ok(s)
}

/// `--startup-runs N`: the start-up stages of N boots of the pod's guest and N of the
/// floor, one VM at a time; medians, and the ratios to the floor's.
async fn startup_bench(work: &Path, cli: &Cli, cfg: &vm::VmConfig, n: usize) -> Result<String> {
    let median = |mut v: Vec<Duration>| -> Duration {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let (mut listen, mut serve, mut check, mut floors) = (vec![], vec![], vec![], vec![]);
    for run in 1..=n.max(1) {
        let (mut vm, client) = boot_and_connect(work, cfg).await?;
        let checked = vm.started.elapsed();
        let init = vm
            .console
            .seen("Run /init")
            .context("no `Run /init` on the console")?;
        let at = |needle: &str| -> Result<Duration> {
            let t = vm
                .console
                .seen(needle)
                .with_context(|| format!("no {needle:?} on the console"))?;
            Ok(t.saturating_sub(init))
        };
        let (l, s) = (at("listening on vsock://")?, at("serving requests on")?);
        let _ = client
            .call_timeout("DestroySandbox", &json!({}), Duration::from_secs(30))
            .await;
        vm.wait_poweroff(Duration::from_secs(60))?;
        let f = floor::measure(work, &cli.rootfs_builder, &cli.busybox, cfg)?;
        eprintln!(
            "e2e: start-up run {run}: /init -> listening {:.0} ms, -> serving {:.0} ms, QEMU -> Check answered {:.2} s; floor {:.0} ms",
            l.as_secs_f64() * 1e3,
            s.as_secs_f64() * 1e3,
            checked.as_secs_f64(),
            f.as_secs_f64() * 1e3
        );
        listen.push(l);
        serve.push(s);
        check.push(checked);
        floors.push(f);
    }
    let (l, s, c, f) = (median(listen), median(serve), median(check), median(floors));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |d: Duration| ms(d) / ms(f).max(1e-3);
    Ok(format!(
        "start-up, median of {n} boots (TCG, OVMF, 1 vCPU), kernel `Run /init` -> ...\n\
         \x20 agent `listening on`       {:>6.0} ms  {:.2}x the floor\n\
         \x20 agent `serving requests`   {:>6.0} ms  {:.2}x the floor\n\
         \x20 floor (busybox /init echo) {:>6.0} ms\n\
         \x20 QEMU start -> first Check answered {:.2} s",
        ms(l),
        ratio(l),
        ms(s),
        ratio(s),
        ms(f),
        c.as_secs_f64()
    ))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

/// Boots and connects; one restart if the connection hangs (it does now and then under
/// TCG with vhost-user-vsock).
async fn boot_and_connect(work: &Path, cfg: &vm::VmConfig) -> Result<(vm::Vm, Client)> {
    let mut last = None;
    for attempt in 1..=2 {
        let mut vm = vm::Vm::boot(work, cfg)?;
        let t = Instant::now();
        if let Err(e) = vm.wait_console("listening on vsock://-1:1024", Duration::from_secs(150)) {
            last = Some(e);
            eprintln!(
                "e2e: boot {attempt} failed: {:#}",
                last.as_ref().map_or(String::new(), |e| format!("{e:#}"))
            );
            continue;
        }
        eprintln!(
            "e2e: agent listening {:.1} s after QEMU start (waited {:.1} s)",
            vm.started.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        match Client::connect(vm.address(), Duration::from_secs(40)).await {
            Ok(c) => return Ok((vm, c)),
            Err(e) => {
                eprintln!("e2e: attempt {attempt}: {e:#}; restarting the VM");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the VM did not come up")))
}
