//! The OCI `linux.seccomp` of a container and of its execs, enforced through the real
//! agent (libcontainer + libseccomp, as runc): containerd's default profile lets busybox
//! run, a denied syscall answers the configured errno, argument conditions select, a
//! KILL action kills, an exec gets the container's profile, and what cannot be enforced
//! as asked fails CreateContainer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod;

use serde_json::{json, Value};

use pod::{require_pod, Pod, CONTAINERD_CAPS};

const EDQUOT: u32 = 122;

fn default_profile() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/seccomp/default-amd64.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Allows everything but `mkdir`/`mkdirat`, which get `action` (with `errno`, and with
/// `mode_cond` as a condition on the mode argument: index 1 of mkdir, 2 of mkdirat).
fn deny_mkdir(action: &str, errno: Option<u32>, mode_cond: Option<(&str, u64, u64)>) -> Value {
    let rule = |name: &str, mode_index: u64| {
        let mut r = json!({"Names": [name], "Action": action});
        if let Some(e) = errno {
            r["errnoret"] = json!(e);
        }
        if let Some((op, value, two)) = mode_cond {
            r["Args"] = json!([{"Index": mode_index, "Value": value, "ValueTwo": two, "Op": op}]);
        }
        r
    };
    json!({
        "DefaultAction": "SCMP_ACT_ALLOW",
        "Architectures": ["SCMP_ARCH_X86_64"],
        "Syscalls": [rule("mkdir", 1), rule("mkdirat", 2)]
    })
}

fn spec_with(pod: &Pod, args: &[&str], seccomp: Value, no_new_privs: bool) -> Value {
    let mut spec = pod.spec(args);
    spec["Linux"]["Seccomp"] = seccomp;
    spec["Process"]["NoNewPrivileges"] = json!(no_new_privs);
    spec
}

/// Runs a container to its end: (exit status, stdout, stderr).
fn run_to_end(pod: &Pod, cid: &str, spec: Value) -> (i64, String, String) {
    pod.create(cid, spec);
    pod.ok("StartContainer", json!({"container_id": cid}));
    let out = pod.read_all(cid, cid, false);
    let err = pod.read_all(cid, cid, true);
    let status = pod.wait(cid, cid);
    pod.ok("RemoveContainer", json!({"container_id": cid}));
    (status, out, err)
}

const SCRIPT: &str = "mkdir /tmp/a && echo made-a; mkdir -m 700 /tmp/b && echo made-b; echo done";

#[test]
fn containerd_default_profile_runs_busybox() {
    require_pod!();
    let pod = Pod::new();
    // Kubernetes' usual case (no allowPrivilegeEscalation: false) and the other.
    for (cid, nnp) in [("dflt", false), ("dflt-nnp", true)] {
        let spec = spec_with(&pod, &["sh", "-c", SCRIPT], default_profile(), nnp);
        let (status, out, err) = run_to_end(&pod, cid, spec);
        assert_eq!(status, 0, "{out} {err}");
        assert_eq!(out, "made-a\nmade-b\ndone\n", "{err}");
    }
    // Forks (a pipe, a command substitution) go through the profile's `clone` rule, a
    // SCMP_CMP_MASKED_EQ on the namespace flags. (With libcontainer's own reading of
    // MASKED_EQ that rule's mask is 0, which libseccomp turns into "any clone": the
    // chmod test below is the one that sees the operands swapped.)
    let spec = spec_with(
        &pod,
        &["sh", "-c", "echo $(echo sub) | cat; ls /bin/sh"],
        default_profile(),
        false,
    );
    let (status, out, err) = run_to_end(&pod, "dflt-fork", spec);
    assert_eq!((status, out.as_str()), (0, "sub\n/bin/sh\n"), "{err}");
    // The profile is really there: the default denies what it does not list (EPERM),
    // here a user namespace, which the container may make without a profile.
    let mut spec = pod.spec(&["sh", "-c", "unshare -U true; echo rc=$?"]);
    spec["Process"]["NoNewPrivileges"] = json!(false);
    let (_, out, err) = run_to_end(&pod, "no-profile", spec);
    assert_eq!(out, "rc=0\n", "{err}");
    let spec = spec_with(
        &pod,
        &["sh", "-c", "unshare -U true; echo rc=$?"],
        default_profile(),
        false,
    );
    let (_, out, err) = run_to_end(&pod, "dflt-deny", spec);
    assert_eq!(out, "rc=1\n", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

#[test]
fn kubernetes_defaults_run_under_the_profile() {
    require_pod!();
    let pod = Pod::new();
    // RuntimeDefault, the default capabilities, allowPrivilegeEscalation unset (so
    // NoNewPrivileges false): the filter goes in before the capabilities are dropped.
    for (cid, nnp) in [("k8s", false), ("k8s-nnp", true)] {
        let mut spec = spec_with(
            &pod,
            &[
                "sh",
                "-c",
                "mkdir /tmp/a && echo made; unshare -U true; echo rc=$?",
            ],
            default_profile(),
            nnp,
        );
        spec["Process"]["Capabilities"] = json!({
            "Bounding": CONTAINERD_CAPS,
            "Effective": CONTAINERD_CAPS,
            "Permitted": CONTAINERD_CAPS,
            "Inheritable": [],
            "Ambient": [],
        });
        let (status, out, err) = run_to_end(&pod, cid, spec);
        assert_eq!(status, 0, "{cid}: {out} {err}");
        // The profile denies a user namespace (EPERM).
        assert_eq!(out, "made\nrc=1\n", "{cid}: {err}");
    }
}

#[test]
fn a_denied_syscall_answers_the_configured_errno() {
    require_pod!();
    let pod = Pod::new();
    for (cid, nnp) in [("errno", false), ("errno-nnp", true)] {
        let spec = spec_with(
            &pod,
            &["sh", "-c", SCRIPT],
            deny_mkdir("SCMP_ACT_ERRNO", Some(EDQUOT), None),
            nnp,
        );
        let (status, out, err) = run_to_end(&pod, cid, spec);
        assert_eq!(status, 0);
        assert_eq!(out, "done\n", "{err}");
        assert!(err.contains("Disk quota exceeded"), "{err}");
    }
    // No errnoRet: EPERM, as runc.
    let spec = spec_with(
        &pod,
        &["sh", "-c", SCRIPT],
        deny_mkdir("SCMP_ACT_ERRNO", None, None),
        false,
    );
    let (_, out, err) = run_to_end(&pod, "eperm", spec);
    assert_eq!(out, "done\n", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

/// Denies chmod/fchmodat/fchmodat2 (EDQUOT) when the mode argument meets `cond`.
fn deny_chmod_if(op: &str, value: u64, two: u64) -> Value {
    let rule = |name: &str, mode_index: u64| {
        json!({"Names": [name], "Action": "SCMP_ACT_ERRNO", "errnoret": EDQUOT,
               "Args": [{"Index": mode_index, "Value": value, "ValueTwo": two, "Op": op}]})
    };
    json!({
        "DefaultAction": "SCMP_ACT_ALLOW",
        "Syscalls": [rule("chmod", 1), rule("fchmodat", 2), rule("fchmodat2", 2)]
    })
}

#[test]
fn argument_conditions_select_the_calls() {
    require_pod!();
    let pod = Pod::new();
    let script =
        "touch /tmp/f; chmod 700 /tmp/f && echo mode-700; chmod 644 /tmp/f && echo mode-644; echo done";
    for (cid, (op, value, two), expect) in [
        ("eq", ("SCMP_CMP_EQ", 0o700, 0), "mode-644\ndone\n"),
        ("ne", ("SCMP_CMP_NE", 0o700, 0), "mode-700\ndone\n"),
        // (mode & 077) == 0
        (
            "masked",
            ("SCMP_CMP_MASKED_EQ", 0o077, 0),
            "mode-644\ndone\n",
        ),
        ("gt", ("SCMP_CMP_GT", 0o650, 0), "mode-644\ndone\n"),
        ("ge", ("SCMP_CMP_GE", 0o700, 0), "mode-644\ndone\n"),
        ("lt", ("SCMP_CMP_LT", 0o700, 0), "mode-700\ndone\n"),
        ("le", ("SCMP_CMP_LE", 0o644, 0), "mode-700\ndone\n"),
    ] {
        let spec = spec_with(
            &pod,
            &["sh", "-c", script],
            deny_chmod_if(op, value, two),
            false,
        );
        let (_, out, err) = run_to_end(&pod, cid, spec);
        assert_eq!(out, expect, "{cid}: {err}");
        assert!(err.contains("Disk quota exceeded"), "{cid}: {err}");
    }
}

#[test]
fn a_kill_action_kills_the_process() {
    require_pod!();
    let pod = Pod::new();
    for (cid, action) in [
        ("kill", "SCMP_ACT_KILL"),
        ("killp", "SCMP_ACT_KILL_PROCESS"),
    ] {
        let spec = spec_with(
            &pod,
            &["mkdir", "/tmp/x"],
            deny_mkdir(action, None, None),
            false,
        );
        let (status, _, err) = run_to_end(&pod, cid, spec);
        assert_eq!(status, 128 + 31, "{action}: killed by SIGSYS ({err})");
    }
    // TRAP delivers SIGSYS too.
    let spec = spec_with(
        &pod,
        &["mkdir", "/tmp/x"],
        deny_mkdir("SCMP_ACT_TRAP", None, None),
        false,
    );
    let (status, _, _) = run_to_end(&pod, "trap", spec);
    assert_eq!(status, 128 + 31);
}

#[test]
fn an_exec_gets_the_containers_profile() {
    require_pod!();
    let pod = Pod::new();
    let spec = spec_with(
        &pod,
        &["sleep", "1000"],
        deny_mkdir("SCMP_ACT_ERRNO", Some(EDQUOT), None),
        false,
    );
    pod.create("box", spec);
    pod.ok("StartContainer", json!({"container_id": "box"}));
    for (exec, nnp) in [("e1", false), ("e2", true)] {
        let mut process = pod.spec(&["sh", "-c", SCRIPT])["Process"].clone();
        process["NoNewPrivileges"] = json!(nnp);
        pod.ok(
            "ExecProcess",
            json!({"container_id": "box", "exec_id": exec, "process": process}),
        );
        let out = pod.read_all("box", exec, false);
        let err = pod.read_all("box", exec, true);
        assert_eq!(pod.wait("box", exec), 0);
        assert_eq!(out, "done\n", "{exec}: {err}");
        assert!(err.contains("Disk quota exceeded"), "{exec}: {err}");
    }
    pod.ok("RemoveContainer", json!({"container_id": "box"}));
}

#[test]
fn what_cannot_be_enforced_fails_create_container() {
    require_pod!();
    let pod = Pod::new();
    let cases = [
        (deny_mkdir("SCMP_ACT_NOTIFY", None, None), "SCMP_ACT_NOTIFY"),
        (deny_mkdir("SCMP_ACT_BOGUS", None, None), "SCMP_ACT_BOGUS"),
        (
            deny_mkdir("SCMP_ACT_ERRNO", None, Some(("SCMP_CMP_ALMOST", 1, 0))),
            "SCMP_CMP_ALMOST",
        ),
        (json!({"DefaultAction": ""}), "DefaultAction"),
        (
            json!({"DefaultAction": "SCMP_ACT_ALLOW", "Architectures": ["SCMP_ARCH_PDP11"]}),
            "SCMP_ARCH_PDP11",
        ),
        (
            json!({"DefaultAction": "SCMP_ACT_ALLOW", "Flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}),
            "SECCOMP_FILTER_FLAG_BOGUS",
        ),
    ];
    for (i, (seccomp, needle)) in cases.into_iter().enumerate() {
        let spec = spec_with(&pod, &["true"], seccomp, false);
        let cid = format!("bad{i}");
        let err = pod
            .call(
                "CreateContainer",
                json!({"container_id": cid, "exec_id": cid, "OCI": spec}),
            )
            .unwrap_err();
        assert!(err.contains("INVALID_ARGUMENT"), "{needle}: {err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
