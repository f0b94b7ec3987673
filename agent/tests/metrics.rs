//! GetMetrics through the real binary: the text parses as Prometheus exposition format,
//! carries upstream kata-agent's metric names, and its values are this machine's (the
//! agent runs natively: its "guest" is this kernel).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};

use common::{call, temp_socket, AgentProcess};

/// A sample: family name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// Parses Prometheus text: every line a `# HELP`/`# TYPE` comment or a sample whose
/// family was typed before it.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.is_empty(), "empty line in:\n{text}");
        let (head, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = l
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (head.to_string(), HashMap::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(typed.contains(&name), "{name} has no TYPE line before it");
        out.push((name, labels, value));
    }
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|(n, l, _)| {
        n == name
            && labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    })
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .2
}

#[test]
fn get_metrics_has_upstreams_agent_and_guest_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let sock = temp_socket(&dir);
    let agent = AgentProcess::start_unix(&sock);
    let addr = format!("unix://{}", sock.display());
    let get = || {
        let resp = call(&addr, "GetMetrics", "{}").unwrap();
        resp["metrics"].as_str().unwrap().to_string()
    };
    let first = parse(&get());
    let text = get();
    let m = parse(&text);
    assert_eq!(value(&first, "kata_agent_scrape_count", &[]), 1.0);
    assert_eq!(value(&m, "kata_agent_scrape_count", &[]), 2.0);

    // The agent's own process.
    assert!(value(&m, "kata_agent_threads", &[]) >= 1.0);
    assert!(value(&m, "kata_agent_total_vm", &[]) > 1e6);
    assert!(value(&m, "kata_agent_total_rss", &[]) > 1e5);
    assert!(value(&m, "kata_agent_total_time", &[]) >= 0.0);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    assert!(status.contains("Threads:"));
    assert!(value(&m, "kata_agent_proc_status", &[("item", "vmpeak")]) > 0.0);
    for item in ["utime", "stime", "cutime", "cstime"] {
        find(&m, "kata_agent_proc_stat", &[("item", item)]).unwrap();
    }
    for item in [
        "rchar",
        "wchar",
        "syscr",
        "syscw",
        "read_bytes",
        "write_bytes",
    ] {
        find(&m, "kata_agent_io_stat", &[("item", item)]).unwrap();
    }

    // The guest (this kernel): the same numbers as /proc says.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mem_total: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        value(&m, "kata_guest_meminfo", &[("item", "mem_total")]),
        mem_total * 1024.0
    );
    for item in [
        "mem_free",
        "mem_available",
        "cached",
        "active_anon",
        "swap_total",
    ] {
        find(&m, "kata_guest_meminfo", &[("item", item)]).unwrap();
    }
    for item in ["load1", "load5", "load15"] {
        find(&m, "kata_guest_load", &[("item", item)]).unwrap();
    }
    assert!(value(&m, "kata_guest_tasks", &[("item", "max")]) >= 1.0);
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let cpu_labels: HashSet<&str> = m
        .iter()
        .filter(|(n, _, _)| n == "kata_guest_cpu_time")
        .map(|(_, l, _)| l["cpu"].as_str())
        .collect();
    assert_eq!(cpu_labels.len(), cpus + 1, "{cpu_labels:?}");
    assert!(
        value(
            &m,
            "kata_guest_cpu_time",
            &[("cpu", "total"), ("item", "idle")]
        ) > 0.0
    );
    // The agent's network namespace is this host's: lo is there.
    find(
        &m,
        "kata_guest_netdev_stat",
        &[("interface", "lo"), ("item", "recv_bytes")],
    )
    .unwrap();
    find(&m, "kata_guest_vm_stat", &[("item", "pgfault")]).unwrap();
    if std::fs::read_to_string("/proc/diskstats").is_ok_and(|s| !s.trim().is_empty()) {
        assert!(m.iter().any(|(n, l, _)| n == "kata_guest_diskstat"
            && l.contains_key("disk")
            && l["item"] == "sectors_read"));
    }
    // The root filesystem (writable ext4/xfs/... here) with its usage.
    let fs: Vec<&Sample> = m
        .iter()
        .filter(|(n, _, _)| n == "kata_guest_filesystem_bytes")
        .collect();
    for (_, l, v) in &fs {
        assert!(l.contains_key("mount") && l.contains_key("device"), "{l:?}");
        if l["item"] == "total" {
            assert!(*v > 0.0);
        }
    }
    assert!(text.contains("# TYPE kata_agent_scrape_count counter\n"));
}
