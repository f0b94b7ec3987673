use std::path::Path;

use cocoon_protocols::agent::{
    CopyFileRequest, CreateContainerRequest, CreateSandboxRequest, ExecProcessRequest,
    ReadStreamRequest, SetPolicyRequest, StartContainerRequest,
};
use serde_json::json;

use super::*;

const RUN: &str = "/run/kata-containers";

fn confidential() -> Policy {
    Policy::confidential_default(Path::new(RUN)).unwrap()
}

/// The table: every method of the service maps to its request message's name, which
/// is the rule; the proto's descriptor agrees, method by method.
#[test]
fn every_method_maps_to_its_rule() {
    let file = cocoon_protocols::agent::file_descriptor();
    let service = file
        .proto()
        .service
        .iter()
        .find(|s| s.name() == "AgentService")
        .unwrap();
    let from_proto: Vec<(String, String)> = service
        .method
        .iter()
        .map(|m| {
            let input = m.input_type().rsplit('.').next().unwrap().to_string();
            (m.name().to_string(), input)
        })
        .collect();
    let table: Vec<(String, String)> = METHODS
        .iter()
        .map(|(m, r)| (m.to_string(), r.to_string()))
        .collect();
    assert_eq!(table, from_proto);
    assert_eq!(METHODS.len(), 42);
    assert_eq!(rule_names().len(), 41, "ReadStdout/ReadStderr share a rule");
    for (method, rule) in METHODS {
        let msg = file.message_by_package_relative_name(rule).unwrap();
        assert_eq!(msg.name(), *rule, "{method}");
    }
    // rule_name() is what the handlers use.
    assert_eq!(
        input::rule_name::<CreateContainerRequest>(),
        "CreateContainerRequest"
    );
    assert_eq!(input::rule_name::<ReadStreamRequest>(), "ReadStreamRequest");
    assert_eq!(
        input::rule_name::<cocoon_protocols::agent::GuestDetailsRequest>(),
        "GuestDetailsRequest"
    );

    // Each rule is the one queried: a policy allowing only that rule allows only it.
    for (method, rule) in METHODS {
        let p = Policy::from_rego(
            "one",
            &format!("package agent_policy\n\ndefault {rule} := true\n"),
        )
        .unwrap();
        for other in rule_names() {
            let d = p.evaluate(other, json!({}));
            if other == *rule {
                assert!(d.unwrap().allowed, "{method} -> {rule}");
            } else {
                // Undefined rule: a denial, never an allow.
                let e = d.unwrap_err();
                assert_eq!(e.rule, other);
            }
        }
    }
    // Allow-all defines them all.
    let all = Policy::allow_all().unwrap();
    for rule in rule_names() {
        assert!(all.evaluate(rule, json!({})).unwrap().allowed, "{rule}");
    }
}

#[test]
fn denial_message_carries_the_prints() {
    let p = Policy::from_rego(
        "t",
        r#"package agent_policy
default ExecProcessRequest := false
ExecProcessRequest if {
    print("exec of", input.container_id, "refused")
    false
}
"#,
    )
    .unwrap();
    let req = ExecProcessRequest {
        container_id: "c1".into(),
        ..Default::default()
    };
    let e = p.check(&req).unwrap_err();
    // regorus prefixes each print with its place, as upstream's messages show.
    assert_eq!(
        e.to_string(),
        "ExecProcessRequest is blocked by policy: t:4: exec of c1 refused"
    );
    let status: ttrpc::Error = e.into();
    match status {
        ttrpc::Error::RpcStatus(s) => {
            assert_eq!(s.code(), ttrpc::Code::PERMISSION_DENIED);
            assert!(s.message().contains("exec of c1 refused"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_and_odd_results_deny() {
    let p = Policy::from_rego(
        "t",
        r#"package agent_policy
StartContainerRequest := 3
StatsContainerRequest := {"allowed": "yes"}
PauseContainerRequest := {"allowed": true, "ops": [{"op": "remove", "path": "/pstate/none"}]}
ResumeContainerRequest := {"allowed": true, "ops": "no"}
WaitProcessRequest if input.x > 1
"#,
    )
    .unwrap();
    for rule in [
        "StartContainerRequest",
        "StatsContainerRequest",
        "PauseContainerRequest",
        "ResumeContainerRequest",
        "WaitProcessRequest",
        "ExecProcessRequest",
    ] {
        let e = p.check_input(rule, json!({})).unwrap_err();
        assert_eq!(e.rule, rule);
        assert!(!e.reason.is_empty(), "{rule}");
    }
}

#[test]
fn stateful_policy_with_ops() {
    // Upstream's pattern: remember the first container's id, allow nothing else.
    let p = Policy::from_rego(
        "state",
        r#"package agent_policy
import future.keywords.if

default CreateContainerRequest := false
CreateContainerRequest := {"allowed": true, "ops": [op]} if {
    not data.pstate.first
    op := {"op": "add", "path": "/pstate/first", "value": input.container_id}
}
CreateContainerRequest if data.pstate.first == input.container_id

default RemoveContainerRequest := false
RemoveContainerRequest := {"allowed": true, "ops": [op]} if {
    data.pstate.first == input.container_id
    op := {"op": "remove", "path": "/pstate/first"}
}
"#,
    )
    .unwrap();
    let create = |id: &str| {
        p.check(&CreateContainerRequest {
            container_id: id.into(),
            ..Default::default()
        })
    };
    let remove = |id: &str| {
        p.check(&cocoon_protocols::agent::RemoveContainerRequest {
            container_id: id.into(),
            ..Default::default()
        })
    };
    create("a").unwrap();
    create("a").unwrap();
    assert!(create("b").is_err());
    assert!(remove("b").is_err());
    remove("a").unwrap();
    create("b").unwrap();
    assert!(create("a").is_err());
}

#[test]
fn failed_ops_change_nothing() {
    let p = Policy::from_rego(
        "t",
        r#"package agent_policy
CreateSandboxRequest := {"allowed": true, "ops": [
    {"op": "add", "path": "/pstate/n", "value": 1},
    {"op": "remove", "path": "/pstate/missing"}
]}
StartContainerRequest if not data.pstate.n
"#,
    )
    .unwrap();
    assert!(p.check(&CreateSandboxRequest::default()).is_err());
    // The first op was not kept either.
    p.check(&StartContainerRequest::default()).unwrap();
}

#[test]
fn broken_policies_do_not_load() {
    for (what, text) in [
        ("syntax", "package agent_policy\n\nCreateContainerRequest if {{ \n"),
        ("package", "package other\n\ndefault CreateContainerRequest := true\n"),
        ("empty", ""),
        (
            "conflict",
            "package agent_policy\nAllowRequestsFailingPolicy := true\nAllowRequestsFailingPolicy := false\n",
        ),
    ] {
        assert!(Policy::from_rego(what, text).is_err(), "{what}");
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.rego");
    assert!(matches!(
        Policy::from_file(&missing),
        Err(PolicyError::Read { .. })
    ));
    let f = dir.path().join("p.rego");
    std::fs::write(&f, "package agent_policy\ndefault X := \n").unwrap();
    let e = Policy::startup(Some(&f), false, Path::new(RUN)).unwrap_err();
    assert!(e.to_string().contains("p.rego"), "{e}");
}

#[test]
fn set_policy_is_checked_and_atomic() {
    let p = Policy::from_rego(
        "first",
        "package agent_policy\ndefault SetPolicyRequest := false\ndefault StartContainerRequest := true\n",
    )
    .unwrap();
    let next = "package agent_policy\ndefault SetPolicyRequest := true\ndefault StartContainerRequest := false\n";
    let e = p
        .set_policy(&SetPolicyRequest {
            policy: next.into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, SetPolicyError::Denied(_)), "{e}");
    assert!(e
        .to_string()
        .starts_with("SetPolicyRequest is blocked by policy"));
    p.check(&StartContainerRequest::default()).unwrap();

    let p = Policy::from_rego(
        "first",
        "package agent_policy\ndefault SetPolicyRequest := true\ndefault StartContainerRequest := true\n",
    )
    .unwrap();
    // A broken replacement is refused and the old policy stays.
    let e = p
        .set_policy(&SetPolicyRequest {
            policy: "package agent_policy\nx := {".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, SetPolicyError::Invalid(_)), "{e}");
    p.check(&StartContainerRequest::default()).unwrap();
    // A good one replaces it, state and all.
    p.set_policy(&SetPolicyRequest {
        policy: next.into(),
        ..Default::default()
    })
    .unwrap();
    assert!(p.check(&StartContainerRequest::default()).is_err());
    assert_eq!(p.origin(), "SetPolicy");
}

#[test]
fn allow_failures_switch_is_honoured() {
    let p = Policy::from_rego(
        "debug",
        "package agent_policy\nAllowRequestsFailingPolicy := true\ndefault ExecProcessRequest := false\n",
    )
    .unwrap();
    p.check(&ExecProcessRequest::default()).unwrap();
    p.check(&StartContainerRequest::default()).unwrap();
}

fn sandbox(storages: serde_json::Value) -> serde_json::Value {
    json!({
        "hostname": "pod", "dns": [], "storages": storages, "sandbox_pidns": false,
        "sandbox_id": "s", "guest_hook_path": "", "kernel_modules": []
    })
}

fn shm() -> serde_json::Value {
    json!([{"driver": "ephemeral", "driver_options": [], "source": "shm", "fstype": "tmpfs",
            "options": [], "mount_point": "/run/kata-containers/sandbox/shm", "fs_group": null}])
}

fn container(cid: &str, root: &str, mounts: serde_json::Value) -> serde_json::Value {
    json!({
        "container_id": cid, "exec_id": cid, "storages": [], "devices": [],
        "sandbox_pidns": false, "shared_mounts": [], "string_user": null,
        "OCI": {
            "Version": "1.1.0", "Hooks": null,
            "Root": {"Path": root, "Readonly": false},
            "Mounts": mounts,
            "Linux": {"Namespaces": [{"Type": "ipc", "Path": ""}, {"Type": "mount", "Path": ""}]}
        }
    })
}

fn k8s_mounts(cid: &str) -> serde_json::Value {
    json!([
        {"destination": "/proc", "source": "proc", "type_": "proc", "options": ["nosuid"]},
        {"destination": "/dev", "source": "tmpfs", "type_": "tmpfs", "options": []},
        {"destination": "/etc/hosts", "type_": "bind", "options": ["rbind", "rprivate", "rw"],
         "source": format!("/run/kata-containers/shared/containers/{cid}-e9bb691ee0df3258-hosts")},
        {"destination": "/dev/shm", "type_": "bind", "options": ["rbind"],
         "source": "/run/kata-containers/sandbox/shm"}
    ])
}

#[test]
fn confidential_default_denies_reading_and_steering() {
    let p = confidential();
    for rule in [
        "ExecProcessRequest",
        "ReadStreamRequest",
        "WriteStreamRequest",
        "SetPolicyRequest",
        "GetDiagnosticDataRequest",
        "AddSwapRequest",
        "SetIPTablesRequest",
        "UpdateEphemeralMountsRequest",
    ] {
        assert!(p.check_input(rule, json!({})).is_err(), "{rule}");
    }
    let e = p
        .check(&ExecProcessRequest {
            container_id: "c".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("ExecProcessRequest is blocked by policy: ")
            && e.to_string()
                .contains("ExecProcessRequest: denied in a confidential guest"),
        "{e}"
    );
    for rule in [
        "GuestDetailsRequest",
        "DestroySandboxRequest",
        "StartContainerRequest",
        "RemoveContainerRequest",
        "WaitProcessRequest",
        "SignalProcessRequest",
        "UpdateInterfaceRequest",
        "UpdateRoutesRequest",
        "GetOOMEventRequest",
    ] {
        p.check_input(rule, json!({}))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Every rule is defined.
    for rule in rule_names() {
        let d = p.evaluate(rule, json!({}));
        assert!(
            d.is_ok() || !d.unwrap_err().reason.contains("undefined"),
            "{rule}"
        );
    }
}

#[test]
fn confidential_default_confines_the_lifecycle() {
    let p = confidential();
    let cid = "81e5f43bc8599c5661e66f959ac28df5";
    // A pod as the Kata runtime makes it.
    p.check_input("CreateSandboxRequest", sandbox(shm()))
        .unwrap();
    let bundle_root = format!("{RUN}/{cid}/rootfs");
    p.check_input(
        "CreateContainerRequest",
        container(cid, &bundle_root, k8s_mounts(cid)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    p.check_input(
        "CreateContainerRequest",
        container(cid, "rootfs", k8s_mounts(cid)),
    )
    .unwrap();

    let deny = |req: serde_json::Value, why: &str| {
        let e = p.check_input("CreateContainerRequest", req).unwrap_err();
        assert!(e.reason.contains(why), "{why}: {e}");
    };
    deny(container(cid, "/", k8s_mounts(cid)), "root /");
    deny(
        container(cid, &format!("{RUN}/other/rootfs"), json!([])),
        "root",
    );
    deny(
        container(cid, &format!("{RUN}/{cid}/../x"), json!([])),
        "root",
    );
    deny(container(cid, "../../etc", json!([])), "root");
    let mut r = container(cid, &bundle_root, json!([]));
    r["OCI"]["Linux"]["Namespaces"][0]["Path"] = json!("/proc/1/ns/ipc");
    deny(r, "namespace ipc");
    let mut r = container(cid, &bundle_root, json!([]));
    r["OCI"]["Hooks"] = json!({"Prestart": [{"Path": "/bin/sh"}], "Poststart": []});
    deny(r, "hooks");
    deny(
        container(
            cid,
            &bundle_root,
            json!([{"destination": "/host", "source": "/", "type_": "bind", "options": ["rbind"]}]),
        ),
        "bind mount /host",
    );
    deny(
        container(
            cid,
            &bundle_root,
            json!([{"destination": "/x", "source": "/etc", "type_": "none", "options": ["bind"]}]),
        ),
        "bind mount /x",
    );
    deny(
        container(
            cid,
            &bundle_root,
            json!([{"destination": "/d", "source": "/dev/vda", "type_": "ext4", "options": []}]),
        ),
        "type ext4",
    );
    let escape = format!("{RUN}/shared/containers/../../../etc");
    deny(
        container(
            cid,
            &bundle_root,
            json!([{"destination": "/x", "source": escape, "type_": "bind", "options": []}]),
        ),
        "bind mount /x",
    );
    // A storage the request sets up may hold the root and bind sources; virtio-fs may not.
    let mut r = container(
        cid,
        "/run/kata-containers/sandbox/storage/abc/rootfs",
        json!([{"destination": "/data", "source": "/run/kata-containers/sandbox/storage/abc/data",
                "type_": "bind", "options": ["rbind"]}]),
    );
    r["storages"] = json!([{"driver": "virtio-blk", "fstype": "ext4", "source": "0000:00:02.0",
                            "mount_point": "/run/kata-containers/sandbox/storage/abc",
                            "options": [], "driver_options": [], "fs_group": null}]);
    p.check_input("CreateContainerRequest", r.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    r["storages"][0]["driver"] = json!("virtio-fs");
    deny(r.clone(), "virtio-fs");
    r["storages"][0]["driver"] = json!("local");
    r["storages"][0]["fstype"] = json!("virtiofs");
    deny(r, "virtio-fs");

    // The sandbox: no hooks, no modules, no virtio-fs.
    let mut s = sandbox(shm());
    s["guest_hook_path"] = json!("/attacker");
    assert!(p.check_input("CreateSandboxRequest", s).is_err());
    let mut s = sandbox(shm());
    s["kernel_modules"] = json!([{"name": "evil.ko", "parameters": []}]);
    assert!(p.check_input("CreateSandboxRequest", s).is_err());
    let mut s = sandbox(shm());
    s["storages"][0]["driver"] = json!("virtio-fs");
    assert!(p.check_input("CreateSandboxRequest", s).is_err());
}

#[test]
fn confidential_default_sandbox_storages_come_from_create_sandbox() {
    let p = confidential();
    let cid = "c1";
    let root = format!("{RUN}/{cid}/rootfs");
    // Before CreateSandbox recorded it, the shm storage is not the pod's.
    assert!(p
        .check_input(
            "CreateContainerRequest",
            container(cid, &root, k8s_mounts(cid))
        )
        .is_err());
    p.check_input("CreateSandboxRequest", sandbox(shm()))
        .unwrap();
    p.check_input(
        "CreateContainerRequest",
        container(cid, &root, k8s_mounts(cid)),
    )
    .unwrap();
}

#[test]
fn confidential_default_copy_file() {
    let p = confidential();
    let shared = format!("{RUN}/shared/containers");
    let copy = |path: &str, mode: u32, data: &[u8]| {
        p.check_copy_file(&CopyFileRequest {
            path: path.into(),
            file_mode: mode,
            data: data.to_vec(),
            ..Default::default()
        })
    };
    copy(
        &format!("{shared}/abc-0123456789abcdef-resolv.conf"),
        libc::S_IFREG | 0o644,
        b"",
    )
    .unwrap();
    copy(&format!("{shared}/abc/rootfs"), libc::S_IFDIR | 0o755, b"").unwrap();
    copy(
        &format!("{shared}/abc-x-secret/key"),
        libc::S_IFLNK,
        b"..data/key",
    )
    .unwrap();
    for (path, mode, data) in [
        ("/etc/ssl/cert.pem".to_string(), libc::S_IFREG, &b""[..]),
        ("etc/ssl/cert.pem".to_string(), libc::S_IFREG, b""),
        (format!("{shared}/a/../../../../etc/x"), libc::S_IFREG, b""),
        (format!("{shared}/a/.."), libc::S_IFDIR, b""),
        (shared.clone(), libc::S_IFDIR, b""),
        (format!("{shared}/sock"), libc::S_IFSOCK, b""),
        (format!("{shared}/l"), libc::S_IFLNK, b"/etc"),
        (format!("{shared}/l"), libc::S_IFLNK, b"../../x"),
        (format!("{RUN}/abc/rootfs/bin/sh"), libc::S_IFREG, b""),
    ] {
        let e = copy(&path, mode, data).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("CopyFileRequest is blocked by policy: "),
            "{e}"
        );
    }
}

#[test]
fn startup_choice() {
    let run = Path::new(RUN);
    let dev = Policy::startup(None, false, run).unwrap();
    dev.check(&ExecProcessRequest::default()).unwrap();
    let cc = Policy::startup(None, true, run).unwrap();
    assert!(cc.check(&ExecProcessRequest::default()).is_err());
    assert_eq!(cc.origin(), "built-in confidential default");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.rego");
    std::fs::write(
        &f,
        "package agent_policy\ndefault ExecProcessRequest := true\n",
    )
    .unwrap();
    let file = Policy::startup(Some(&f), true, run).unwrap();
    file.check(&ExecProcessRequest::default()).unwrap();
}

#[test]
fn policy_file_keys() {
    use crate::config::AgentConfig;
    let no_env = |_: &str| None;
    let c = AgentConfig::load(None, "quiet agent.policy_file=/etc/p.rego", no_env).unwrap();
    assert_eq!(
        c.config.policy_file.as_deref(),
        Some(Path::new("/etc/p.rego"))
    );
    assert!(AgentConfig::load(None, "agent.policy_file", no_env).is_err());
    let env = |k: &str| (k == "KATA_AGENT_POLICY_FILE").then(|| "/e.rego".to_string());
    let c = AgentConfig::load(None, "agent.policy_file=/etc/p.rego", env).unwrap();
    assert_eq!(c.config.policy_file.as_deref(), Some(Path::new("/e.rego")));
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("agent.toml");
    std::fs::write(&toml, "policy_file = \"/t.rego\"\n").unwrap();
    let c = AgentConfig::load(Some(&toml), "", no_env).unwrap();
    assert_eq!(c.config.policy_file.as_deref(), Some(Path::new("/t.rego")));
}

#[test]
fn confidential_is_any_sign_of_a_tee() {
    use cocoon_attester::{AttesterChoice, Paths, Probe, Verdict};
    let dir = tempfile::tempdir().unwrap();
    let none = Probe::run(AttesterChoice::default(), "test", Paths::under(dir.path()));
    assert_eq!(none.verdict, Verdict::NoTee);
    assert!(!is_confidential(&none, false));
    assert!(is_confidential(&none, true));
    let sample = Probe::run(AttesterChoice::Sample, "test", Paths::under(dir.path()));
    assert!(!is_confidential(&sample, false));
    for verdict in [
        Verdict::Hardware(cocoon_attester::Tee::Snp),
        Verdict::Sample {
            hardware: Some(cocoon_attester::Tee::Tdx),
        },
        Verdict::Conflict,
        Verdict::RequestedAbsent(cocoon_attester::Tee::Snp),
    ] {
        let mut p = none.clone();
        p.verdict = verdict;
        assert!(is_confidential(&p, false), "{verdict:?}");
    }
}

#[test]
fn genpolicy_data_is_hoisted_with_the_same_value() {
    let text = "package agent_policy\n\ndefault GuestDetailsRequest := false\nGuestDetailsRequest if policy_data.allow[_] == \"details\"\n\npolicy_data := {\"allow\": [\"details\"], \"n\": 1.5, \"x\": null}\n";
    let (rewritten, data) = hoist_policy_data(text);
    assert!(
        rewritten.ends_with("\npolicy_data := data.cocoon_policy_data\n"),
        "{rewritten}"
    );
    assert_eq!(
        data.unwrap(),
        json!({"allow": ["details"], "n": 1.5, "x": null})
    );
    let p = Policy::from_rego("g", text).unwrap();
    assert!(
        p.evaluate("GuestDetailsRequest", json!({}))
            .unwrap()
            .allowed
    );
    // Not plain JSON (a Rego expression): left alone, and still works.
    let text = "package agent_policy\n\nGuestDetailsRequest if policy_data.n == 2\n\npolicy_data := {\"n\": 1 + 1}\n";
    let (rewritten, data) = hoist_policy_data(text);
    assert!(data.is_none());
    assert_eq!(rewritten, text);
    let p = Policy::from_rego("g", text).unwrap();
    assert!(
        p.evaluate("GuestDetailsRequest", json!({}))
            .unwrap()
            .allowed
    );
    // State updates keep the hoisted data.
    let text = "package agent_policy\n\nCreateSandboxRequest := {\"allowed\": true, \"ops\": [{\"op\": \"add\", \"path\": \"/pstate/s\", \"value\": 1}]}\nGuestDetailsRequest if { data.pstate.s == 1; policy_data.ok }\n\npolicy_data := {\"ok\": true}";
    let p = Policy::from_rego("g", text).unwrap();
    assert!(p.check_input("GuestDetailsRequest", json!({})).is_err());
    p.check_input("CreateSandboxRequest", json!({})).unwrap();
    p.check_input("GuestDetailsRequest", json!({})).unwrap();
}
