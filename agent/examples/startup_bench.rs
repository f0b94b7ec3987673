//! Start-up benchmark: exec → first successful `Health.Check` over a unix socket, and
//! the idle RSS after start-up, for any agent binary that honours
//! `KATA_AGENT_SERVER_ADDR` (ours, or upstream kata-agent). The client is a plain
//! connect plus the generated ttrpc `HealthClient`, warmed on an untimed first run.
//!
//! `cargo run --release -p cocoon-agent --example startup_bench -- AGENT [RUNS]`
//! prints one JSON line: `{"runs":N,"median_ms":..,"min_ms":..,"max_ms":..,"idle_rss_kib":..}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (on-CPU ns from schedstat, all threads) the process has used so far.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let agent = args.get(1).expect("usage: startup_bench AGENT [RUNS]");
    let runs: usize = args.get(2).map(|r| r.parse().unwrap()).unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut times = Vec::new();
    let mut connects = Vec::new();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    let req = cocoon_protocols::health::CheckRequest::new();
    // Warm the client's own path once (ttrpc, tokio's reactor, the generated client)
    // against an agent whose time is not counted, so every timed run measures the agent:
    // the set-up of the client is done before the exec.
    for run in 0..=runs {
        let sock = dir.path().join(format!("agent-{run}.sock"));
        let sock_addr = format!("unix://{}", sock.display());
        let start = Instant::now();
        let mut child = Command::new(agent)
            .env("KATA_AGENT_SERVER_ADDR", &sock_addr)
            .env("KATA_AGENT_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (connected, elapsed) = runtime.block_on(async {
            loop {
                // A plain connect first: no client is built while nothing listens.
                if let Ok(stream) = std::os::unix::net::UnixStream::connect(&sock) {
                    let connected = start.elapsed();
                    let fd = std::os::fd::IntoRawFd::into_raw_fd(stream);
                    // SAFETY: `fd` is a connected unix socket we own; the client takes it.
                    let client = unsafe { ttrpc::r#async::Client::from_raw_unix_socket_fd(fd) };
                    let health = cocoon_protocols::health_ttrpc::HealthClient::new(client);
                    let ctx = ttrpc::context::with_timeout(5_000_000_000);
                    if health.check(ctx, &req).await.is_ok() {
                        return (connected, start.elapsed());
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "agent never answered"
                );
                // Not tokio's sleep: its timer has 1 ms granularity, which quantised
                // the figure to whole milliseconds of polling. Nothing else runs on this
                // runtime, so a blocking 50 µs nanosleep costs nothing.
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        if run == 0 {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        cpu.push(cpu_ns(child.id()) as f64 / 1e6);
        times.push(elapsed.as_secs_f64() * 1000.0);
        connects.push(connected.as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(300));
        rss.push(rss_kib(child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    connects.sort_by(|a, b| a.total_cmp(b));
    cpu.sort_by(|a, b| a.total_cmp(b));
    rss.sort();
    println!(
        "{{\"runs\":{runs},\"median_ms\":{:.3},\"min_ms\":{:.3},\"max_ms\":{:.3},\"connect_median_ms\":{:.3},\"agent_cpu_median_ms\":{:.3},\"idle_rss_kib\":{}}}",
        times[runs / 2],
        times[0],
        times[runs - 1],
        connects[runs / 2],
        cpu[runs / 2],
        rss[runs / 2]
    );
}
