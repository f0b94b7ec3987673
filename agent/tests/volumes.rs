//! GetVolumeStats and ResizeVolume through the real binary, on a real ext4 filesystem:
//! a loop device over a file in a temporary directory, mounted only inside the agent's
//! private mount namespace (`unshare --mount`). The loop device is detached whatever
//! happens (a Drop guard; the kernel frees it once the namespace's mount is gone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use common::{call, AgentProcess};

const MIB: u64 = 1 << 20;

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn usage(resp: &Value, unit: &str) -> (u64, u64, u64) {
    let u = resp["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == unit)
        .unwrap_or_else(|| panic!("no {unit} in {resp}"));
    // (protobuf's JSON spells u64 as strings)
    let n = |f: &str| {
        u[f].as_u64()
            .or_else(|| u[f].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    (n("total"), n("available"), n("used"))
}

fn block_count(dev: &str) -> u64 {
    let out = run(&["dumpe2fs", "-h", dev]);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    field("Block count:") * field("Block size:")
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has the capability (CapEff of /proc/self/status).
fn has_cap(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|v| v & (1 << cap) != 0)
}

#[test]
fn volume_stats_and_online_ext4_resize_on_a_loop_device() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip_or_fail("needs root (loop devices, mount namespaces)");
        return;
    }
    for p in ["losetup", "mkfs.ext4", "dumpe2fs", "unshare"] {
        if !have(p) {
            common::skip_or_fail(&format!("needs {p}"));
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vol.img");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(32 * MIB).unwrap();
    run(&["mkfs.ext4", "-q", "-F", image.to_str().unwrap()]);
    // Declared before the agent: dropped after it, once the mount is gone.
    let Some(dev) = common::LoopDevice::attach(&image) else {
        return;
    };
    let mnt: PathBuf = dir.path().join("vol");
    std::fs::create_dir(&mnt).unwrap();
    let sock = dir.path().join("agent.sock");
    let addr = format!("unix://{}", sock.display());
    let mut cmd =
        common::agent_in_private_mounts(&format!("mount -t ext4 {} {}", dev.0, mnt.display()), &[]);
    cmd.env("KATA_AGENT_SERVER_ADDR", &addr)
        .env("COCOON_RUN_DIR", dir.path().join("run"));
    let mut agent = AgentProcess::start(cmd);
    let m = mnt.to_str().unwrap();

    // Stats, as upstream answers them.
    let stats = call(
        &addr,
        "GetVolumeStats",
        &json!({"volume_guest_path": m}).to_string(),
    )
    .unwrap();
    assert_eq!(stats["volume_condition"]["message"], "OK", "{stats}");
    assert_ne!(stats["volume_condition"]["abnormal"], true, "{stats}");
    let (total, available, used) = usage(&stats, "BYTES");
    assert!(total > 16 * MIB && total <= 32 * MIB, "{stats}");
    assert!(available <= total && used == total - available, "{stats}");
    let (inodes, free_inodes, _) = usage(&stats, "INODES");
    assert!(inodes > 0 && free_inodes < inodes, "{stats}");
    // Writing to the volume shows in the stats (the file is written by the agent's
    // namespace only: through /proc/<pid>/root).
    let inside = PathBuf::from(format!("/proc/{}/root{}", agent.child.id(), m));
    std::fs::write(inside.join("data"), vec![7u8; 4 * MIB as usize]).unwrap();
    nix::unistd::sync();
    let stats2 = call(
        &addr,
        "GetVolumeStats",
        &json!({"volume_guest_path": m}).to_string(),
    )
    .unwrap();
    let (_, available2, used2) = usage(&stats2, "BYTES");
    assert!(
        used2 >= used + 4 * MIB && available2 < available,
        "{stats} {stats2}"
    );

    for (path, code) in [
        ("/nonexistent/cocoon-vol", "NOT_FOUND"),
        ("relative/vol", "INVALID_ARGUMENT"),
        ("", "INVALID_ARGUMENT"),
    ] {
        let err = call(
            &addr,
            "GetVolumeStats",
            &json!({"volume_guest_path": path}).to_string(),
        )
        .unwrap_err();
        assert!(err.contains(code), "{path}: {err}");
    }

    let resize = |path: &str, size: u64| {
        call(
            &addr,
            "ResizeVolume",
            &json!({"volume_guest_path": path, "size": size}).to_string(),
        )
    };
    // The host has not grown the device yet.
    let err = resize(m, 64 * MIB).unwrap_err();
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("has not grown the device"),
        "{err}"
    );
    // Not a mount point.
    let err = resize(dir.path().to_str().unwrap(), 64 * MIB).unwrap_err();
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("not a mount point"),
        "{err}"
    );
    assert_eq!(block_count(&dev.0), 32 * MIB);

    // The host grows the device (the backing file, then the loop device's capacity).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(96 * MIB)
        .unwrap();
    run(&["losetup", "--set-capacity", &dev.0]);
    if !has_cap(CAP_SYS_RESOURCE) {
        // The kernel's online resize needs CAP_SYS_RESOURCE (the guest's PID 1 has it).
        let err = resize(m, 64 * MIB).unwrap_err();
        assert!(
            err.contains("EXT4_IOC_RESIZE_FS") && err.contains("CAP_SYS_RESOURCE"),
            "{err}"
        );
        // Not a skip: what this host allows is checked (the refusal names the missing
        // capability); the grown filesystem itself cannot be seen here.
        eprintln!(
            "online ext4 resize: this host does not give root CAP_SYS_RESOURCE; checked the refusal, not the resize"
        );
        return;
    }
    resize(m, 64 * MIB).unwrap();
    assert_eq!(block_count(&dev.0), 64 * MIB);
    let line = agent.wait_for_line("ResizeVolume", std::time::Duration::from_secs(10));
    assert!(line.contains(&dev.0), "{line}");
    let stats3 = call(
        &addr,
        "GetVolumeStats",
        &json!({"volume_guest_path": m}).to_string(),
    )
    .unwrap();
    let (total3, _, _) = usage(&stats3, "BYTES");
    assert!(total3 > 48 * MIB && total3 <= 64 * MIB, "{stats3}");
    // Shrinking is refused; 0 grows to the whole device.
    let err = resize(m, 16 * MIB).unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("shrink"),
        "{err}"
    );
    resize(m, 0).unwrap();
    assert_eq!(block_count(&dev.0), 96 * MIB);
    // The data survived.
    assert_eq!(
        std::fs::read(inside.join("data")).unwrap().len(),
        4 * MIB as usize
    );
    drop(agent);
}

/// The agent in a private mount namespace with `<run>/sandbox/ephemeral/cache` (a 1 MiB
/// tmpfs, as an emptyDir) and `<run>/shared/containers/share` mounted.
fn agent_with_pod_mounts(dir: &Path, env: &[(&str, &str)]) -> (AgentProcess, String, PathBuf) {
    let run = dir.join("run");
    let sock = dir.join("agent.sock");
    let addr = format!("unix://{}", sock.display());
    let setup = format!(
        "mkdir -p {run}/sandbox/ephemeral/cache {run}/shared/containers/share \
         && mount -t tmpfs -o size=1m tmpfs {run}/sandbox/ephemeral/cache \
         && mount -t tmpfs tmpfs {run}/shared/containers/share",
        run = run.display()
    );
    let mut cmd = common::agent_in_private_mounts(&setup, &[]);
    cmd.env("KATA_AGENT_SERVER_ADDR", &addr)
        .env("COCOON_RUN_DIR", &run)
        .env_remove("COCOON_POLICY_CONFIDENTIAL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (AgentProcess::start(cmd), addr, run)
}

/// The super options of the mount at `mp` in the agent's namespace.
fn super_options(pid: u32, mp: &Path) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    text.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("{} is not mounted: {text}", mp.display()))
        .to_string()
}

#[test]
fn update_ephemeral_mounts_resizes_the_pods_tmpfs_and_nothing_else() {
    if !nix::unistd::Uid::effective().is_root() || !have("unshare") {
        common::skip_or_fail("needs root and unshare (mount namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, addr, run) = agent_with_pod_mounts(dir.path(), &[]);
    let pid = agent.child.id();
    let cache = run.join("sandbox/ephemeral/cache");
    assert!(super_options(pid, &cache).contains("size=1024k"));
    let storage = |driver: &str, mp: &Path, fstype: &str, options: &[&str]| {
        json!({"driver": driver, "source": fstype, "fstype": fstype,
               "mount_point": mp.to_str().unwrap(), "options": options})
    };
    let update = |storages: Vec<Value>| {
        call(
            &addr,
            "UpdateEphemeralMounts",
            &json!({ "storages": storages }).to_string(),
        )
    };
    // What the Go runtime sends after a memory hot-plug.
    update(vec![storage(
        "ephemeral",
        &cache,
        "tmpfs",
        &["remount", "size=4M", "fsgid=2000"],
    )])
    .unwrap();
    assert!(super_options(pid, &cache).contains("size=4096k"));
    let line = agent.wait_for_line("UpdateEphemeralMounts", std::time::Duration::from_secs(10));
    assert!(
        line.contains("size=4M") && !line.contains("fsgid"),
        "{line}"
    );
    // No options: only the directory.
    let fresh = run.join("sandbox/ephemeral/fresh");
    update(vec![storage("ephemeral", &fresh, "tmpfs", &[])]).unwrap();
    assert!(PathBuf::from(format!("/proc/{pid}/root{}", fresh.display())).is_dir());

    // Refused, and a valid storage in the same request is not applied either.
    let valid = storage("ephemeral", &cache, "tmpfs", &["remount", "size=8M"]);
    for (bad, text) in [
        (
            storage("local", &cache, "tmpfs", &["size=1M"]),
            "Only ephemeral storage",
        ),
        (
            storage("ephemeral", Path::new("/etc"), "tmpfs", &["size=1M"]),
            "not below",
        ),
        (
            storage(
                "ephemeral",
                &run.join("shared/containers/share"),
                "tmpfs",
                &["size=1M"],
            ),
            "not below",
        ),
        (
            storage("ephemeral", &fresh, "ext4", &["size=1M"]),
            "only a tmpfs",
        ),
    ] {
        let err = update(vec![valid.clone(), bad]).unwrap_err();
        assert!(
            err.contains("INVALID_ARGUMENT") && err.contains(text),
            "{err}"
        );
    }
    assert!(super_options(pid, &cache).contains("size=4096k"));

    // RemoveStaleVirtiofsShareMounts stats the mounts below the shared directory.
    call(&addr, "RemoveStaleVirtiofsShareMounts", "{}").unwrap();
    let line = agent.wait_for_line("stat succeeded", std::time::Duration::from_secs(10));
    assert!(line.contains("shared/containers/share"), "{line}");
}

#[test]
fn the_confidential_default_policy_refuses_update_ephemeral_mounts() {
    if !nix::unistd::Uid::effective().is_root() || !have("unshare") {
        common::skip_or_fail("needs root and unshare (mount namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr, run) =
        agent_with_pod_mounts(dir.path(), &[("COCOON_POLICY_CONFIDENTIAL", "1")]);
    let cache = run.join("sandbox/ephemeral/cache");
    let err = call(
        &addr,
        "UpdateEphemeralMounts",
        &json!({"storages": [{"driver": "ephemeral", "source": "tmpfs", "fstype": "tmpfs",
            "mount_point": cache.to_str().unwrap(), "options": ["remount", "size=4M"]}]})
        .to_string(),
    )
    .unwrap_err();
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    assert!(super_options(agent.child.id(), &cache).contains("size=1024k"));
    // Allowed by the default (as genpolicy's), and harmless.
    call(&addr, "RemoveStaleVirtiofsShareMounts", "{}").unwrap();
}
