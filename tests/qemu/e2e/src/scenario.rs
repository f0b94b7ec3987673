//! The confidential pod, through the host client, in the order the Kata runtime calls:
//! Check → UpdateInterface/UpdateRoutes → CreateSandbox → GetGuestDetails → the pause
//! container (from the initrd's bundle) → a guest-pulled encrypted image with a sealed
//! secret in an env var and in a secret volume → Start → ReadStdout → WaitProcess →
//! RemoveContainer; then the second image (our key provider's), the negative cases, CPU
//! and memory hotplug (`hotplug.rs`: QMP `device_add`, OnlineCPUMem), and DestroySandbox.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::vm::{GUEST_GW, GUEST_IP, GUEST_MAC};

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A guest pull under TCG (attestation included) takes seconds; the runtime's own
/// CreateContainer timeout is 60 s, image pulls are bounded by agent.image_pull_timeout.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);
const SHARED: &str = "/run/kata-containers/shared/containers";

pub struct Client {
    client: ttrpc::r#async::Client,
    pub addr: cocoon_ctl::Address,
}

impl Client {
    /// Connects and answers a Check, retrying until `deadline`.
    pub async fn connect(addr: cocoon_ctl::Address, deadline: Duration) -> Result<Client> {
        let until = Instant::now() + deadline;
        loop {
            let attempt = async {
                let client = cocoon_ctl::connect(&addr).await?;
                cocoon_ctl::call_json(&client, "Check", "{}", Duration::from_secs(10)).await?;
                Ok::<_, cocoon_ctl::CtlError>(client)
            };
            match tokio::time::timeout(Duration::from_secs(15), attempt).await {
                Ok(Ok(client)) => return Ok(Client { client, addr }),
                Ok(Err(e)) if Instant::now() < until => {
                    eprintln!("e2e: agent not answering yet: {e}");
                }
                Err(_) if Instant::now() < until => eprintln!("e2e: Check timed out; retrying"),
                Ok(Err(e)) => bail!("the agent never answered Check: {e}"),
                Err(_) => bail!("the agent never answered Check (timeouts)"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn call(&self, method: &str, req: &Value) -> Result<Value> {
        self.call_timeout(method, req, CALL_TIMEOUT).await
    }

    pub async fn call_timeout(&self, method: &str, req: &Value, t: Duration) -> Result<Value> {
        let out = cocoon_ctl::call_json(&self.client, method, &req.to_string(), t)
            .await
            .map_err(|e| anyhow::anyhow!("{method}: {e}"))?;
        Ok(serde_json::from_str(&out)?)
    }

    /// The error text of a call that must fail.
    pub async fn fails(&self, method: &str, req: &Value, t: Duration) -> Result<String> {
        match self.call_timeout(method, req, t).await {
            Ok(v) => bail!("{method} succeeded but must fail: {v}"),
            Err(e) => Ok(format!("{e:#}")),
        }
    }
}

/// The spec the runtime sends for a guest-pulled image: root on the storage's mount
/// point, process left to the image config (args, env, cwd).
pub fn spec(cid: &str, extra_env: &[String], extra_mounts: &[Value]) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "source": "proc", "type": "proc"}),
        json!({"destination": "/dev", "source": "tmpfs", "type": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/tmp", "source": "tmpfs", "type": "tmpfs", "options": ["nosuid", "nodev"]}),
    ];
    mounts.extend(extra_mounts.iter().cloned());
    let mut spec = json!({
        "Version": "1.0.2",
        "Process": {"Terminal": false, "User": {"UID": 0, "GID": 0}, "Args": [],
                    "Env": extra_env, "Cwd": "", "NoNewPrivileges": true},
        "Root": {"Path": format!("/run/kata-containers/{cid}/rootfs"), "Readonly": false},
        "Mounts": mounts,
        "Annotations": {"io.kubernetes.cri.container-type":
                        if cid == "pause" { "sandbox" } else { "container" }},
        // No PID namespace: the runtime takes it out of every spec (`handlePidNamespace`).
        "Linux": {"Namespaces": [{"Type": "ipc"}, {"Type": "uts"}, {"Type": "mount"}],
                  "MaskedPaths": ["/proc/kcore"], "ReadonlyPaths": ["/proc/sys"]}
    });
    if cid != "pause" {
        // As containerd sends it for `seccompProfile: RuntimeDefault`, with Kubernetes'
        // default allowPrivilegeEscalation (no noNewPrivileges) and containerd's default
        // capabilities (no CAP_SYS_ADMIN): the filter must go in before the capabilities
        // are dropped.
        spec["Linux"]["Seccomp"] = default_seccomp();
        spec["Process"]["NoNewPrivileges"] = json!(false);
        spec["Process"]["Capabilities"] = json!({
            "Bounding": CONTAINERD_CAPS, "Effective": CONTAINERD_CAPS,
            "Permitted": CONTAINERD_CAPS, "Inheritable": [], "Ambient": []
        });
    }
    spec
}

/// containerd's default capability set (the 14 genpolicy's `DEFAULT_UNIX_CAPS` lists), what a
/// Kubernetes container without a `securityContext.capabilities` gets.
const CONTAINERD_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// containerd's default seccomp profile for amd64, resolved as the runtime sends it
/// (the agent's test data, with its provenance), with two rules a pod could add: `mkdir`
/// and `mkdirat` fail with ENOSYS (38), and `sync` kills the process (the workload checks
/// both, each in a subshell; nothing else it runs calls `sync`).
fn default_seccomp() -> Value {
    const PROFILE: &str = include_str!("../../../../agent/tests/data/seccomp/default-amd64.json");
    const CHANGED: [&str; 3] = ["mkdir", "mkdirat", "sync"];
    let mut profile: Value = serde_json::from_str(PROFILE).unwrap_or(Value::Null);
    // The Kata protocol's JSON names (oci.proto's `LinuxSyscall`): `get_mut`, not
    // indexing, which would add a null field the agent's decoder refuses.
    if let Some(rules) = profile.get_mut("Syscalls").and_then(Value::as_array_mut) {
        // libseccomp refuses two actions for one syscall: take them out of the allow list.
        for rule in rules.iter_mut() {
            if let Some(names) = rule.get_mut("Names").and_then(Value::as_array_mut) {
                names.retain(|n| !CHANGED.iter().any(|c| n == c));
            }
        }
        rules.retain(|r| r["Names"].as_array().is_some_and(|n| !n.is_empty()));
        rules.push(
            json!({"Names": ["mkdir", "mkdirat"], "Action": "SCMP_ACT_ERRNO",
                          "errnoret": 38}),
        );
        rules.push(json!({"Names": ["sync"], "Action": "SCMP_ACT_KILL_PROCESS"}));
    }
    profile
}

/// The `image_guest_pull` storage as the runtime builds it.
pub fn storage(cid: &str, image: &str) -> Value {
    let kind = if cid == "pause" {
        "sandbox"
    } else {
        "container"
    };
    let meta = json!({"metadata": {"io.kubernetes.cri.container-type": kind,
                                   "io.kubernetes.cri.image-name": image}});
    json!({"driver": "image_guest_pull", "source": image, "fstype": "overlay",
           "driver_options": [format!("image_guest_pull={meta}")],
           "mount_point": format!("/run/kata-containers/{cid}/rootfs")})
}

pub fn create_request(cid: &str, image: &str, env: &[String], mounts: &[Value]) -> Value {
    json!({"container_id": cid, "exec_id": cid, "OCI": spec(cid, env, mounts),
           "storages": [storage(cid, image)]})
}

/// Reads a process's stdout until EOF.
pub async fn read_stdout(c: &Client, cid: &str) -> Result<String> {
    let mut out = Vec::new();
    loop {
        let r = c
            .call_timeout(
                "ReadStdout",
                &json!({"container_id": cid, "exec_id": cid, "len": 65536}),
                Duration::from_secs(120),
            )
            .await;
        match r {
            Ok(v) => {
                use base64::Engine as _;
                let data = v["data"].as_str().unwrap_or("");
                if data.is_empty() {
                    break;
                }
                out.extend(base64::engine::general_purpose::STANDARD.decode(data)?);
            }
            Err(_) => break, // EOF
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The network as the runtime sends it for QEMU's user net.
pub async fn network(c: &Client) -> Result<()> {
    c.call(
        "UpdateInterface",
        &json!({"interface": {"hwAddr": GUEST_MAC, "name": "eth0", "mtu": 1500,
                "IPAddresses": [{"family": "v4", "address": GUEST_IP, "mask": "24"}]}}),
    )
    .await?;
    c.call(
        "UpdateRoutes",
        &json!({"routes": {"Routes": [{"dest": "", "gateway": GUEST_GW, "device": "eth0"}]}}),
    )
    .await?;
    Ok(())
}

/// A Kubernetes secret volume (kubelet's `..data` layout) holding `files`, copied into
/// the guest's shared dir with CopyFile as the runtime does without a shared fs; returns
/// its guest path.
pub async fn copy_secret_volume(
    c: &Client,
    work: &Path,
    name: &str,
    files: &[(&str, &str)],
) -> Result<String> {
    let dir = work.join(name);
    let ts = dir.join("..2026_12_02_00_00_00.1");
    std::fs::create_dir_all(&ts)?;
    for (f, text) in files {
        std::fs::write(ts.join(f), text)?;
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f))?;
    }
    std::os::unix::fs::symlink("..2026_12_02_00_00_00.1", dir.join("..data"))?;
    let guest = format!("{SHARED}/{name}");
    cocoon_ctl::run::copy_tree(&c.addr, &dir, &guest, CALL_TIMEOUT)
        .await
        .context("CopyFile of the secret volume")?;
    Ok(guest)
}

/// One container: create (timed), start, read all stdout, wait, remove.
pub struct Ran {
    pub create: Duration,
    pub first_byte: Duration,
    pub output: String,
    pub exit: i64,
}

pub async fn run_container(c: &Client, cid: &str, req: &Value) -> Result<Ran> {
    let t = Instant::now();
    c.call_timeout("CreateContainer", req, PULL_TIMEOUT)
        .await
        .with_context(|| format!("CreateContainer {cid}"))?;
    let create = t.elapsed();
    c.call("StartContainer", &json!({"container_id": cid}))
        .await?;
    let output = read_stdout(c, cid).await?;
    let first_byte = t.elapsed();
    let w = c
        .call_timeout(
            "WaitProcess",
            &json!({"container_id": cid, "exec_id": cid}),
            Duration::from_secs(120),
        )
        .await?;
    let exit = w["status"].as_i64().unwrap_or(0);
    c.call(
        "RemoveContainer",
        &json!({"container_id": cid, "timeout": 10}),
    )
    .await?;
    Ok(Ran {
        create,
        first_byte,
        output,
        exit,
    })
}

pub const PULL_TIMEOUT_PUB: Duration = PULL_TIMEOUT;
