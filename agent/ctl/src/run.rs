//! `cocoon-ctl run`: run a container in the agent from an OCI runtime spec
//! (`config.json`, as `runc spec` writes it) and show its output.
//!
//! The OCI JSON is turned into the wire `grpc.Spec` by walking the protocol's
//! descriptors: a key matches the field of the same name ignoring case (`uid` → `UID`,
//! `cgroupsPath` → `CgroupsPath`), `ociVersion` is `Version`, and keys the wire form
//! lacks are dropped with a note. Then CreateContainer → StartContainer → ReadStdout and
//! ReadStderr until EOF → WaitProcess → RemoveContainer.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use protobuf::reflect::{MessageDescriptor, RuntimeFieldType, RuntimeType};
use serde_json::{json, Map, Value};

use crate::{call_json, connect, Address, CtlError};

/// Converts OCI JSON `v` to the proto JSON of message `desc`; notes dropped keys.
fn to_wire(v: &Value, desc: &MessageDescriptor, path: &str, dropped: &mut Vec<String>) -> Value {
    let Value::Object(obj) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    for (key, value) in obj {
        let want = if key == "ociVersion" { "Version" } else { key };
        let Some(field) = desc.fields().find(|f| f.name().eq_ignore_ascii_case(want)) else {
            dropped.push(format!("{path}{key}"));
            continue;
        };
        let sub = format!("{path}{key}.");
        let converted = match field.runtime_field_type() {
            RuntimeFieldType::Singular(RuntimeType::Message(m)) => {
                to_wire(value, &m, &sub, dropped)
            }
            RuntimeFieldType::Repeated(RuntimeType::Message(m)) => match value {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|i| to_wire(i, &m, &sub, dropped))
                        .collect(),
                ),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(field.name().to_string(), converted);
    }
    Value::Object(out)
}

/// Where the Kata runtime puts a container's rootfs in the guest when it copies it
/// there: `<shared>/<id>/rootfs`, `shared` being
/// [`SHARED_CONTAINERS_DIR`](cocoon_protocols::wire::SHARED_CONTAINERS_DIR) in a guest.
pub fn guest_rootfs(shared: &str, id: &str) -> String {
    format!("{shared}/{id}/rootfs")
}

/// Copies the host directory `host` into the guest at `guest` with CopyFile, the way the
/// Kata runtime does without a shared filesystem: directories, symlinks, and files in
/// 1 MiB chunks, keeping modes and owners. Returns the bytes copied.
pub async fn copy_tree(
    addr: &Address,
    host: &Path,
    guest: &str,
    timeout: Duration,
) -> Result<u64, CtlError> {
    use std::os::unix::fs::MetadataExt;
    let io_err = |path: &Path, e: std::io::Error| CtlError::Request {
        method: "CopyFile".into(),
        reason: format!("{}: {e}", path.display()),
    };
    let mut copied = 0u64;
    // Depth-first, parents before children, names sorted: deterministic.
    let mut stack = vec![(host.to_path_buf(), guest.to_string())];
    while let Some((src, dst)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&src).map_err(|e| io_err(&src, e))?;
        let mut req = json!({
            "path": dst,
            "file_mode": meta.mode(),
            "dir_mode": 0o755,
            "uid": meta.uid(),
            "gid": meta.gid(),
        });
        if meta.is_dir() {
            call(addr, "CopyFile", &req, timeout).await?;
            let mut children: Vec<_> = std::fs::read_dir(&src)
                .map_err(|e| io_err(&src, e))?
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect();
            children.sort();
            for name in children.into_iter().rev() {
                let child_dst = format!("{dst}/{}", name.to_string_lossy());
                stack.push((src.join(&name), child_dst));
            }
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| io_err(&src, e))?;
            req["data"] = json!(BASE64.encode(target.as_os_str().as_encoded_bytes()));
            call(addr, "CopyFile", &req, timeout).await?;
        } else if meta.is_file() {
            let data = std::fs::read(&src).map_err(|e| io_err(&src, e))?;
            req["file_size"] = json!(data.len());
            let chunks: Vec<&[u8]> = if data.is_empty() {
                vec![&[]]
            } else {
                data.chunks(cocoon_protocols::wire::COPY_FILE_CHUNK)
                    .collect()
            };
            let mut offset = 0usize;
            for chunk in chunks {
                req["offset"] = json!(offset);
                req["data"] = json!(BASE64.encode(chunk));
                call(addr, "CopyFile", &req, timeout).await?;
                offset += chunk.len();
            }
            copied += data.len() as u64;
        }
        // Sockets, fifos, devices: not part of a rootfs the runtime copies.
    }
    Ok(copied)
}

/// How a client spells namespace types in `grpc.Spec`'s `Linux.Namespaces`: the Go
/// runtime sends OCI's names (`network`, `mount`), Kata's Rust conversion (runtime-rs,
/// kata-agent-ctl) `oci_spec`'s display names (`net`, `mnt`). The agent takes both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NamespaceNames {
    /// `network`, `mount` (the Go runtime; what an OCI config.json says).
    #[default]
    Go,
    /// `net`, `mnt` (runtime-rs, kata-agent-ctl).
    Rust,
}

impl NamespaceNames {
    /// Respells the namespace types of a wire spec (proto JSON, `Linux.Namespaces`);
    /// other types and other fields are left as they are.
    pub fn respell(self, spec: &mut Value) {
        let Some(list) = spec
            .pointer_mut("/Linux/Namespaces")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        for ns in list {
            let Some(t) = ns.get_mut("Type") else {
                continue;
            };
            let new = match (self, t.as_str().unwrap_or_default()) {
                (NamespaceNames::Go, "net") => "network",
                (NamespaceNames::Go, "mnt") => "mount",
                (NamespaceNames::Rust, "network") => "net",
                (NamespaceNames::Rust, "mount") => "mnt",
                _ => continue,
            };
            *t = json!(new);
        }
    }
}

/// The wire spec for an OCI `config.json` at `spec_path`; a relative root path is made
/// absolute against the spec's directory.
pub fn wire_spec(spec_path: &Path) -> Result<(Value, Vec<String>), CtlError> {
    let bad = |reason: String| CtlError::Request {
        method: "CreateContainer".into(),
        reason,
    };
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| bad(format!("reading {}: {e}", spec_path.display())))?;
    let mut oci: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", spec_path.display())))?;
    if let Some(root) = oci.pointer_mut("/root/path") {
        if let Some(p) = root.as_str().filter(|p| !p.starts_with('/')) {
            let dir = spec_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let abs = std::fs::canonicalize(dir.join(p))
                .map_err(|e| bad(format!("root.path {p}: {e}")))?;
            *root = json!(abs.display().to_string());
        }
    }
    let desc = <cocoon_protocols::oci::Spec as protobuf::MessageFull>::descriptor();
    let mut dropped = Vec::new();
    let wire = to_wire(&oci, &desc, "", &mut dropped);
    Ok((wire, dropped))
}

async fn call(
    addr: &Address,
    method: &str,
    req: &Value,
    timeout: Duration,
) -> Result<Value, CtlError> {
    let client = connect(addr).await?;
    let text = call_json(&client, method, &req.to_string(), timeout).await?;
    serde_json::from_str(&text).map_err(|e| CtlError::Response {
        method: method.to_string(),
        reason: e.to_string(),
    })
}

/// Copies one of the container's streams to ours until EOF.
async fn pump(addr: Address, id: String, stderr: bool) -> Result<(), CtlError> {
    let client = connect(&addr).await?;
    let method = if stderr { "ReadStderr" } else { "ReadStdout" };
    let req = json!({"container_id": id, "exec_id": id, "len": 65536}).to_string();
    // A long poll: the read returns when there is output, or at EOF with no data (as
    // upstream's agent answers it; an older Cocoon answered an error).
    while let Ok(text) = call_json(&client, method, &req, Duration::from_secs(24 * 3600)).await {
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let data = v["data"].as_str().unwrap_or_default();
        let bytes = base64_decode(data);
        if bytes.is_empty() {
            break;
        }
        let _ = if stderr {
            std::io::stderr().write_all(&bytes)
        } else {
            std::io::stdout()
                .write_all(&bytes)
                .and_then(|_| std::io::stdout().flush())
        };
    }
    Ok(())
}

/// Standard base64 (proto JSON's encoding of `bytes`).
fn base64_decode(s: &str) -> Vec<u8> {
    BASE64.decode(s).unwrap_or_default()
}

/// Runs the container `id` from `spec_path`; returns its exit status.
pub async fn run_container(
    addr: &Address,
    id: &str,
    spec_path: &Path,
    timeout: Duration,
    keep: bool,
    copy_rootfs_to: Option<&str>,
    names: NamespaceNames,
) -> Result<i32, CtlError> {
    let (mut spec, dropped) = wire_spec(spec_path)?;
    names.respell(&mut spec);
    if let Some(shared) = copy_rootfs_to {
        let host = spec
            .pointer("/Root/Path")
            .and_then(Value::as_str)
            .map(std::path::PathBuf::from)
            .ok_or_else(|| CtlError::Request {
                method: "CreateContainer".into(),
                reason: "--copy-rootfs needs root.path in the spec".into(),
            })?;
        let guest = guest_rootfs(shared, id);
        let bytes = copy_tree(addr, &host, &guest, timeout).await?;
        eprintln!(
            "cocoon-ctl: copied {} ({bytes} bytes) into the guest at {guest}",
            host.display()
        );
        spec["Root"]["Path"] = json!(guest);
    }
    if !dropped.is_empty() {
        eprintln!(
            "cocoon-ctl: not in the Kata wire spec, ignored: {}",
            dropped.join(", ")
        );
    }
    call(
        addr,
        "CreateContainer",
        &json!({"container_id": id, "exec_id": id, "OCI": spec}),
        timeout,
    )
    .await?;
    let result = async {
        call(
            addr,
            "StartContainer",
            &json!({"container_id": id}),
            timeout,
        )
        .await?;
        let out = tokio::spawn(pump(addr.clone(), id.to_string(), false));
        let err = tokio::spawn(pump(addr.clone(), id.to_string(), true));
        let status = call(
            addr,
            "WaitProcess",
            &json!({"container_id": id, "exec_id": id}),
            Duration::from_secs(24 * 3600),
        )
        .await?;
        let _ = out.await;
        let _ = err.await;
        Ok::<i32, CtlError>(status["status"].as_i64().unwrap_or(0) as i32)
    }
    .await;
    if !keep {
        let removed = call(
            addr,
            "RemoveContainer",
            &json!({"container_id": id}),
            timeout,
        )
        .await;
        if let Err(e) = removed {
            eprintln!("cocoon-ctl: RemoveContainer {id}: {e}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_json_becomes_the_wire_spec() {
        let dir = std::env::temp_dir().join(format!("cocoon-ctl-run-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let spec = dir.join("config.json");
        std::fs::write(
            &spec,
            r#"{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":1,"gid":2},
               "args":["sh"],"cwd":"/","noNewPrivileges":true,
               "rlimits":[{"type":"RLIMIT_NOFILE","hard":9,"soft":9}]},
               "root":{"path":"rootfs","readonly":true},"hostname":"h",
               "mounts":[{"destination":"/proc","type":"proc","source":"proc"}],
               "linux":{"namespaces":[{"type":"pid"}],"uidMappings":[{"containerID":0,"hostID":1000,"size":1}],
               "resources":{"cpu":{"shares":2}},"timeOffsets":{}}}"#,
        )
        .unwrap();
        let (wire, dropped) = wire_spec(&spec).unwrap();
        assert_eq!(wire["Version"], "1.0.2");
        assert_eq!(wire["Process"]["User"]["UID"], 1);
        assert_eq!(wire["Process"]["Rlimits"][0]["Type"], "RLIMIT_NOFILE");
        assert_eq!(wire["Linux"]["UIDMappings"][0]["HostID"], 1000);
        assert_eq!(wire["Linux"]["Resources"]["CPU"]["Shares"], 2);
        assert_eq!(wire["Mounts"][0]["destination"], "/proc");
        assert!(wire["Root"]["Path"].as_str().unwrap().ends_with("/rootfs"));
        assert_eq!(dropped, vec!["linux.timeOffsets".to_string()]);
        // The wire JSON parses as a grpc.Spec.
        let desc = <cocoon_protocols::oci::Spec as protobuf::MessageFull>::descriptor();
        protobuf_json_mapping::parse_dyn_from_str(&desc, &wire.to_string()).unwrap();
        assert_eq!(base64_decode("aGk="), b"hi");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn namespace_names_respelled() {
        let types = |v: &Value| -> Vec<String> {
            v["Linux"]["Namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["Type"].as_str().unwrap().to_string())
                .collect()
        };
        let oci = json!({"Linux": {"Namespaces": [{"Type": "pid"}, {"Type": "network", "Path": "/x"},
            {"Type": "mount"}, {"Type": "uts"}]}});
        let mut rust = oci.clone();
        NamespaceNames::Rust.respell(&mut rust);
        assert_eq!(types(&rust), ["pid", "net", "mnt", "uts"]);
        assert_eq!(rust["Linux"]["Namespaces"][1]["Path"], "/x");
        let mut go = rust.clone();
        NamespaceNames::Go.respell(&mut go);
        assert_eq!(go, oci);
        // No Linux section: nothing to do.
        let mut bare = json!({"Version": "1.0.2"});
        NamespaceNames::Rust.respell(&mut bare);
        assert_eq!(bare, json!({"Version": "1.0.2"}));
    }
}
