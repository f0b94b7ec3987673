//! genpolicy's output for the test pod, assembled from genpolicy's upstream files: its
//! `rules.rego`, then `policy_data := {...}` with the pod's containers (ours,
//! `tests/data/genpolicy-busybox-containers.json`) and the sections genpolicy takes from
//! its settings. One copy, included with `#[path]` by the policy unit tests,
//! `tests/genpolicy.rs` and `examples/policy-bench.rs`.

use std::path::Path;

use serde_json::{json, Value};

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The policy text genpolicy would write for the test pod; `dir` holds genpolicy's
/// `rules.rego` and `genpolicy-settings.json`.
pub fn generated_policy(dir: &Path) -> Result<String, String> {
    let rules_path = dir.join("rules.rego");
    let rules = std::fs::read_to_string(&rules_path)
        .map_err(|e| format!("{}: {e}", rules_path.display()))?;
    let settings = read_json(&dir.join("genpolicy-settings.json"))?;
    let ours = read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/genpolicy-busybox-containers.json"),
    )?;
    let data = json!({
        "containers": ours["containers"],
        "common": settings["common"],
        "sandbox": settings["sandbox"],
        "request_defaults": settings["request_defaults"],
        "devices": settings["devices"],
        "cluster_config": settings["cluster_config"],
    });
    Ok(format!("{rules}\npolicy_data := {data}\n"))
}
