//! Network RPCs through the real agent, run in its own network namespace
//! (`unshare --net`) with a veth link, so the host's network is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use serde_json::{json, Value};

use common::{call, AgentProcess};

struct NetAgent {
    _dir: tempfile::TempDir,
    addr: String,
    agent: AgentProcess,
}

impl NetAgent {
    /// None (with the reason printed) when this machine cannot do it.
    fn start() -> Option<NetAgent> {
        if !nix::unistd::Uid::effective().is_root() {
            common::skip_or_fail("network tests need root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let mut command = Command::new("unshare");
        command
            .args(["--net", "--"])
            .arg(common::AGENT)
            .env(
                "KATA_AGENT_SERVER_ADDR",
                format!("unix://{}", sock.display()),
            )
            .env("COCOON_RUN_DIR", dir.path().join("run"));
        let agent = AgentProcess::start(command);
        let me = NetAgent {
            addr: format!("unix://{}", sock.display()),
            _dir: dir,
            agent,
        };
        // A veth pair stands in for the VM's NIC (dummy is not built into every kernel).
        let added = me.try_ip(&[
            "link",
            "add",
            "nic0",
            "address",
            "02:00:ca:fe:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "peer0",
        ]);
        let Ok(added) = added else {
            common::skip_or_fail(
                "network tests need nsenter and ip (apt-get install util-linux iproute2)",
            );
            return None;
        };
        if !added.status.success() {
            common::skip_or_fail(&format!(
                "cannot add a veth link: {}",
                String::from_utf8_lossy(&added.stderr)
            ));
            return None;
        }
        Some(me)
    }

    /// `ip ARGS` in the agent's network namespace (unshare execs the agent: same pid).
    fn try_ip(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("nsenter")
            .args(["-t", &self.agent.child.id().to_string(), "-n", "ip"])
            .args(args)
            .output()
    }

    fn ip(&self, args: &[&str]) -> std::process::Output {
        self.try_ip(args).unwrap()
    }

    fn call(&self, method: &str, req: Value) -> Result<Value, String> {
        call(&self.addr, method, &req.to_string())
    }
}

#[test]
fn interfaces_routes_and_neighbours() {
    let Some(net) = NetAgent::start() else {
        return;
    };
    let err = net
        .call(
            "UpdateInterface",
            json!({"interface": {"hwAddr": "02:00:00:00:00:99", "name": "eth9"}}),
        )
        .unwrap_err();
    assert!(err.contains("Link not found"), "{err}");

    let iface = net
        .call(
            "UpdateInterface",
            json!({"interface": {"hwAddr": "02:00:ca:fe:00:01", "name": "eth0", "mtu": 1400,
                   "IPAddresses": [{"family": "v4", "address": "10.10.0.2", "mask": "24"}]}}),
        )
        .unwrap();
    assert_eq!(iface["name"], "eth0");
    assert_eq!(iface["mtu"], "1400");
    assert_eq!(iface["IPAddresses"][0]["address"], "10.10.0.2");
    assert_eq!(iface["IPAddresses"][0]["mask"], "24");
    let shown = String::from_utf8_lossy(&net.ip(&["addr", "show", "eth0"]).stdout).into_owned();
    assert!(
        shown.contains("10.10.0.2/24") && shown.contains("mtu 1400"),
        "{shown}"
    );

    let list = net.call("ListInterfaces", json!({})).unwrap();
    let names: Vec<&str> = list["Interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"lo") && names.contains(&"eth0"),
        "{names:?}"
    );

    let routes = net
        .call(
            "UpdateRoutes",
            json!({"routes": {"Routes": [
                {"dest": "", "gateway": "10.10.0.1", "device": "eth0"},
                {"dest": "10.20.0.0/16", "gateway": "10.10.0.1", "device": "eth0"}
            ]}}),
        )
        .unwrap();
    let routes = routes["Routes"].as_array().unwrap().clone();
    let has = |dest: &str, gw: &str| {
        routes.iter().any(|r| {
            r.get("dest").and_then(Value::as_str).unwrap_or("") == dest
                && r.get("gateway").and_then(Value::as_str).unwrap_or("") == gw
                && r["device"] == "eth0"
        })
    };
    assert!(has("", "10.10.0.1"), "{routes:?}");
    assert!(has("10.20.0.0/16", "10.10.0.1"), "{routes:?}");
    let listed = net.call("ListRoutes", json!({})).unwrap();
    assert_eq!(listed["Routes"].as_array().unwrap().len(), routes.len());
    let err = net
        .call(
            "UpdateRoutes",
            json!({"routes": {"Routes": [{"dest": "10.0.0.0/99", "device": "eth0"}]}}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("dest"),
        "{err}"
    );

    net.call(
        "AddARPNeighbors",
        json!({"neighbors": {"ARPNeighbors": [{"toIPAddress": {"address": "10.10.0.1"},
               "device": "eth0", "lladdr": "02:00:ca:fe:00:ff", "state": 128}]}}),
    )
    .unwrap();
    let neigh =
        String::from_utf8_lossy(&net.ip(&["neigh", "show", "dev", "eth0"]).stdout).into_owned();
    assert!(
        neigh.contains("10.10.0.1") && neigh.contains("02:00:ca:fe:00:ff"),
        "{neigh}"
    );
    let err = net
        .call(
            "AddARPNeighbors",
            json!({"neighbors": {"ARPNeighbors": [{"toIPAddress": {"address": "10.10.0.1"}, "device": "nope"}]}}),
        )
        .unwrap_err();
    assert!(err.contains("Link not found"), "{err}");
}

/// `types.Route.mtu` (field 8): UpdateRoutes installs it (RTAX_MTU), ListRoutes reports
/// it; a route without one has none.
#[test]
fn route_mtu_is_applied_and_listed() {
    let Some(net) = NetAgent::start() else {
        return;
    };
    net.call(
        "UpdateInterface",
        json!({"interface": {"hwAddr": "02:00:ca:fe:00:01", "name": "eth0", "mtu": 1500,
               "IPAddresses": [{"family": "v4", "address": "10.30.0.2", "mask": "24"}]}}),
    )
    .unwrap();
    let routes = net
        .call(
            "UpdateRoutes",
            json!({"routes": {"Routes": [
                {"dest": "10.40.0.0/16", "gateway": "10.30.0.1", "device": "eth0", "mtu": 1300},
                {"dest": "10.50.0.0/16", "gateway": "10.30.0.1", "device": "eth0"}
            ]}}),
        )
        .unwrap();
    let mtu_of = |routes: &Value, dest: &str| -> u64 {
        routes["Routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r.get("dest").and_then(Value::as_str) == Some(dest))
            .unwrap_or_else(|| panic!("no route to {dest}: {routes}"))
            .get("mtu")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    assert_eq!(mtu_of(&routes, "10.40.0.0/16"), 1300, "{routes}");
    assert_eq!(mtu_of(&routes, "10.50.0.0/16"), 0, "{routes}");
    let listed = net.call("ListRoutes", json!({})).unwrap();
    assert_eq!(mtu_of(&listed, "10.40.0.0/16"), 1300, "{listed}");
    // No `routes` at all is refused (as upstream), and changes nothing.
    let err = net.call("UpdateRoutes", json!({})).unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("routes"),
        "{err}"
    );
    let again = net.call("ListRoutes", json!({})).unwrap();
    assert_eq!(again, listed);
    // The kernel's own view, as `ip route` prints it.
    let shown =
        String::from_utf8_lossy(&net.ip(&["route", "show", "10.40.0.0/16"]).stdout).into_owned();
    assert!(shown.contains("mtu 1300"), "{shown}");
    let shown =
        String::from_utf8_lossy(&net.ip(&["route", "show", "10.50.0.0/16"]).stdout).into_owned();
    assert!(!shown.contains("mtu"), "{shown}");
}
