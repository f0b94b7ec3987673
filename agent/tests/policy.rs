//! The agent policy on the running agent: the confidential default (denies ExecProcess,
//! allows the pod lifecycle), SetPolicy checked and replacing the policy, state through
//! `ops`, and a broken policy file stopping the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use common::{call, AgentProcess, AGENT};
use pod::{require_pod, Pod};

/// The agent on a unix socket in `dir`, with `env` on top.
fn agent(dir: &Path, env: &[(&str, &str)]) -> (AgentProcess, String) {
    let sock = dir.join("agent.sock");
    let mut command = Command::new(AGENT);
    command
        .env(
            "KATA_AGENT_SERVER_ADDR",
            format!("unix://{}", sock.display()),
        )
        .env("COCOON_RUN_DIR", dir.join("run"))
        .env_remove("KATA_AGENT_POLICY_FILE")
        .env_remove("COCOON_POLICY_CONFIDENTIAL");
    for (k, v) in env {
        command.env(k, v);
    }
    let addr = format!("unix://{}", sock.display());
    (AgentProcess::start(command), addr)
}

fn denied(result: Result<Value, String>, rule: &str) -> String {
    let e = result.expect_err("the policy should deny this");
    assert!(e.contains("PERMISSION_DENIED"), "{e}");
    assert!(e.contains(&format!("{rule} is blocked by policy: ")), "{e}");
    e
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn confidential_default_denies_exec_process() {
    let dir = tempfile::tempdir().unwrap();
    let (a, addr) = agent(dir.path(), &[("COCOON_POLICY_CONFIDENTIAL", "1")]);
    assert!(
        a.seen
            .iter()
            .any(|l| l.contains("built-in confidential default")),
        "{:?}",
        a.seen
    );

    let exec = json!({"container_id": "c1", "exec_id": "e1", "process": {"Args": ["sh"]}});
    let e = denied(
        call(&addr, "ExecProcess", &exec.to_string()),
        "ExecProcessRequest",
    );
    assert!(e.contains("denied in a confidential guest"), "{e}");
    denied(
        call(
            &addr,
            "WriteStdin",
            r#"{"container_id": "c1", "exec_id": "c1", "data": "eA=="}"#,
        ),
        "WriteStreamRequest",
    );
    denied(
        call(
            &addr,
            "SetPolicy",
            r#"{"policy": "package agent_policy\ndefault ExecProcessRequest := true"}"#,
        ),
        "SetPolicyRequest",
    );
    // Still denied: SetPolicy did not replace anything.
    denied(
        call(&addr, "ExecProcess", &exec.to_string()),
        "ExecProcessRequest",
    );

    // CopyFile: only into the shared containers directory.
    let shared = dir.path().join("run/shared/containers");
    let copy = |path: &str| {
        json!({"path": path, "file_mode": 0o100644, "file_size": 2, "data": "aGk=", "offset": 0,
               "dir_mode": 0o755})
        .to_string()
    };
    let e = denied(
        call(&addr, "CopyFile", &copy("/etc/cocoon-test")),
        "CopyFileRequest",
    );
    assert!(e.contains("is outside"), "{e}");
    let target = shared.join("abc-0123456789abcdef-hosts");
    call(&addr, "CopyFile", &copy(target.to_str().unwrap())).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"hi");

    // Allowed: what the runtime asks before a pod exists, and the stream reads answer
    // (no such process here) instead of a denial.
    let details = call(&addr, "GetGuestDetails", r#"{"mem_block_size": true}"#).unwrap();
    assert!(details["agent_details"]["version"].is_string(), "{details}");
    let e = call(
        &addr,
        "ReadStdout",
        r#"{"container_id": "c1", "exec_id": "c1", "len": 10}"#,
    )
    .unwrap_err();
    assert!(!e.contains("PERMISSION_DENIED"), "{e}");
    call(&addr, "Check", "{}").unwrap();
}

#[test]
fn confidential_default_allows_the_pod_lifecycle() {
    require_pod!();
    let dir = tempfile::Builder::new()
        .prefix("cocoon-pod")
        .tempdir()
        .unwrap();
    let run_dir = dir.path().join("run");
    let cgroup_parent = format!("cocoon-test-{}-policy", std::process::id());
    let sock = dir.path().join("agent.sock");
    let mut command = Command::new(AGENT);
    command
        .env(
            "KATA_AGENT_SERVER_ADDR",
            format!("unix://{}", sock.display()),
        )
        .env("COCOON_RUN_DIR", &run_dir)
        .env("COCOON_CGROUP_PARENT", &cgroup_parent)
        .env("COCOON_POLICY_CONFIDENTIAL", "1")
        .env_remove("KATA_AGENT_POLICY_FILE");
    let agent = AgentProcess::start(command);
    let rootfs = pod::busybox_rootfs(dir.path());
    let pod = Pod {
        addr: format!("unix://{}", sock.display()),
        dir,
        rootfs,
        run_dir: run_dir.clone(),
        cgroup_parent,
        agent: Some(agent),
    };

    pod.ok(
        "CreateSandbox",
        json!({"hostname": "pod", "sandbox_id": "s1"}),
    );
    // The root outside the container's bundle and the pod's storages: denied.
    let e = denied(
        pod.call(
            "CreateContainer",
            json!({"container_id": "c0", "exec_id": "c0", "OCI": pod.spec(&["true"])}),
        ),
        "CreateContainerRequest",
    );
    assert!(e.contains("neither in the container's bundle"), "{e}");
    // A host path bind-mounted in: denied.
    let mut spec = pod.spec(&["true"]);
    spec["Root"]["Path"] = json!("rootfs");
    spec["Mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/host", "source": "/", "type": "bind", "options": ["rbind"]}));
    let e = denied(
        pod.call(
            "CreateContainer",
            json!({"container_id": "c0", "exec_id": "c0", "OCI": spec}),
        ),
        "CreateContainerRequest",
    );
    assert!(e.contains("bind mount /host"), "{e}");

    // The root in the bundle (as a guest pull or a block storage puts it): allowed.
    let cid = "c1";
    pod::busybox_rootfs(&run_dir.join(cid));
    let mut spec = pod.spec(&["sh", "-c", "echo secret-output; sleep 30"]);
    spec["Root"]["Path"] = json!(run_dir.join(cid).join("rootfs").display().to_string());
    pod.create(cid, spec);
    pod.ok("StartContainer", json!({"container_id": cid}));
    denied(
        pod.call(
            "ExecProcess",
            json!({"container_id": cid, "exec_id": "e1",
                   "process": {"Args": ["cat", "/etc/passwd"], "Cwd": "/", "User": {"UID": 0}}}),
        ),
        "ExecProcessRequest",
    );
    pod.ok("StatsContainer", json!({"container_id": cid}));
    pod.ok(
        "SignalProcess",
        json!({"container_id": cid, "exec_id": cid, "signal": 9}),
    );
    assert_eq!(pod.wait(cid, cid), 137);
    // The output was read (the stream ends as usual) but withheld.
    assert_eq!(pod.read_all(cid, cid, false), "");
    pod.ok("RemoveContainer", json!({"container_id": cid}));
    let mut pod = pod;
    pod.ok("DestroySandbox", json!({}));
    assert!(pod.wait_agent_exit().success());
}

#[test]
fn set_policy_is_checked_and_replaces_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(
        dir.path(),
        "first.rego",
        "package agent_policy\n\
         default SetPolicyRequest := true\n\
         default GuestDetailsRequest := true\n\
         default ExecProcessRequest := false\n",
    );
    let (_a, addr) = agent(
        dir.path(),
        &[("KATA_AGENT_POLICY_FILE", first.to_str().unwrap())],
    );
    let exec =
        json!({"container_id": "c1", "exec_id": "e1", "process": {"Args": ["sh"]}}).to_string();
    denied(call(&addr, "ExecProcess", &exec), "ExecProcessRequest");
    denied(call(&addr, "ListRoutes", "{}"), "ListRoutesRequest");

    // A policy that does not load is refused; the old one stays.
    let e = call(
        &addr,
        "SetPolicy",
        &json!({"policy": "package agent_policy\nx := {"}).to_string(),
    )
    .unwrap_err();
    assert!(e.contains("INVALID_ARGUMENT"), "{e}");
    call(&addr, "GetGuestDetails", "{}").unwrap();

    // Allowed: the new policy is in force at once, and it denies further SetPolicy.
    let next = "package agent_policy\n\
                default SetPolicyRequest := false\n\
                default ExecProcessRequest := true\n\
                default GuestDetailsRequest := false\n";
    call(&addr, "SetPolicy", &json!({"policy": next}).to_string()).unwrap();
    let e = call(&addr, "ExecProcess", &exec).unwrap_err();
    assert!(
        !e.contains("PERMISSION_DENIED"),
        "now allowed by the policy: {e}"
    );
    denied(call(&addr, "GetGuestDetails", "{}"), "GuestDetailsRequest");
    denied(
        call(
            &addr,
            "SetPolicy",
            &json!({"policy": "package agent_policy\ndefault SetPolicyRequest := true"})
                .to_string(),
        ),
        "SetPolicyRequest",
    );
}

#[test]
fn stateful_policy_on_the_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    // GetGuestDetails twice, then never again: the count lives in data.pstate.
    let p = write(
        dir.path(),
        "count.rego",
        r#"package agent_policy

default GuestDetailsRequest := false
GuestDetailsRequest := {"allowed": true, "ops": [{"op": "add", "path": "/pstate/n", "value": n + 1}]} if {
    n := object.get(data.pstate, "n", 0)
    print("GuestDetailsRequest: seen", n)
    n < 2
}
"#,
    );
    let (_a, addr) = agent(
        dir.path(),
        &[("KATA_AGENT_POLICY_FILE", p.to_str().unwrap())],
    );
    call(&addr, "GetGuestDetails", "{}").unwrap();
    call(&addr, "GetGuestDetails", "{}").unwrap();
    let e = denied(call(&addr, "GetGuestDetails", "{}"), "GuestDetailsRequest");
    assert!(e.contains("seen 2"), "{e}");
}

#[test]
fn broken_policy_file_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(
        dir.path(),
        "broken.rego",
        "package agent_policy\n\nExecProcessRequest if {\n",
    );
    for file in [broken, dir.path().join("missing.rego")] {
        let sock = dir.path().join("agent.sock");
        let out = Command::new(AGENT)
            .env(
                "KATA_AGENT_SERVER_ADDR",
                format!("unix://{}", sock.display()),
            )
            .env("COCOON_RUN_DIR", dir.path().join("run"))
            .env("KATA_AGENT_POLICY_FILE", &file)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{all}");
        assert!(!all.contains("listening on"), "{all}");
        assert!(!all.contains("serving requests"), "{all}");
        assert!(all.contains("loading the agent policy"), "{all}");
        assert!(
            all.contains(file.file_name().unwrap().to_str().unwrap()),
            "{all}"
        );
    }
}
