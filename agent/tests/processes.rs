//! Process identity through the real agent: signals after a process is reaped reach no
//! one else (pidfds), and two ExecProcess calls with one exec id cannot both win.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::json;

use pod::{pids_with, require_pod, wait_pids, Pod};

/// A process of ours that has exactly `pid` (the pid just freed), by setting the PID
/// namespace's last pid just below it. Retries while something else on the host takes it.
fn process_with_pid(pid: i32) -> Child {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
        if i32::try_from(child.id()).unwrap() == pid {
            return child;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    panic!("could not get pid {pid} again");
}

/// An exec exits and is reaped by the agent; a process of the host side gets its pid.
/// SignalProcess for the exec and RemoveContainer (which kills every exec) must not
/// touch it: with `kill(pid)` the removal killed it.
#[test]
fn signals_after_reaping_reach_no_one_else() {
    require_pod!();
    let pod = Pod::new();
    let marker = format!("{}", 800_000 + std::process::id() % 99_999);
    pod.run("box", &["sleep", "1000"]);
    let mut process = pod.spec(&["sleep", &marker])["Process"].clone();
    process["Args"] = json!(["sleep", marker]);
    pod.ok(
        "ExecProcess",
        json!({"container_id": "box", "exec_id": "e", "process": process}),
    );
    wait_pids(&marker, 1);
    let pid = pids_with(&marker)[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Reaped by the agent (its status delivered); its output not read, so the agent
    // still holds the exec.
    assert_eq!(pod.wait("box", "e"), 128 + 9);

    let mut victim = process_with_pid(pid);
    pod.ok(
        "SignalProcess",
        json!({"container_id": "box", "exec_id": "e", "signal": 9}),
    );
    pod.ok("RemoveContainer", json!({"container_id": "box"}));
    std::thread::sleep(Duration::from_millis(200));
    let status = victim.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the process that got the exec's pid was signalled: {:?}",
        status.and_then(|s| s.signal())
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

/// Many ExecProcess calls with one exec id at once: exactly one starts a process, the
/// others are ALREADY_EXISTS.
#[test]
fn concurrent_execs_with_one_id_start_one_process() {
    require_pod!();
    let pod = Pod::new();
    let marker = format!("{}", 700_000 + std::process::id() % 99_999);
    pod.run("box", &["sleep", "1000"]);
    let mut process = pod.spec(&["sleep", &marker])["Process"].clone();
    process["Args"] = json!(["sleep", marker]);
    let results: Vec<Result<serde_json::Value, String>> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let req = json!({"container_id": "box", "exec_id": "dup", "process": process});
                let addr = pod.addr.as_str();
                s.spawn(move || common::call(addr, "ExecProcess", &req.to_string()))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(e.contains("ALREADY_EXISTS"), "{e}");
        }
    }
    wait_pids(&marker, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pids_with(&marker).len(), 1, "one process for the one exec");
    // The winner is the exec the agent knows: killing it ends the only process.
    pod.ok(
        "SignalProcess",
        json!({"container_id": "box", "exec_id": "dup", "signal": 9}),
    );
    assert_eq!(pod.wait("box", "dup"), 128 + 9);
    wait_pids(&marker, 0);
    pod.ok("RemoveContainer", json!({"container_id": "box"}));
}
