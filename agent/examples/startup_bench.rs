//! Start-up benchmark: exec → first successful `Health.Check` over a unix socket, and
//! the idle RSS after start-up, for any agent binary that honours
//! `KATA_AGENT_SERVER_ADDR` (ours, or upstream kata-agent).
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
    let mut rss = Vec::new();
    for run in 0..runs {
        let sock = dir.path().join(format!("agent-{run}.sock"));
        let addr: cocoon_ctl::Address = format!("unix://{}", sock.display()).parse().unwrap();
        let start = Instant::now();
        let mut child = Command::new(agent)
            .env("KATA_AGENT_SERVER_ADDR", addr.to_string())
            .env("KATA_AGENT_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let elapsed = runtime.block_on(async {
            loop {
                if let Ok(client) = cocoon_ctl::connect(&addr).await {
                    let check =
                        cocoon_ctl::call_json(&client, "Check", "{}", Duration::from_secs(5));
                    if check.await.is_ok() {
                        return start.elapsed();
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "agent never answered"
                );
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        });
        times.push(elapsed.as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(300));
        rss.push(rss_kib(child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    rss.sort();
    println!(
        "{{\"runs\":{runs},\"median_ms\":{:.3},\"min_ms\":{:.3},\"max_ms\":{:.3},\"idle_rss_kib\":{}}}",
        times[runs / 2],
        times[0],
        times[runs - 1],
        rss[runs / 2]
    );
}
