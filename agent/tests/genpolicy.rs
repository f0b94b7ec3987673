//! Kata genpolicy's `rules.rego` (read from `../shared/fixtures/genpolicy`, never copied)
//! loads in our engine with a `policy_data` written for one test pod, and gives the
//! verdicts upstream recorded in its test cases; the recorded requests (upstream's JSON
//! input) have our shape too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/genpolicy.rs"]
mod support;

use std::path::Path;

use cocoon_agent::policy::{input, Policy};
use cocoon_protocols::agent::*;
use serde_json::{json, Value};

/// The test cases whose pod our policy data describes: the busybox pod of
/// `state-execprocess`, and the cases that only read genpolicy's settings (the same for
/// every pod). `createcontainer-env_vars` is another pod: its CreateContainer verdicts
/// need that pod's data, which we do not write.
const CASES: &[&str] = &[
    "state-execprocess",
    "createsandbox",
    "copyfile",
    "updateroutes",
    "updateinterface",
    "addarpneighbors",
];

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// genpolicy's output for the test pod (one copy with the unit tests and the benchmark).
pub fn generated_policy(dir: &Path) -> String {
    support::generated_policy(dir).unwrap()
}

/// A recorded request as our agent would give it to the policy: parsed into our
/// message, then through the agent's conversion.
fn through_our_messages(kind: &str, req: &Value) -> Value {
    macro_rules! kinds {
        ($($t:ident),*) => {
            match kind {
                $(stringify!($t) => {
                    let m: $t = serde_json::from_value(req.clone()).unwrap();
                    input::request(kind, &m).unwrap()
                })*
                // CopyFile's input is PolicyCopyFileRequest, recorded as such.
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
fn rules_rego_gives_the_recorded_verdicts() {
    let Some(dir) = common::genpolicy_dir() else {
        return;
    };
    let text = generated_policy(&dir);
    let mut checked = 0;
    for case in CASES {
        let cases = read_json(&dir.join("testcases").join(case).join("testcases.json"));
        // A fresh policy per file: the cases of one file run in order (state). As
        // upstream's genpolicy tests do, each request is parsed into the message type
        // and serialised again (older recordings lack fields added since, like
        // `ApparmorProfile`).
        let policy = Policy::from_rego("genpolicy", &text).unwrap();
        for c in cases.as_array().unwrap() {
            let kind = c["kind"].as_str().unwrap();
            let want = c["allowed"].as_bool().unwrap();
            let what = format!("{case}: {} ({kind})", c["description"]);
            let input = through_our_messages(kind, &c["request"]);
            let d = policy
                .evaluate(kind, input)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(d.allowed, want, "{what}; policy output:\n{}", d.prints);
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} cases");
}

#[test]
fn rules_rego_defaults_and_our_messages() {
    let Some(dir) = common::genpolicy_dir() else {
        return;
    };
    let p = Policy::from_rego("genpolicy", &generated_policy(&dir)).unwrap();
    // Every rule our agent asks for is defined by genpolicy's rules (allowed or not).
    for rule in cocoon_agent::policy::rule_names() {
        p.evaluate(rule, json!({}))
            .unwrap_or_else(|e| panic!("{rule}: {e}"));
    }
    // The stream reads: denied unless policy_data says otherwise, as in a CoCo pod.
    let e = p
        .check(&ReadStreamRequest {
            container_id: "c".into(),
            exec_id: "c".into(),
            len: 1024,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.rule, "ReadStreamRequest");
    p.check(&GuestDetailsRequest::default()).unwrap();
    // CopyFile through our PolicyCopyFileRequest.
    let shared = "/run/kata-containers/shared/containers";
    let id = "88941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9";
    p.check_copy_file(&CopyFileRequest {
        path: format!("{shared}/{id}-e9bb691ee0df3258-hosts"),
        file_mode: libc::S_IFREG | 0o644,
        ..Default::default()
    })
    .unwrap();
    p.check_copy_file(&CopyFileRequest {
        path: format!("{shared}/{id}-e9bb691ee0df3258-secret/key"),
        file_mode: libc::S_IFLNK | 0o777,
        data: b"..data/key".to_vec(),
        ..Default::default()
    })
    .unwrap();
    assert!(p
        .check_copy_file(&CopyFileRequest {
            path: format!("{shared}/{id}-e9bb691ee0df3258-secret/key"),
            file_mode: libc::S_IFLNK | 0o777,
            data: b"/etc/shadow".to_vec(),
            ..Default::default()
        })
        .is_err());
}

/// Every key of `recorded` is in `ours` with the same value (ours may have more).
fn missing(path: &str, recorded: &Value, ours: &Value, out: &mut Vec<String>) {
    match (recorded, ours) {
        (Value::Object(r), Value::Object(o)) => {
            for (k, v) in r {
                match o.get(k) {
                    Some(ov) => missing(&format!("{path}.{k}"), v, ov, out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(r), Value::Array(o)) if r.len() == o.len() => {
            for (i, (v, ov)) in r.iter().zip(o).enumerate() {
                missing(&format!("{path}[{i}]"), v, ov, out);
            }
        }
        (r, o) if r != o => out.push(format!("{path}: recorded {r}, ours {o}")),
        _ => {}
    }
}

/// The requests upstream's agent serialised (recorded from real pods) come out of our
/// messages the same: field names, nulls, enums as numbers.
#[test]
fn recorded_requests_have_our_shape() {
    let Some(dir) = common::genpolicy_dir() else {
        return;
    };
    // Not ours to match: keys upstream's test authors wrote by hand, or an older
    // upstream name (`pciPath`, today's `devicePath`).
    let known = [
        ".interface.pciPath",
        ".type",
        ".string_user.additional_gids",
    ];
    let mut compared = 0;
    for entry in std::fs::read_dir(dir.join("testcases")).unwrap() {
        let file = entry.unwrap().path().join("testcases.json");
        for c in read_json(&file).as_array().unwrap() {
            let kind = c["kind"].as_str().unwrap();
            if kind == "CopyFileRequest" {
                continue;
            }
            let ours = through_our_messages(kind, &c["request"]);
            let mut out = Vec::new();
            missing("", &c["request"], &ours, &mut out);
            out.retain(|m| !known.contains(&m.as_str()));
            assert!(
                out.is_empty(),
                "{} {}: {out:?}",
                file.display(),
                c["description"]
            );
            compared += 1;
        }
    }
    assert!(compared > 30, "{compared}");
}
