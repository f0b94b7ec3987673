//! `grpc.Spec` (the Kata wire form of an OCI runtime spec) → `oci_spec::runtime::Spec`.
//!
//! The wire messages mirror the OCI JSON with Go field names; we rebuild the OCI JSON
//! and let `oci-spec` parse it, so every value is checked by the same code libcontainer
//! uses. Zero values mean "unset", as in the Go runtime's conversion.

use std::collections::HashMap;

use cocoon_protocols::oci;
use oci_spec::runtime::Spec;
use serde_json::{json, Map, Value};

use crate::error::AgentError;

/// The OCI version written into converted specs when the request names none.
const DEFAULT_OCI_VERSION: &str = "1.0.2";

fn insert_if(map: &mut Map<String, Value>, key: &str, cond: bool, value: Value) {
    if cond {
        map.insert(key.to_string(), value);
    }
}

fn strings(v: &[String]) -> Value {
    json!(v)
}

fn process(p: &oci::Process) -> Value {
    let mut m = Map::new();
    m.insert("terminal".into(), json!(p.Terminal));
    if let Some(b) = p.ConsoleSize.as_ref() {
        m.insert(
            "consoleSize".into(),
            json!({"height": b.Height, "width": b.Width}),
        );
    }
    let user = p.User.as_ref().cloned().unwrap_or_default();
    let mut u = Map::new();
    u.insert("uid".into(), json!(user.UID));
    u.insert("gid".into(), json!(user.GID));
    insert_if(
        &mut u,
        "additionalGids",
        !user.AdditionalGids.is_empty(),
        json!(user.AdditionalGids),
    );
    insert_if(
        &mut u,
        "username",
        !user.Username.is_empty(),
        json!(user.Username),
    );
    m.insert("user".into(), Value::Object(u));
    m.insert("args".into(), strings(&p.Args));
    insert_if(&mut m, "env", !p.Env.is_empty(), strings(&p.Env));
    m.insert(
        "cwd".into(),
        json!(if p.Cwd.is_empty() { "/" } else { &p.Cwd }),
    );
    if let Some(c) = p.Capabilities.as_ref() {
        m.insert(
            "capabilities".into(),
            json!({
                "bounding": c.Bounding,
                "effective": c.Effective,
                "inheritable": c.Inheritable,
                "permitted": c.Permitted,
                "ambient": c.Ambient,
            }),
        );
    }
    if !p.Rlimits.is_empty() {
        let r: Vec<Value> = p
            .Rlimits
            .iter()
            .map(|r| json!({"type": r.Type, "hard": r.Hard, "soft": r.Soft}))
            .collect();
        m.insert("rlimits".into(), Value::Array(r));
    }
    // Only when set: libcontainer installs a seccomp filter before it drops the
    // capabilities only when the field is absent (runc does so whenever it is false), so
    // an explicit `false` put the filter after the drop, where without CAP_SYS_ADMIN the
    // kernel refuses it: Kubernetes' usual container (RuntimeDefault, the default
    // capabilities, no allowPrivilegeEscalation: false) failed to start.
    insert_if(&mut m, "noNewPrivileges", p.NoNewPrivileges, json!(true));
    // No `apparmorProfile`: see [`unapplied_apparmor_profile`].
    insert_if(
        &mut m,
        "oomScoreAdj",
        p.OOMScoreAdj != 0,
        json!(p.OOMScoreAdj),
    );
    insert_if(
        &mut m,
        "selinuxLabel",
        !p.SelinuxLabel.is_empty(),
        json!(p.SelinuxLabel),
    );
    Value::Object(m)
}

/// `LinuxResources` in OCI JSON (also used by UpdateContainer).
/// The AppArmor profile a process names, which the guest does not apply. The name is the
/// host's: containerd puts its `cri-containerd.apparmor.d` in every spec on a host with
/// AppArmor and the Kata runtime passes it through, but the guest loads no profile, and
/// kata-agent never applies one. Given to libcontainer, it would refuse every such
/// container (with a bare "io error" when the guest kernel has no AppArmor). Callers
/// log it.
pub fn unapplied_apparmor_profile(p: &oci::Process) -> Option<&str> {
    (!p.ApparmorProfile.is_empty()).then_some(p.ApparmorProfile.as_str())
}

pub fn resources_json(r: &oci::LinuxResources) -> Value {
    let mut m = Map::new();
    if !r.Devices.is_empty() {
        let d: Vec<Value> = r
            .Devices
            .iter()
            .map(|d| {
                let mut e = Map::new();
                e.insert("allow".into(), json!(d.Allow));
                insert_if(&mut e, "type", !d.Type.is_empty(), json!(d.Type));
                insert_if(
                    &mut e,
                    "major",
                    d.Major != 0 || d.Minor != 0,
                    json!(d.Major),
                );
                insert_if(
                    &mut e,
                    "minor",
                    d.Major != 0 || d.Minor != 0,
                    json!(d.Minor),
                );
                insert_if(&mut e, "access", !d.Access.is_empty(), json!(d.Access));
                Value::Object(e)
            })
            .collect();
        m.insert("devices".into(), Value::Array(d));
    }
    if let Some(mem) = r.Memory.as_ref() {
        let mut e = Map::new();
        insert_if(&mut e, "limit", mem.Limit != 0, json!(mem.Limit));
        insert_if(
            &mut e,
            "reservation",
            mem.Reservation != 0,
            json!(mem.Reservation),
        );
        insert_if(&mut e, "swap", mem.Swap != 0, json!(mem.Swap));
        insert_if(
            &mut e,
            "swappiness",
            mem.Swappiness != 0,
            json!(mem.Swappiness),
        );
        insert_if(
            &mut e,
            "disableOOMKiller",
            mem.DisableOOMKiller,
            json!(true),
        );
        m.insert("memory".into(), Value::Object(e));
    }
    if let Some(cpu) = r.CPU.as_ref() {
        let mut e = Map::new();
        insert_if(&mut e, "shares", cpu.Shares != 0, json!(cpu.Shares));
        insert_if(&mut e, "quota", cpu.Quota != 0, json!(cpu.Quota));
        insert_if(&mut e, "period", cpu.Period != 0, json!(cpu.Period));
        insert_if(&mut e, "cpus", !cpu.Cpus.is_empty(), json!(cpu.Cpus));
        insert_if(&mut e, "mems", !cpu.Mems.is_empty(), json!(cpu.Mems));
        m.insert("cpu".into(), Value::Object(e));
    }
    if let Some(p) = r.Pids.as_ref() {
        if p.Limit != 0 {
            m.insert("pids".into(), json!({"limit": p.Limit}));
        }
    }
    if let Some(b) = r.BlockIO.as_ref() {
        let mut e = Map::new();
        insert_if(&mut e, "weight", b.Weight != 0, json!(b.Weight));
        insert_if(&mut e, "leafWeight", b.LeafWeight != 0, json!(b.LeafWeight));
        m.insert("blockIO".into(), Value::Object(e));
    }
    if !r.HugepageLimits.is_empty() {
        let h: Vec<Value> = r
            .HugepageLimits
            .iter()
            .map(|h| json!({"pageSize": h.Pagesize, "limit": h.Limit}))
            .collect();
        m.insert("hugepageLimits".into(), Value::Array(h));
    }
    Value::Object(m)
}

/// A namespace type in the OCI JSON spelling. The Go runtime sends OCI's names
/// (`network`, `mount`); Kata's Rust conversion (runtime-rs, kata-agent-ctl) sends
/// `oci_spec::runtime::LinuxNamespaceType`'s display names (`net`, `mnt`). Upstream's
/// agent accepts both; others pass through and are checked by `oci-spec`.
fn namespace_type(t: &str) -> &str {
    match t {
        "net" => "network",
        "mnt" => "mount",
        other => other,
    }
}

fn linux(l: &oci::Linux) -> Value {
    let mut m = Map::new();
    let idmap = |v: &[oci::LinuxIDMapping]| -> Value {
        v.iter()
            .map(|i| json!({"hostID": i.HostID, "containerID": i.ContainerID, "size": i.Size}))
            .collect()
    };
    insert_if(
        &mut m,
        "uidMappings",
        !l.UIDMappings.is_empty(),
        idmap(&l.UIDMappings),
    );
    insert_if(
        &mut m,
        "gidMappings",
        !l.GIDMappings.is_empty(),
        idmap(&l.GIDMappings),
    );
    insert_if(&mut m, "sysctl", !l.Sysctl.is_empty(), json!(l.Sysctl));
    if let Some(r) = l.Resources.as_ref() {
        m.insert("resources".into(), resources_json(r));
    }
    insert_if(
        &mut m,
        "cgroupsPath",
        !l.CgroupsPath.is_empty(),
        json!(l.CgroupsPath),
    );
    let ns: Vec<Value> = l
        .Namespaces
        .iter()
        .map(|n| {
            let mut e = Map::new();
            e.insert("type".into(), json!(namespace_type(&n.Type)));
            insert_if(&mut e, "path", !n.Path.is_empty(), json!(n.Path));
            Value::Object(e)
        })
        .collect();
    m.insert("namespaces".into(), Value::Array(ns));
    if !l.Devices.is_empty() {
        let d: Vec<Value> = l
            .Devices
            .iter()
            .map(|d| {
                json!({"path": d.Path, "type": d.Type, "major": d.Major, "minor": d.Minor,
                       "fileMode": d.FileMode, "uid": d.UID, "gid": d.GID})
            })
            .collect();
        m.insert("devices".into(), Value::Array(d));
    }
    insert_if(
        &mut m,
        "rootfsPropagation",
        !l.RootfsPropagation.is_empty(),
        json!(l.RootfsPropagation),
    );
    insert_if(
        &mut m,
        "maskedPaths",
        !l.MaskedPaths.is_empty(),
        strings(&l.MaskedPaths),
    );
    insert_if(
        &mut m,
        "readonlyPaths",
        !l.ReadonlyPaths.is_empty(),
        strings(&l.ReadonlyPaths),
    );
    insert_if(
        &mut m,
        "mountLabel",
        !l.MountLabel.is_empty(),
        json!(l.MountLabel),
    );
    if let Some(s) = l.Seccomp.as_ref() {
        m.insert("seccomp".into(), seccomp_json(s));
    }
    Value::Object(m)
}

/// Seccomp names the agent treats specially (OCI runtime spec, config-linux.md#seccomp;
/// libseccomp's `SCMP_CMP_*` / `SCMP_ACT_*`).
const SCMP_CMP_MASKED_EQ: &str = "SCMP_CMP_MASKED_EQ";
const SCMP_ACT_NOTIFY: &str = "SCMP_ACT_NOTIFY";

/// `linux.seccomp` as the OCI runtime spec spells it; libcontainer enforces it through
/// libseccomp as runc does (installed before capabilities are dropped unless the process
/// sets `noNewPrivileges`, else just before the exec). The Kata wire message has no
/// `defaultErrnoRet` and no listener: a default `SCMP_ACT_ERRNO` answers EPERM, as in runc.
fn seccomp_json(s: &oci::LinuxSeccomp) -> Value {
    let syscalls: Vec<Value> = s
        .Syscalls
        .iter()
        .map(|c| {
            let mut e = Map::new();
            e.insert("names".into(), strings(&c.Names));
            e.insert("action".into(), json!(c.Action));
            if c.has_errnoret() {
                e.insert("errnoRet".into(), json!(c.errnoret()));
            }
            let args: Vec<Value> = c
                .Args
                .iter()
                .map(|a| {
                    // OCI (and runc) read SCMP_CMP_MASKED_EQ as `(arg & value) == valueTwo`;
                    // libcontainer 0.7 hands libseccomp `valueTwo` as the mask. Swapped
                    // here, so the filter is runc's: else Docker's `clone` rule (mask =
                    // the namespace flags, value 0) gets mask 0 and allows every clone.
                    let (value, two) = if a.Op == SCMP_CMP_MASKED_EQ {
                        (a.ValueTwo, a.Value)
                    } else {
                        (a.Value, a.ValueTwo)
                    };
                    json!({"index": a.Index, "value": value, "valueTwo": two, "op": a.Op})
                })
                .collect();
            insert_if(&mut e, "args", !args.is_empty(), Value::Array(args));
            Value::Object(e)
        })
        .collect();
    let mut m = Map::new();
    m.insert("defaultAction".into(), json!(s.DefaultAction));
    insert_if(
        &mut m,
        "architectures",
        !s.Architectures.is_empty(),
        strings(&s.Architectures),
    );
    insert_if(&mut m, "flags", !s.Flags.is_empty(), strings(&s.Flags));
    insert_if(
        &mut m,
        "syscalls",
        !syscalls.is_empty(),
        Value::Array(syscalls),
    );
    Value::Object(m)
}

/// What the agent refuses in a seccomp profile before libcontainer sees it: elements it
/// could not enforce as asked fail CreateContainer, never a silent skip.
fn check_seccomp(s: &oci::LinuxSeccomp) -> Result<(), AgentError> {
    const FIELD: &str = "OCI.Linux.Seccomp";
    if s.DefaultAction.is_empty() {
        return Err(AgentError::invalid(
            "OCI.Linux.Seccomp.DefaultAction",
            "empty",
        ));
    }
    let no_listener =
        "SCMP_ACT_NOTIFY needs a seccomp listener, which the Kata protocol cannot name";
    if s.DefaultAction == SCMP_ACT_NOTIFY {
        return Err(AgentError::invalid(FIELD, no_listener));
    }
    for (i, c) in s.Syscalls.iter().enumerate() {
        if c.Action == SCMP_ACT_NOTIFY {
            return Err(AgentError::invalid(
                format!("{FIELD}.Syscalls[{i}]"),
                no_listener,
            ));
        }
        if c.Names.is_empty() {
            return Err(AgentError::invalid(
                format!("{FIELD}.Syscalls[{i}].Names"),
                "empty",
            ));
        }
        if let Some(a) = c.Args.iter().find(|a| a.Index > 5) {
            return Err(AgentError::invalid(
                format!("{FIELD}.Syscalls[{i}].Args"),
                format!("index {} (a syscall has arguments 0 to 5)", a.Index),
            ));
        }
    }
    Ok(())
}

/// The OCI JSON of a wire spec, before parsing.
pub fn spec_json(spec: &oci::Spec) -> Value {
    let mut m = Map::new();
    m.insert(
        "ociVersion".into(),
        json!(if spec.Version.is_empty() {
            DEFAULT_OCI_VERSION
        } else {
            &spec.Version
        }),
    );
    if let Some(p) = spec.Process.as_ref() {
        m.insert("process".into(), process(p));
    }
    if let Some(r) = spec.Root.as_ref() {
        m.insert(
            "root".into(),
            json!({"path": r.Path, "readonly": r.Readonly}),
        );
    }
    insert_if(
        &mut m,
        "hostname",
        !spec.Hostname.is_empty(),
        json!(spec.Hostname),
    );
    let mounts: Vec<Value> = spec
        .Mounts
        .iter()
        .map(|mnt| {
            let mut e = Map::new();
            e.insert("destination".into(), json!(mnt.destination));
            insert_if(&mut e, "source", !mnt.source.is_empty(), json!(mnt.source));
            insert_if(&mut e, "type", !mnt.type_.is_empty(), json!(mnt.type_));
            insert_if(
                &mut e,
                "options",
                !mnt.options.is_empty(),
                strings(&mnt.options),
            );
            Value::Object(e)
        })
        .collect();
    m.insert("mounts".into(), Value::Array(mounts));
    let annotations: HashMap<&String, &String> = spec.Annotations.iter().collect();
    insert_if(
        &mut m,
        "annotations",
        !annotations.is_empty(),
        json!(annotations),
    );
    if let Some(l) = spec.Linux.as_ref() {
        m.insert("linux".into(), linux(l));
    }
    Value::Object(m)
}

/// Converts and checks a wire spec.
pub fn to_oci(spec: &oci::Spec) -> Result<Spec, AgentError> {
    to_oci_with(spec, false)
}

/// The same; with `image_defaults`, empty args are left for the guest-pulled image's
/// config to fill in (the image stage fails if it has none either).
pub fn to_oci_with(spec: &oci::Spec, image_defaults: bool) -> Result<Spec, AgentError> {
    let Some(process) = spec.Process.as_ref() else {
        return Err(AgentError::invalid("OCI.Process", "missing"));
    };
    if process.Args.is_empty() && !image_defaults {
        return Err(AgentError::invalid("OCI.Process.Args", "empty"));
    }
    if spec.Root.as_ref().is_none_or(|r| r.Path.is_empty()) {
        return Err(AgentError::invalid("OCI.Root.Path", "missing"));
    }
    if spec.Linux.is_none() {
        return Err(AgentError::invalid("OCI.Linux", "missing"));
    }
    if let Some(s) = spec.Linux.as_ref().and_then(|l| l.Seccomp.as_ref()) {
        check_seccomp(s)?;
    }
    serde_json::from_value(spec_json(spec))
        .map_err(|e| AgentError::invalid("OCI", format!("not a valid OCI runtime spec: {e}")))
}

/// An exec's process, as the OCI process JSON libcontainer reads for a tenant.
pub fn process_json(p: &oci::Process) -> Result<Value, AgentError> {
    if p.Args.is_empty() {
        return Err(AgentError::invalid("process.Args", "empty"));
    }
    let v = process(p);
    serde_json::from_value::<oci_spec::runtime::Process>(v.clone())
        .map_err(|e| AgentError::invalid("process", format!("not a valid OCI process: {e}")))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn wire() -> oci::Spec {
        let mut s = oci::Spec::new();
        let mut p = oci::Process::new();
        p.Args = vec!["/bin/true".into()];
        p.Env = vec!["PATH=/bin".into()];
        p.Cwd = "/".into();
        let mut r = oci::POSIXRlimit::new();
        r.Type = "RLIMIT_NOFILE".into();
        r.Hard = 1024;
        r.Soft = 1024;
        p.Rlimits.push(r);
        s.Process = Some(p).into();
        let mut root = oci::Root::new();
        root.Path = "rootfs".into();
        s.Root = Some(root).into();
        let mut l = oci::Linux::new();
        for t in ["pid", "mount", "ipc", "uts"] {
            let mut n = oci::LinuxNamespace::new();
            n.Type = t.into();
            l.Namespaces.push(n);
        }
        let mut res = oci::LinuxResources::new();
        let mut mem = oci::LinuxMemory::new();
        mem.Limit = 1 << 26;
        res.Memory = Some(mem).into();
        l.Resources = Some(res).into();
        s.Linux = Some(l).into();
        let mut m = oci::Mount::new();
        m.destination = "/proc".into();
        m.source = "proc".into();
        m.type_ = "proc".into();
        s.Mounts.push(m);
        s
    }

    #[test]
    fn converts_a_typical_spec() {
        let spec = to_oci(&wire()).unwrap();
        assert_eq!(spec.version(), DEFAULT_OCI_VERSION);
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &vec!["/bin/true".to_string()]);
        assert_eq!(p.rlimits().as_ref().unwrap().len(), 1);
        let l = spec.linux().as_ref().unwrap();
        assert_eq!(l.namespaces().as_ref().unwrap().len(), 4);
        let mem = l.resources().as_ref().unwrap().memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(1 << 26));
        assert_eq!(
            spec.mounts().as_ref().unwrap()[0].destination().to_str(),
            Some("/proc")
        );
    }

    #[test]
    fn both_namespace_spellings() {
        use oci_spec::runtime::LinuxNamespaceType as T;
        for (net, mnt) in [("network", "mount"), ("net", "mnt")] {
            let mut s = wire();
            let l = s.Linux.as_mut().unwrap();
            l.Namespaces[1].Type = mnt.into();
            let mut n = oci::LinuxNamespace::new();
            n.Type = net.into();
            n.Path = "/var/run/netns/x".into();
            l.Namespaces.push(n);
            let spec = to_oci(&s).unwrap();
            let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
            let types: Vec<T> = ns.iter().map(|n| n.typ()).collect();
            assert_eq!(
                types,
                [T::Pid, T::Mount, T::Ipc, T::Uts, T::Network],
                "{net}"
            );
            assert_eq!(ns[4].path().as_deref(), Some(Path::new("/var/run/netns/x")));
        }
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut s = wire();
        s.Process.as_mut().unwrap().Args.clear();
        assert!(to_oci(&s)
            .unwrap_err()
            .to_string()
            .contains("OCI.Process.Args"));
        let mut s = wire();
        s.Root = None.into();
        assert!(to_oci(&s)
            .unwrap_err()
            .to_string()
            .contains("OCI.Root.Path"));
        let mut s = wire();
        s.Linux.as_mut().unwrap().Namespaces[0].Type = "bogus".into();
        assert!(to_oci(&s).unwrap_err().to_string().contains("OCI"));
        let mut s = wire();
        s.Process.as_mut().unwrap().Rlimits[0].Type = "RLIMIT_BOGUS".into();
        assert!(to_oci(&s).is_err());
    }
}
