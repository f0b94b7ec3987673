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
    // Allow-all defines them all: the native one answers as its Rego does.
    let all = Policy::allow_all().unwrap();
    let rego = Policy::from_rego("allow-all.rego", &allow_all_rego()).unwrap();
    for rule in rule_names() {
        assert!(all.evaluate(rule, json!({})).unwrap().allowed, "{rule}");
        assert!(rego.evaluate(rule, json!({})).unwrap().allowed, "{rule}");
    }
    for p in [&all, &rego] {
        assert!(p.evaluate("NoSuchRequest", json!({})).is_err());
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

// The compiled copy (RVM, prints dropped) against the interpreter.

impl Policy {
    /// The compiled copy's own verdict on `input` (state untouched): `None` without a
    /// copy or an entry point for `rule`.
    fn compiled_verdict(
        &self,
        rule: &str,
        input: Json,
    ) -> Option<Result<(bool, Option<json_patch::Patch>), String>> {
        let mut loaded = self.lock();
        let fast = loaded.fast.as_mut()?;
        let value = fast.eval(&format!("{PACKAGE}.{rule}"), regorus::Value::from(input))?;
        Some(value.and_then(|v| verdict(rule, &v)))
    }

    /// The interpreter's own verdict on `input` (state untouched).
    fn interpreted_verdict(
        &self,
        rule: &str,
        input: Json,
    ) -> Result<(bool, Option<json_patch::Patch>), String> {
        let mut loaded = self.lock();
        loaded.engine.set_input(regorus::Value::from(input));
        let (value, _) = loaded.run(rule, false);
        value.and_then(|v| verdict(rule, &v))
    }

    /// Both verdicts agree (allowed and ops; both failing counts as agreeing, as both
    /// deny); returns the interpreter's.
    fn assert_agree(&self, rule: &str, input: &Json, what: &str) -> bool {
        let interpreted = self.interpreted_verdict(rule, input.clone());
        let compiled = self
            .compiled_verdict(rule, input.clone())
            .unwrap_or_else(|| panic!("{what}: no compiled copy for {rule}"));
        match (&interpreted, &compiled) {
            (Ok(i), Ok(c)) => assert_eq!(i, c, "{what}"),
            (Err(_), Err(_)) => {}
            // An undefined rule is an error to `verdict`; the compiled copy must not
            // allow what the interpreter cannot evaluate.
            (Err(e), Ok((allowed, _))) => assert!(!allowed, "{what}: interpreter: {e}"),
            (Ok((allowed, _)), Err(e)) => assert!(!allowed, "{what}: compiled: {e}"),
        }
        matches!(interpreted, Ok((true, _)))
    }
}

#[path = "../../tests/support/skip.rs"]
mod skip;

fn read_fixture(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[path = "../../tests/support/genpolicy.rs"]
mod genpolicy_support;

/// genpolicy's output for the test pod (one copy with tests/genpolicy.rs).
fn genpolicy_text(dir: &Path) -> String {
    genpolicy_support::generated_policy(dir).unwrap()
}

/// A recorded request as the agent gives it to the policy.
fn as_our_input(kind: &str, req: &Json) -> Json {
    use cocoon_protocols::agent::*;
    macro_rules! kinds {
        ($($t:ident),*) => {
            match kind {
                $(stringify!($t) => {
                    let m: $t = serde_json::from_value(req.clone()).unwrap();
                    input::request(kind, &m).unwrap()
                })*
                _ => req.clone(),
            }
        };
    }
    kinds!(
        CreateContainerRequest,
        CreateSandboxRequest,
        ExecProcessRequest,
        RemoveContainerRequest,
        UpdateRoutesRequest,
        UpdateInterfaceRequest,
        AddARPNeighborsRequest
    )
}

#[test]
fn genpolicy_gets_a_compiled_copy_without_its_prints() {
    let Some(dir) = skip::genpolicy_dir() else {
        return;
    };
    let text = genpolicy_text(&dir);
    let p = Policy::from_rego("genpolicy", &text).unwrap();
    assert!(p.is_compiled());
    // Every print of the rules is dropped (none is left for the RVM to refuse).
    let mut engine = Engine::new();
    configure(&mut engine).unwrap();
    let (hoisted, _) = hoist_policy_data(&text);
    engine.add_policy("g".into(), hoisted.to_string()).unwrap();
    let modules = engine.get_modules().clone();
    let constants = compiled::constant_rules(&modules, &[HOISTED_KEY]);
    assert!(constants.contains("policy_data"), "{constants:?}");
    let stripped = compiled::without_prints(&modules, &[&hoisted], &constants).unwrap();
    let rules = std::fs::read_to_string(dir.join("rules.rego")).unwrap();
    assert_eq!(stripped.prints, rules.matches("print(").count());
    assert!(!stripped.texts[0].contains("print("));
    // Same lines: a print is one line in genpolicy's rules.
    assert_eq!(stripped.texts[0].lines().count(), hoisted.lines().count());
}

/// Every recorded case of every fixture file, in order (the state they build): the
/// compiled copy gives the interpreter's verdict and ops, and the agent's path (the
/// fast path for allows) gives the recorded verdict.
#[test]
fn compiled_copy_agrees_with_the_interpreter_on_every_recorded_case() {
    let Some(dir) = skip::genpolicy_dir() else {
        return;
    };
    let text = genpolicy_text(&dir);
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("testcases")).unwrap() {
        let path = entry.unwrap().path();
        let case = path.file_name().unwrap().to_string_lossy().to_string();
        let reference = Policy::from_rego("genpolicy", &text).unwrap();
        let agent = Policy::from_rego("genpolicy", &text).unwrap();
        assert!(agent.is_compiled());
        for c in read_fixture(&path.join("testcases.json"))
            .as_array()
            .unwrap()
        {
            let kind = c["kind"].as_str().unwrap();
            let what = format!("{case}: {} ({kind})", c["description"]);
            let input = as_our_input(kind, &c["request"]);
            let interpreted = reference.assert_agree(kind, &input, &what);
            // The agent's path and the interpreter alone (with its ops applied).
            let ours = agent.check_input(kind, input.clone());
            let theirs = reference.evaluate(kind, input).map(|d| d.allowed);
            assert_eq!(ours.is_ok(), interpreted, "{what}: {ours:?}");
            assert_eq!(theirs.unwrap_or(false), interpreted, "{what}");
            // The pod in our policy data is state-execprocess's (the other
            // createcontainer file's verdicts need its own pod's data).
            if case != "createcontainer-env_vars" {
                assert_eq!(interpreted, c["allowed"].as_bool().unwrap(), "{what}");
            }
            // A denial through the fast path still explains itself with the prints.
            if let Err(d) = ours {
                assert!(!d.reason.is_empty(), "{what}");
            }
            checked += 1;
        }
        // Both kept the same state.
        assert_eq!(
            serde_json::to_value(agent.lock().engine.get_data()).unwrap(),
            serde_json::to_value(reference.lock().engine.get_data()).unwrap(),
            "{case}"
        );
    }
    assert!(checked >= 60, "{checked}");
}

/// Every value of `v` changed one at a time (strings, numbers, bools; arrays shortened
/// and grown), each as a whole new input.
fn mutations(v: &Json) -> Vec<Json> {
    fn walk(v: &Json, path: &mut Vec<Json>, out: &mut Vec<Vec<Json>>) {
        match v {
            Json::Object(m) => {
                for (k, x) in m {
                    path.push(json!(k));
                    walk(x, path, out);
                    path.pop();
                }
            }
            Json::Array(a) => {
                out.push(path.clone());
                for (i, x) in a.iter().enumerate() {
                    path.push(json!(i));
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    fn at<'a>(v: &'a mut Json, path: &[Json]) -> &'a mut Json {
        path.iter().fold(v, |v, k| match k {
            Json::String(k) => &mut v[k.as_str()],
            k => &mut v[k.as_u64().unwrap() as usize],
        })
    }
    let mut paths = Vec::new();
    walk(v, &mut Vec::new(), &mut paths);
    let mut out = Vec::new();
    for path in paths {
        let mut changed = v.clone();
        let x = at(&mut changed, &path);
        match x {
            Json::String(s) if s.is_empty() => *s = "x".into(),
            Json::String(s) => s.push('x'),
            Json::Number(n) => *x = json!(n.as_i64().unwrap_or(0) + 1),
            Json::Bool(b) => *b = !*b,
            Json::Null => *x = json!("x"),
            Json::Array(a) if a.is_empty() => a.push(json!("x")),
            Json::Array(a) => {
                let mut grown = v.clone();
                let first = a[0].clone();
                a.pop();
                if let Json::Array(g) = at(&mut grown, &path) {
                    g.push(first);
                }
                out.push(grown);
            }
            Json::Object(_) => continue,
        }
        out.push(changed);
    }
    out
}

/// The recorded CreateContainer, every field changed one at a time: the compiled copy
/// and the interpreter agree on each (hundreds of denials and a few allows).
#[test]
fn compiled_copy_agrees_with_the_interpreter_on_changed_requests() {
    let Some(dir) = skip::genpolicy_dir() else {
        return;
    };
    let p = Policy::from_rego("genpolicy", &genpolicy_text(&dir)).unwrap();
    let cases = read_fixture(&dir.join("testcases/state-execprocess/testcases.json"));
    let kind = "CreateContainerRequest";
    let base = as_our_input(kind, &cases[0]["request"]);
    assert!(p.assert_agree(kind, &base, "recorded"));
    let all = mutations(&base);
    let (mut allowed, mut denied) = (0, 0);
    for (i, input) in all.iter().enumerate() {
        if p.assert_agree(kind, input, &format!("change {i}")) {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    eprintln!("{} changes, {allowed} allowed, {denied} denied", all.len());
    assert!(
        denied > 100 && allowed > 10,
        "{allowed} allowed, {denied} denied"
    );
}

#[test]
fn prints_that_could_fail_keep_the_interpreter_alone() {
    let ok = "package agent_policy\n\nCreateContainerRequest if {\n    x := input.a\n    print(\"x =\", x, input.b[x], 1, null)\n    x == 1\n}\n";
    let p = Policy::from_rego("p", ok).unwrap();
    assert!(p.is_compiled());
    p.check_input("CreateContainerRequest", json!({"a": 1}))
        .unwrap();
    let e = p
        .check_input("CreateContainerRequest", json!({"a": 2}))
        .unwrap_err();
    assert!(e.reason.contains("x = 2"), "{e}");
    for (text, why) in [
        // A call of the policy's own function (also one shadowing a builtin), a rule
        // that is not a constant, `data`: each could fail.
        (
            "CreateContainerRequest if {\n    print(f(1))\n}\nf(x) := y if y := x\n",
            "call",
        ),
        (
            "CreateContainerRequest if {\n    print(count(f(1)))\n}\nf(x) := x\n",
            "nested call",
        ),
        (
            "CreateContainerRequest if {\n    print(count(input.a))\n}\ncount(x) := 1\n",
            "shadowed",
        ),
        (
            "CreateContainerRequest if {\n    print(r)\n}\nr := input.x if input.y\n",
            "rule",
        ),
        (
            "CreateContainerRequest if {\n    print(data.agent_policy)\n}\n",
            "data",
        ),
        // Inside an expression, negated, or shadowed: not a statement to drop.
        (
            "CreateContainerRequest if {\n    x := [print(1)]\n}\n",
            "expression",
        ),
        ("CreateContainerRequest if {\n    not print(1)\n}\n", "not"),
        (
            "CreateContainerRequest if {\n    print(1)\n}\nprint(x) := x\n",
            "own print",
        ),
    ] {
        let p = Policy::from_rego("p", &format!("package agent_policy\n\n{text}")).unwrap();
        assert!(!p.is_compiled(), "{why}");
    }
    // Builtins on harmless arguments are harmless (an error is undefined).
    let text = "package agent_policy\n\nCreateContainerRequest if {\n    print(count(input.a), array.concat([1], input.b), concat(\",\", input.c))\n    input.ok\n}\n";
    let p = Policy::from_rego("p", text).unwrap();
    assert!(p.is_compiled());
    p.check_input("CreateContainerRequest", json!({"a": 1, "ok": true}))
        .unwrap();
    let e = p
        .check_input("CreateContainerRequest", json!({"a": [1, 2], "ok": false}))
        .unwrap_err();
    assert!(e.reason.contains("2 <undefined> <undefined>"), "{e}");
    // A constant rule may be printed.
    let text = "package agent_policy\n\nCreateContainerRequest if {\n    print(k.a, k.b[0])\n}\nk := {\"a\": 1, \"b\": [true]}\n";
    assert!(Policy::from_rego("p", text).unwrap().is_compiled());
}

#[test]
fn compiled_copy_follows_the_state() {
    let text = "package agent_policy\n\ndefault CreateContainerRequest := false\nCreateContainerRequest := {\"allowed\": true, \"ops\": [{\"op\": \"add\", \"path\": \"/pstate/n\", \"value\": input.n}]} if {\n    print(\"n\", input.n)\n    not data.pstate.n\n}\nCreateContainerRequest := {\"allowed\": true, \"ops\": []} if {\n    data.pstate.n == input.n\n}\n";
    let p = Policy::from_rego("p", text).unwrap();
    assert!(p.is_compiled());
    p.check_input("CreateContainerRequest", json!({"n": 1}))
        .unwrap();
    p.check_input("CreateContainerRequest", json!({"n": 1}))
        .unwrap();
    let e = p
        .check_input("CreateContainerRequest", json!({"n": 2}))
        .unwrap_err();
    assert_eq!(e.rule, "CreateContainerRequest");
    assert!(
        p.compiled_verdict("CreateContainerRequest", json!({"n": 1}))
            .unwrap()
            .unwrap()
            .0
    );
}

#[test]
fn built_in_policies_have_a_compiled_copy() {
    assert!(confidential().is_compiled());
    assert!(Policy::allow_all().unwrap().is_compiled());
}
