//! Policy evaluation cost per request, as the agent pays it (request message → upstream's
//! JSON input → regorus → verdict): genpolicy's `rules.rego` plus a pod's policy data,
//! side by side with an allow-all policy (the floor: conversion and engine overhead).
//!
//! `cargo run --release -p cocoon-agent --example policy-bench -- <genpolicy fixtures dir> [iterations]`
//! (`agent/benches/policy.sh` runs it on `../shared/fixtures/genpolicy`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cocoon_agent::policy::Policy;
use cocoon_protocols::agent::{CreateContainerRequest, ReadStreamRequest};
use serde_json::Value;

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

#[path = "../tests/support/genpolicy.rs"]
mod genpolicy;

/// genpolicy's output for the test pod (one copy with the policy tests).
fn generated_policy(dir: &Path) -> anyhow::Result<String> {
    genpolicy::generated_policy(dir).map_err(anyhow::Error::msg)
}

/// This thread's CPU time in µs (wall time is unreliable on a loaded 2-core machine).
fn cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel
    // knows. On failure `ts` stays zero (a figure of 0, visibly wrong).
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

/// Medians of `n` runs of `f`, in µs: (wall, this thread's CPU).
fn measure(n: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..n / 10 + 1 {
        f();
    }
    let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..n)
        .map(|_| {
            let (start, c0) = (Instant::now(), cpu_us());
            f();
            (start.elapsed().as_secs_f64() * 1e6, cpu_us() - c0)
        })
        .unzip();
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (wall[n / 2], cpu[n / 2])
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: policy-bench <genpolicy dir> [n]")?,
    );
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);

    let cases = read_json(&dir.join("testcases/state-execprocess/testcases.json"))?;
    let create: CreateContainerRequest = serde_json::from_value(cases[0]["request"].clone())?;
    let read = ReadStreamRequest {
        container_id: create.container_id.clone(),
        exec_id: create.container_id.clone(),
        len: 32 * 1024,
        ..Default::default()
    };

    let text = generated_policy(&dir)?;
    let t = Instant::now();
    let genpolicy = Policy::from_rego("genpolicy", &text)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let floor = Policy::allow_all()?;
    // As upstream's agent evaluates the same policy: the policy_data literal built on
    // every request (a trailing comment keeps it from being hoisted) and every print
    // formatted (`evaluate` gathers them).
    let upstream_like = Policy::from_rego("genpolicy", &format!("{text}# as is\n"))?;
    // The request must really be allowed by the generated policy (the full path).
    genpolicy
        .check(&create)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The same request with one more argument: denied (the compiled copy says no, the
    // interpreter decides and explains, with the prints).
    let mut denied = create.clone();
    if let Some(p) = denied.OCI.as_mut().and_then(|s| s.Process.as_mut()) {
        p.Args.push("--not-in-the-policy".into());
    }
    anyhow::ensure!(
        genpolicy.check(&denied).is_err(),
        "the changed request is allowed"
    );
    // ReadStream is denied by genpolicy's defaults (as in a CoCo pod): both verdicts
    // cost the same evaluation.
    let read_allowed = genpolicy.allows_stream_read(&read);
    let input_create = cocoon_agent::policy::input::request("CreateContainerRequest", &create)?;
    let input_read = cocoon_agent::policy::input::request("ReadStreamRequest", &read)?;

    let (g_c, g_c_cpu) = measure(n, || {
        let _ = genpolicy.check(&create);
    });
    let (f_c, f_c_cpu) = measure(n, || {
        let _ = floor.check(&create);
    });
    let (g_d, g_d_cpu) = measure(n / 4 + 1, || {
        let _ = genpolicy.check(&denied);
    });
    // A container the policy has not seen: its `ops` are applied (new state) to both
    // copies of `data`, and the next request is checked (the interpreter prepares the
    // policy again only when it next evaluates: at a denial).
    let details = cocoon_protocols::agent::GuestDetailsRequest::default();
    let mut seq = 0u64;
    let mut fresh = |p: &Policy| {
        seq += 1;
        let mut c = create.clone();
        c.container_id = format!("{:064x}", seq);
        let _ = p.check(&c);
        let _ = p.check(&details);
    };
    let (u_c, u_c_cpu) = measure(n / 4 + 1, || {
        let _ = upstream_like.evaluate("CreateContainerRequest", input_create.clone());
    });
    let (u_r, u_r_cpu) = measure(n, || {
        let _ = upstream_like.evaluate("ReadStreamRequest", input_read.clone());
    });
    let (g_s, g_s_cpu) = measure(n / 4 + 1, || fresh(&genpolicy));
    let (f_s, f_s_cpu) = measure(n / 4 + 1, || fresh(&floor));
    let (g_r, g_r_cpu) = measure(n * 5, || {
        let _ = genpolicy.allows_stream_read(&read);
    });
    let (f_r, f_r_cpu) = measure(n * 5, || {
        let _ = floor.allows_stream_read(&read);
    });

    println!(
        "policy: genpolicy rules.rego ({} lines) + policy data, {} bytes; loaded in {load_ms:.1} ms; {}",
        text.lines().count(),
        text.len(),
        if genpolicy.is_compiled() {
            "compiled copy (RVM) for allows"
        } else {
            "NO compiled copy: interpreter only"
        }
    );
    println!(
        "{:<24} {:>22} {:>22} {:>8}",
        "median µs (wall / cpu)", "genpolicy", "allow-all", "ratio"
    );
    println!(
        "{:<24} {:>10.1} / {:>9.1} {:>10.1} / {:>9.1} {:>7.1}x",
        "CreateContainerRequest",
        g_c,
        g_c_cpu,
        f_c,
        f_c_cpu,
        g_c_cpu / f_c_cpu
    );
    println!(
        "{:<24} {:>10.1} / {:>9.1} {:>10.1} / {:>9.1} {:>7.1}x",
        "CreateContainer, new id",
        g_s,
        g_s_cpu,
        f_s,
        f_s_cpu,
        g_s_cpu / f_s_cpu
    );
    println!(
        "{:<24} {:>10.1} / {:>9.1} {:>22}",
        "CreateContainer, denied", g_d, g_d_cpu, "-"
    );
    println!(
        "{:<24} {:>10.1} / {:>9.1} {:>10.1} / {:>9.1} {:>7.1}x",
        "ReadStreamRequest",
        g_r,
        g_r_cpu,
        f_r,
        f_r_cpu,
        g_r_cpu / f_r_cpu
    );
    println!(
        "upstream-like (prints formatted, policy_data rebuilt per request): CreateContainer \
         {u_c:.1} / {u_c_cpu:.1}, ReadStream {u_r:.1} / {u_r_cpu:.1} µs"
    );
    println!(
        "(median of {n} / {} / {} runs; CreateContainer allowed, \"new id\" = a container \
         not seen before plus the next request, \"denied\" = one more argument, with the \
         policy's prints, ReadStream {})",
        n / 4 + 1,
        n * 5,
        if read_allowed { "allowed" } else { "denied" }
    );
    println!(
        "ratio and goals on CPU time; goals: CreateContainer <= 1000 µs: {}; ReadStream <= 50 µs: {}",
        if g_c_cpu <= 1000.0 { "met" } else { "NOT met" },
        if g_r_cpu <= 50.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
