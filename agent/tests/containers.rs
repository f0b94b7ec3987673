//! Containers through the real agent: a busybox rootfs, libcontainer, the Kata RPCs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod;

use serde_json::json;

use pod::{busybox_rootfs, require_pod, Pod, CONTAINERD_CAPS};

#[test]
fn create_start_read_wait() {
    require_pod!();
    let pod = Pod::new();
    pod.run("c1", &["sh", "-c", "echo hello; echo oops >&2; exit 0"]);
    let err = pod
        .call("StartContainer", json!({"container_id": "c1"}))
        .unwrap_err();
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    assert_eq!(pod.read_all("c1", "c1", false), "hello\n");
    assert_eq!(pod.read_all("c1", "c1", true), "oops\n");
    assert_eq!(pod.wait("c1", "c1"), 0);
    pod.ok("RemoveContainer", json!({"container_id": "c1"}));
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
}

/// containerd names its AppArmor profile in every container's spec on a host with
/// AppArmor (upstream genpolicy's test requests carry `cri-containerd.apparmor.d`), and
/// the Kata runtime passes it through. That profile is the host's: the guest has none,
/// and kata-agent never applies one. The container runs, and the log says why the
/// profile was not applied.
#[test]
fn a_hosts_apparmor_profile_does_not_stop_the_container() {
    require_pod!();
    let pod = Pod::new();
    let mut spec = pod.spec(&["sh", "-c", "echo ran; sleep 1000"]);
    spec["Process"]["ApparmorProfile"] = json!("cri-containerd.apparmor.d");
    pod.create("aa", spec);
    pod.ok("StartContainer", json!({"container_id": "aa"}));
    assert_eq!(pod.read_until("aa", "aa", "ran\n"), "ran\n");
    // An exec naming one, likewise.
    let mut process = pod.spec(&["echo", "exec ran"])["Process"].clone();
    process["ApparmorProfile"] = json!("cri-containerd.apparmor.d");
    pod.ok(
        "ExecProcess",
        json!({"container_id": "aa", "exec_id": "e", "process": process}),
    );
    assert_eq!(pod.wait("aa", "e"), 0);
    assert_eq!(pod.read_all("aa", "e", false), "exec ran\n");
    pod.ok(
        "SignalProcess",
        json!({"container_id": "aa", "exec_id": "aa", "signal": 9}),
    );
    pod.wait("aa", "aa");
    pod.ok("RemoveContainer", json!({"container_id": "aa"}));
    let log = pod.agent_log();
    assert!(
        log.contains("AppArmor profile cri-containerd.apparmor.d not applied"),
        "{log}"
    );
}

/// The Kata runtime takes the PID namespace out of every container's spec
/// (`handlePidNamespace`: the host's has no meaning in the guest) and says with
/// `sandbox_pidns` whether the pod shares one. Without it, each container still gets a
/// PID namespace of its own, as kata-agent gives it, never the guest's.
#[test]
fn a_spec_without_a_pid_namespace_gets_its_own() {
    require_pod!();
    let pod = Pod::new();
    let mut spec = pod.spec(&["sh", "-c", "echo pid=$$"]);
    spec["Linux"]["Namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["Type"] != "pid");
    pod.create("nopid", spec);
    pod.ok("StartContainer", json!({"container_id": "nopid"}));
    assert_eq!(pod.read_all("nopid", "nopid", false), "pid=1\n");
    assert_eq!(pod.wait("nopid", "nopid"), 0);
    pod.ok("RemoveContainer", json!({"container_id": "nopid"}));
}

/// A container spec as a Kubernetes pod's reaches the agent (containerd, then the Kata
/// runtime's conversion): a systemd-style cgroups path, CPU shares with a zero quota,
/// zero memory values (unset), containerd's masked and read-only paths and default
/// capabilities, NoNewPrivileges false, an OOM score, a non-root user with an
/// additional group, the host's AppArmor profile, no PID namespace, sysfs read-only.
#[test]
fn a_kubernetes_container_spec_as_the_runtime_sends_it() {
    require_pod!();
    let pod = Pod::new();
    let script = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G) pid=$$ \
                  oom=$(cat /proc/self/oom_score_adj); \
                  cat /proc/kcore 2>/dev/null | wc -c; \
                  touch /sys/x 2>/dev/null || echo sys-ro";
    let mut spec = pod.spec(&["sh", "-c", script]);
    spec["Process"] = json!({
        "Terminal": false,
        "User": {"UID": 2, "GID": 1, "AdditionalGids": [1], "Username": ""},
        "Args": ["sh", "-c", script],
        "Env": ["PATH=/bin", "HOSTNAME=pod-a"],
        "Cwd": "/",
        "Capabilities": {"Bounding": CONTAINERD_CAPS, "Effective": CONTAINERD_CAPS,
                         "Permitted": CONTAINERD_CAPS,
                         "Inheritable": [], "Ambient": []},
        "Rlimits": [],
        "NoNewPrivileges": false,
        "ApparmorProfile": "cri-containerd.apparmor.d",
        "OOMScoreAdj": 994,
        "SelinuxLabel": ""
    });
    spec["Mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/sys", "source": "sysfs", "type": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"]
    }));
    spec["Linux"] = json!({
        "CgroupsPath": "kubepods-burstable-pod31df313a.slice:cri-containerd:k8s",
        "Resources": {
            "CPU": {"Shares": 2, "Quota": 0, "Period": 100000, "Cpus": "", "Mems": ""},
            "Memory": {"Limit": 0, "Reservation": 0, "Swap": 0, "Kernel": 0},
            "Devices": []
        },
        "Namespaces": [{"Type": "ipc", "Path": ""}, {"Type": "uts", "Path": ""},
                       {"Type": "mount", "Path": ""}],
        "MaskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                        "/sys/devices/virtual/powercap"],
        "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
        "Sysctl": {}
    });
    pod.create("k8s", spec);
    pod.ok("StartContainer", json!({"container_id": "k8s"}));
    let out = pod.read_all("k8s", "k8s", false);
    let err = pod.read_all("k8s", "k8s", true);
    assert_eq!(pod.wait("k8s", "k8s"), 0, "{out} {err}");
    assert_eq!(
        out, "uid=2 gid=1 groups=1 pid=1 oom=994\n0\nsys-ro\n",
        "{err}"
    );
    pod.ok("RemoveContainer", json!({"container_id": "k8s"}));
}

#[test]
fn non_zero_exit_and_killed_status() {
    require_pod!();
    let pod = Pod::new();
    // A host network namespace path (as the runtime may pass) is dropped in the guest.
    let mut spec = pod.spec(&["sh", "-c", "exit 42"]);
    spec["Linux"]["Namespaces"] = json!([{"Type": "pid"}, {"Type": "mount"},
        {"Type": "network", "Path": "/var/run/netns/cni-cocoon-does-not-exist"}]);
    pod.create("fail", spec);
    pod.ok("StartContainer", json!({"container_id": "fail"}));
    assert_eq!(pod.wait("fail", "fail"), 42);
    // WaitProcess on an exited init can be asked again.
    assert_eq!(pod.wait("fail", "fail"), 42);
    // A program that is not in the rootfs is refused at create, as runc does.
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "missing", "OCI": pod.spec(&["/bin/no-such-program"])}),
        )
        .unwrap_err();
    assert!(err.contains("no-such-program"), "{err}");
    assert!(!pod.run_dir.join("missing").exists());
    // An exec killed by a signal (not PID 1 of its namespace) reports 128 + signal.
    pod.run("host", &["sleep", "1000"]);
    let process = pod.spec(&["sh", "-c", "kill -SEGV $$"])["Process"].clone();
    pod.ok(
        "ExecProcess",
        json!({"container_id": "host", "exec_id": "segv", "process": process}),
    );
    assert_eq!(pod.wait("host", "segv"), 128 + 11);
}

#[test]
fn exec_stdin_and_unknown_exec_ids() {
    require_pod!();
    let pod = Pod::new();
    pod.run("box", &["sleep", "1000"]);
    let mut process = pod.spec(&["sh", "-c", "echo exec-$((6*7)); exit 5"])["Process"].clone();
    pod.ok(
        "ExecProcess",
        json!({"container_id": "box", "exec_id": "e1", "process": process.clone()}),
    );
    assert_eq!(pod.wait("box", "e1"), 5);
    // Output stays readable after WaitProcess (the shim drains it concurrently)...
    assert_eq!(pod.read_all("box", "e1", false), "exec-42\n");
    assert_eq!(pod.read_all("box", "e1", true), "");
    // ...then a waited-for, drained exec is forgotten.
    let err = pod
        .call(
            "WaitProcess",
            json!({"container_id": "box", "exec_id": "e1"}),
        )
        .unwrap_err();
    assert!(err.contains("NOT_FOUND"), "{err}");

    // stdin round trip through cat.
    process["Args"] = json!(["cat"]);
    pod.ok(
        "ExecProcess",
        json!({"container_id": "box", "exec_id": "cat", "process": process.clone()}),
    );
    pod.write_stdin("box", "cat", b"ping\n");
    assert_eq!(pod.read_until("box", "cat", "ping\n"), "ping\n");
    pod.write_stdin("box", "cat", b"pong");
    pod.ok(
        "CloseStdin",
        json!({"container_id": "box", "exec_id": "cat"}),
    );
    assert_eq!(pod.read_all("box", "cat", false), "pong");
    assert_eq!(pod.wait("box", "cat"), 0);

    // Exec ids must be unique while the process lives.
    process["Args"] = json!(["sleep", "1000"]);
    pod.ok(
        "ExecProcess",
        json!({"container_id": "box", "exec_id": "s", "process": process.clone()}),
    );
    let err = pod
        .call(
            "ExecProcess",
            json!({"container_id": "box", "exec_id": "s", "process": process.clone()}),
        )
        .unwrap_err();
    assert!(err.contains("ALREADY_EXISTS"), "{err}");
    for (method, req) in [
        (
            "WaitProcess",
            json!({"container_id": "box", "exec_id": "nope"}),
        ),
        (
            "ReadStdout",
            json!({"container_id": "box", "exec_id": "nope", "len": 10}),
        ),
        (
            "SignalProcess",
            json!({"container_id": "box", "exec_id": "nope", "signal": 9}),
        ),
        (
            "ExecProcess",
            json!({"container_id": "nobox", "exec_id": "x", "process": process}),
        ),
        ("StartContainer", json!({"container_id": "nobox"})),
        ("RemoveContainer", json!({"container_id": "nobox"})),
        (
            "WaitProcess",
            json!({"container_id": "nobox", "exec_id": "nobox"}),
        ),
    ] {
        let err = pod.call(method, req).unwrap_err();
        assert!(err.contains("NOT_FOUND"), "{method}: {err}");
    }
    pod.ok("RemoveContainer", json!({"container_id": "box"}));
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
}

#[test]
fn tty_process_and_resize() {
    require_pod!();
    let pod = Pod::new();
    pod.run("ttybox", &["sleep", "1000"]);
    let mut process = pod.spec(&["sh"])["Process"].clone();
    process["Terminal"] = json!(true);
    process["ConsoleSize"] = json!({"Height": 24, "Width": 80});
    pod.ok(
        "ExecProcess",
        json!({"container_id": "ttybox", "exec_id": "t", "process": process}),
    );
    pod.write_stdin("ttybox", "t", b"stty size; tty\n");
    let out = pod.read_until("ttybox", "t", "/dev/pts/");
    assert!(out.contains("24 80"), "{out:?}");
    pod.ok(
        "TtyWinResize",
        json!({"container_id": "ttybox", "exec_id": "t", "row": 50, "column": 132}),
    );
    pod.write_stdin("ttybox", "t", b"stty size\n");
    pod.read_until("ttybox", "t", "50 132");
    pod.write_stdin("ttybox", "t", b"exit 3\n");
    assert_eq!(pod.wait("ttybox", "t"), 3);
    // A terminal container init.
    let mut spec = pod.spec(&["sh"]);
    spec["Process"]["Terminal"] = json!(true);
    spec["Process"]["ConsoleSize"] = json!({"Height": 30, "Width": 100});
    pod.create("ttyinit", spec);
    pod.ok("StartContainer", json!({"container_id": "ttyinit"}));
    pod.write_stdin("ttyinit", "ttyinit", b"stty size; exit 6\n");
    pod.read_until("ttyinit", "ttyinit", "30 100");
    assert_eq!(pod.wait("ttyinit", "ttyinit"), 6);
    // A pipe process has no terminal to resize.
    let err = pod
        .call(
            "TtyWinResize",
            json!({"container_id": "ttybox", "exec_id": "ttybox", "row": 1, "column": 1}),
        )
        .unwrap_err();
    assert!(
        err.contains("UNAVAILABLE") && err.contains("no tty"),
        "{err}"
    );
}

#[test]
fn signal_and_kill() {
    require_pod!();
    let pod = Pod::new();
    pod.run(
        "trap",
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    pod.read_until("trap", "trap", "ready");
    pod.ok(
        "SignalProcess",
        json!({"container_id": "trap", "exec_id": "trap", "signal": 15}),
    );
    assert_eq!(pod.wait("trap", "trap"), 7);

    // An empty exec id signals every process of the container.
    let marker = format!("{}", 900_000 + std::process::id() % 99_999);
    pod.run("kill", &["sleep", &marker]);
    let mut process = pod.spec(&["sleep", &marker])["Process"].clone();
    process["Args"] = json!(["sleep", marker]);
    pod.ok(
        "ExecProcess",
        json!({"container_id": "kill", "exec_id": "k2", "process": process}),
    );
    pod.ok(
        "SignalProcess",
        json!({"container_id": "kill", "exec_id": "", "signal": 9}),
    );
    assert_eq!(pod.wait("kill", "kill"), 128 + 9);
    assert_eq!(pod.wait("kill", "k2"), 128 + 9);
    let err = pod
        .call(
            "SignalProcess",
            json!({"container_id": "kill", "exec_id": "kill", "signal": 4242}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("signal"),
        "{err}"
    );
}

#[test]
fn two_containers_share_the_pods_uts_and_ipc() {
    require_pod!();
    let pod = Pod::new();
    pod.ok(
        "CreateSandbox",
        json!({"hostname": "cocoon-pod", "sandbox_id": "sb1", "dns": ["nameserver 10.0.0.53"]}),
    );
    let err = pod
        .call("CreateSandbox", json!({"hostname": "again"}))
        .unwrap_err();
    assert!(err.contains("ALREADY_EXISTS"), "{err}");
    assert_eq!(
        std::fs::read_to_string(pod.run_dir.join("sandbox/resolv.conf")).unwrap(),
        "nameserver 10.0.0.53\n"
    );
    // Both stay alive while compared (a freed namespace's inode number is reused).
    let show =
        "hostname; for n in uts ipc pid; do readlink /proc/self/ns/$n; done; echo end; sleep 1000";
    pod.run("a", &["sh", "-c", show]);
    pod.run("b", &["sh", "-c", show]);
    let a = pod.read_until("a", "a", "end\n").replace("end\n", "");
    let b = pod.read_until("b", "b", "end\n").replace("end\n", "");
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a[0], "cocoon-pod");
    assert_eq!(b[0], "cocoon-pod");
    assert_eq!(a[1], b[1], "UTS namespace not shared");
    assert_eq!(a[2], b[2], "IPC namespace not shared");
    assert_ne!(a[3], b[3], "each container has its own PID namespace");
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    assert_ne!(a[1], host_uts.to_str().unwrap());
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_str(),
        Some("cocoon-pod")
    );
}

/// `User.Username` (and `string_user`) resolved in the container's own /etc/passwd and
/// /etc/group, with the groups that list the user, as runc does; unknown is refused.
#[test]
fn users_by_name_come_from_the_container_rootfs() {
    require_pod!();
    let pod = Pod::new();
    std::fs::write(
        pod.rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        pod.rootfs.join("etc/group"),
        "root:x:0:\napp:x:1001:\nwheel:x:10:app\n",
    )
    .unwrap();
    let mut spec = pod.spec(&["sh", "-c", "id -u; id -g; id -G"]);
    spec["Process"]["User"] = json!({"UID": 0, "GID": 0, "Username": "app"});
    pod.create("named", spec);
    pod.ok("StartContainer", json!({"container_id": "named"}));
    let out = pod.read_all("named", "named", false);
    assert_eq!(pod.wait("named", "named"), 0);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "1001", "1001", "10"],
        "{out}"
    );

    let mut spec = pod.spec(&["true"]);
    spec["Process"]["User"] = json!({"UID": 0, "GID": 0, "Username": "ghost"});
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "ghost", "exec_id": "ghost", "OCI": spec}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("ghost"),
        "{err}"
    );
    let err = pod
        .call("StartContainer", json!({"container_id": "ghost"}))
        .unwrap_err();
    assert!(err.contains("NOT_FOUND"), "{err}");

    let spec = pod.spec(&["sh", "-c", "id -u; id -g"]);
    pod.ok(
        "CreateContainer",
        json!({"container_id": "su", "exec_id": "su", "OCI": spec,
               "string_user": {"uid": "app", "gid": "wheel"}}),
    );
    pod.ok("StartContainer", json!({"container_id": "su"}));
    let out = pod.read_all("su", "su", false);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "10"],
        "{out}"
    );

    // ExecProcess: its string_user and User.Username, in the same container's files.
    pod.run("box", &["sleep", "1000"]);
    let process = pod.spec(&["sh", "-c", "id -u; id -g"])["Process"].clone();
    pod.ok(
        "ExecProcess",
        json!({"container_id": "box", "exec_id": "e-su", "process": process,
               "string_user": {"uid": "app", "gid": "wheel"}}),
    );
    let out = pod.read_all("box", "e-su", false);
    assert_eq!(pod.wait("box", "e-su"), 0);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "10"],
        "{out}"
    );
    let mut process = pod.spec(&["sh", "-c", "id -u; id -G"])["Process"].clone();
    process["User"] = json!({"UID": 0, "GID": 0, "Username": "app"});
    pod.ok(
        "ExecProcess",
        json!({"container_id": "box", "exec_id": "e-name", "process": process}),
    );
    let out = pod.read_all("box", "e-name", false);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "1001", "10"],
        "{out}"
    );
    process["User"] = json!({"UID": 0, "GID": 0, "Username": "ghost"});
    let err = pod
        .call(
            "ExecProcess",
            json!({"container_id": "box", "exec_id": "e-ghost", "process": process}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("ghost"),
        "{err}"
    );
    pod.ok("RemoveContainer", json!({"container_id": "box"}));
}

#[test]
fn copy_file_happy_path_and_escapes() {
    require_pod!();
    let pod = Pod::new();
    let shared = pod.run_dir.join("shared/containers");
    let path = shared.join("c1/etc/hostname");
    let b64 = |s: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let req = |path: &std::path::Path, mode: u32, data: &[u8], size: usize, offset: usize| {
        json!({"path": path.display().to_string(), "file_size": size, "file_mode": mode,
               "dir_mode": 0o755, "uid": 0, "gid": 0, "offset": offset, "data": b64(data)})
    };
    pod.ok("CopyFile", req(&path, 0o100644, b"pod-", 8, 0));
    pod.ok("CopyFile", req(&path, 0o100644, b"name", 8, 4));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "pod-name");
    pod.ok("CopyFile", req(&shared.join("c1/dir"), 0o40700, b"", 0, 0));
    assert!(shared.join("c1/dir").is_dir());
    // A symlink out of the shared directory is refused; one inside is made (and never
    // followed by a later CopyFile).
    let err = pod
        .call(
            "CopyFile",
            req(&shared.join("c1/link"), 0o120777, b"/", 0, 0),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("absolute"),
        "{err}"
    );
    assert!(!shared.join("c1/link").exists());
    pod.ok(
        "CopyFile",
        req(&shared.join("c1/link"), 0o120777, b"dir", 0, 0),
    );
    assert!(shared.join("c1/link").is_symlink());

    let outside = pod.dir.path().join("escaped");
    for bad in [
        shared.join("c1/../../../escaped"),
        outside.clone(),
        std::path::PathBuf::from("/etc/cocoon-escape"),
        shared.join("c1/link/cocoon-through-link"),
        shared.join("c1/link"),
    ] {
        let err = pod
            .call("CopyFile", req(&bad, 0o100644, b"x", 1, 0))
            .unwrap_err();
        assert!(
            err.contains("INVALID_ARGUMENT") && err.contains("path"),
            "{bad:?}: {err}"
        );
    }
    assert!(!outside.exists());
    assert!(!std::path::Path::new("/etc/cocoon-escape").exists());
    assert!(!shared.join("c1/dir/cocoon-through-link").exists());
}

#[test]
fn malformed_specs_and_failed_creates_leave_nothing() {
    require_pod!();
    let pod = Pod::new();
    let mut spec = pod.spec(&["true"]);
    spec["Process"]["Args"] = json!([]);
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "bad", "OCI": spec}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("OCI.Process.Args"),
        "{err}"
    );
    let mut spec = pod.spec(&["true"]);
    spec["Linux"]["Namespaces"] = json!([{"Type": "bogus"}]);
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "bad", "OCI": spec}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("OCI"),
        "{err}"
    );
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "../x", "OCI": pod.spec(&["true"])}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("container_id"),
        "{err}"
    );
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "st", "OCI": pod.spec(&["true"]),
                   "storages": [{"driver": "nfs", "mount_point": pod.run_dir.join("x").display().to_string()}]}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("driver"),
        "{err}"
    );

    // Valid, but libcontainer cannot make it: a bind mount of a missing source.
    let mut spec = pod.spec(&["true"]);
    spec["Mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/data", "source": "/nonexistent/cocoon", "type": "bind", "options": ["rbind"]
    }));
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "broken", "OCI": spec}),
        )
        .unwrap_err();
    assert!(!err.contains("OK"), "{err}");
    assert!(!pod.run_dir.join("broken").exists(), "bundle left behind");
    assert!(
        !pod.run_dir.join(".state/broken").exists(),
        "state left behind"
    );
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
    for dir in pod.cgroup_dirs() {
        assert!(
            !dir.join("broken").exists(),
            "cgroup {} left behind",
            dir.display()
        );
    }
    // The id is free again, and duplicates are refused.
    pod.create("broken", pod.spec(&["true"]));
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "broken", "OCI": pod.spec(&["true"])}),
        )
        .unwrap_err();
    assert!(err.contains("ALREADY_EXISTS"), "{err}");
}

#[test]
fn destroy_sandbox_tears_everything_down() {
    require_pod!();
    let mut pod = Pod::new();
    let mp = pod.run_dir.join("sandbox/ephemeral/vol");
    pod.ok(
        "CreateSandbox",
        json!({"hostname": "gone", "storages": [
            {"driver": "ephemeral", "source": "tmpfs", "fstype": "tmpfs",
             "mount_point": mp.display().to_string()}]}),
    );
    let marker = format!("{}", 800_000 + std::process::id() % 99_999);
    pod.run("x", &["sleep", &marker]);
    pod.run("y", &["sleep", &marker]);
    let mut process = pod.spec(&["sleep", &marker])["Process"].clone();
    process["Args"] = json!(["sleep", marker]);
    pod.ok(
        "ExecProcess",
        json!({"container_id": "y", "exec_id": "e", "process": process}),
    );
    pod.ok("PauseContainer", json!({"container_id": "x"}));
    pod.ok("ResumeContainer", json!({"container_id": "x"}));
    pod::wait_pids(&format!("sleep {marker}"), 3);
    assert!(!pod.mounts().is_empty());

    pod.ok("DestroySandbox", json!({}));
    assert!(pod.wait_agent_exit().success(), "{}", pod.agent_log());
    assert!(pod.mounts().is_empty(), "left mounted: {:?}", pod.mounts());
    assert!(
        pod::pids_with(&format!("sleep {marker}")).is_empty(),
        "processes left"
    );
    assert!(!pod.run_dir.join("x").exists() && !pod.run_dir.join("y").exists());
    for dir in pod.cgroup_dirs() {
        let children: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name())
            .collect();
        assert!(children.is_empty(), "{}: {children:?}", dir.display());
    }
}

#[test]
fn ctl_runs_an_oci_config_json() {
    require_pod!();
    let pod = Pod::new();
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0},
                    "args": ["sh", "-c", "echo from-ctl; exit 4"], "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                 {"type": "network"}]}
    });
    let addr: cocoon_ctl::Address = pod.addr.parse().unwrap();
    // Both runtimes' spellings of the namespace types (network/mount, net/mnt). One
    // rootfs each: without a /dev mount, libcontainer fills the rootfs's /dev, and a
    // second container on the same rootfs then fails ("failed to prepare rootfs").
    for (id, names) in [
        ("ctl-run-rust", cocoon_ctl::run::NamespaceNames::Rust),
        ("ctl-run-go", cocoon_ctl::run::NamespaceNames::Go),
    ] {
        let bundle = pod.dir.path().join(id);
        busybox_rootfs(&bundle);
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        let status = common::runtime()
            .block_on(cocoon_ctl::run::run_container(
                &addr,
                id,
                &bundle.join("config.json"),
                std::time::Duration::from_secs(30),
                false,
                None,
                names,
            ))
            .unwrap_or_else(|e| panic!("{names:?}: {e}"));
        assert_eq!(status, 4, "{names:?}");
        // Removed afterwards.
        let err = pod
            .call("WaitProcess", json!({"container_id": id, "exec_id": id}))
            .unwrap_err();
        assert!(err.contains("NOT_FOUND"), "{err}");
        assert!(pod.mounts().is_empty(), "{names:?}: {:?}", pod.mounts());
    }
}

/// `cocoon-ctl run --copy-rootfs`: the rootfs travels by CopyFile, as the Kata runtime
/// sends it when the VM has no shared filesystem, and the container runs from the copy.
#[test]
fn ctl_copies_the_rootfs_into_the_guest_and_runs_it() {
    require_pod!();
    let pod = Pod::new();
    let bundle = pod.dir.path().join("copied");
    std::fs::create_dir_all(&bundle).unwrap();
    let host_rootfs = busybox_rootfs(&bundle);
    std::fs::write(host_rootfs.join("etc/motd"), "copied by CopyFile\n").unwrap();
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0},
                    "args": ["sh", "-c", "grep -q CopyFile /etc/motd && test -L /bin/sh"], "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let shared = pod.run_dir.join("shared/containers");
    let addr: cocoon_ctl::Address = pod.addr.parse().unwrap();
    let status = common::runtime()
        .block_on(cocoon_ctl::run::run_container(
            &addr,
            "copied",
            &bundle.join("config.json"),
            std::time::Duration::from_secs(30),
            false,
            Some(shared.to_str().unwrap()),
            cocoon_ctl::run::NamespaceNames::Rust,
        ))
        .unwrap();
    assert_eq!(status, 0);
    let copied = shared.join("copied/rootfs");
    assert_eq!(
        std::fs::read(copied.join("bin/busybox")).unwrap(),
        std::fs::read(host_rootfs.join("bin/busybox")).unwrap(),
        "busybox arrived changed"
    );
    assert!(std::fs::symlink_metadata(copied.join("bin/sh"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(copied.join("etc/motd")).unwrap(),
        "copied by CopyFile\n"
    );
}

#[test]
fn stats_update_and_oom_event() {
    require_pod!();
    let pod = Pod::new();
    pod.run("st", &["sleep", "1000"]);
    let stats = pod.ok("StatsContainer", json!({"container_id": "st"}));
    let cg = &stats["cgroup_stats"];
    eprintln!("stats: {cg}");
    let num = |v: &serde_json::Value| -> u64 {
        v.as_str()
            .map(|s| s.parse().unwrap())
            .or_else(|| v.as_u64())
            .unwrap_or(0)
    };
    assert!(num(&cg["pids_stats"]["current"]) >= 1, "{cg}");
    assert!(num(&cg["memory_stats"]["usage"]["usage"]) > 0, "{cg}");

    pod.ok(
        "UpdateContainer",
        json!({"container_id": "st", "resources": {"Memory": {"Limit": 64 << 20}, "Pids": {"Limit": 42}}}),
    );
    let stats = pod.ok("StatsContainer", json!({"container_id": "st"}));
    let cg = &stats["cgroup_stats"];
    assert_eq!(num(&cg["pids_stats"]["limit"]), 42, "{cg}");
    assert_eq!(num(&cg["memory_stats"]["usage"]["limit"]), 64 << 20, "{cg}");
    let err = pod
        .call("StatsContainer", json!({"container_id": "nope"}))
        .unwrap_err();
    assert!(err.contains("NOT_FOUND"), "{err}");

    // A container that outgrows its memory limit: GetOOMEvent names it.
    let mut spec = pod.spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    spec["Linux"]["Resources"] = json!({"Memory": {"Limit": 16 << 20}});
    pod.create("oom", spec);
    let addr = pod.addr.clone();
    let waiter = std::thread::spawn(move || common::call(&addr, "GetOOMEvent", "{}"));
    pod.ok("StartContainer", json!({"container_id": "oom"}));
    let status = pod.wait("oom", "oom");
    if status != 128 + 9 {
        common::skip_or_fail(&format!(
            "OOM assertion: dd was not OOM-killed (status {status}; swap or no memory controller?)"
        ));
        return;
    }
    let event = waiter.join().unwrap().unwrap();
    assert_eq!(event["container_id"], "oom");
}

#[test]
fn storages_are_shared_and_unmounted_with_their_last_user() {
    require_pod!();
    let pod = Pod::new();
    let eph = pod.run_dir.join("sandbox/ephemeral/cache");
    let local = pod.run_dir.join("sandbox/local/scratch");
    let storages = json!([
        {"driver": "ephemeral", "source": "tmpfs", "fstype": "tmpfs", "options": ["size=1m"],
         "mount_point": eph.display().to_string()},
        {"driver": "local", "source": "local", "options": ["mode=0777"],
         "mount_point": local.display().to_string()}
    ]);
    let with_volume = |args: &[&str]| {
        let mut spec = pod.spec(args);
        spec["Mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/cache", "source": eph.display().to_string(), "type": "bind",
            "options": ["rbind", "rw"]
        }));
        spec
    };
    let is_mounted = |p: &std::path::Path| {
        let needle = format!(" {} ", p.display());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(&needle))
    };
    pod.ok(
        "CreateContainer",
        json!({"container_id": "w", "OCI": with_volume(&["sh", "-c", "echo shared > /cache/f"]), "storages": storages}),
    );
    pod.ok(
        "CreateContainer",
        json!({"container_id": "r", "OCI": with_volume(&["sh", "-c", "cat /cache/f"]), "storages": storages}),
    );
    assert!(is_mounted(&eph) && local.is_dir());
    pod.ok("StartContainer", json!({"container_id": "w"}));
    assert_eq!(pod.wait("w", "w"), 0);
    pod.ok("StartContainer", json!({"container_id": "r"}));
    assert_eq!(pod.read_all("r", "r", false), "shared\n");
    pod.ok("RemoveContainer", json!({"container_id": "w"}));
    assert!(is_mounted(&eph), "unmounted while still in use");
    pod.ok("RemoveContainer", json!({"container_id": "r"}));
    assert!(!is_mounted(&eph), "still mounted after its last user");
    assert!(!local.exists());
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
}

#[test]
fn sigterm_tears_containers_down() {
    require_pod!();
    let mut pod = Pod::new();
    let marker = format!("{}", 700_000 + std::process::id() % 99_999);
    pod.run("t", &["sleep", &marker]);
    pod::wait_pids(&format!("sleep {marker}"), 1);
    let pid = pod.agent.as_ref().unwrap().child.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(pod.wait_agent_exit().success(), "{}", pod.agent_log());
    assert!(
        pod::pids_with(&format!("sleep {marker}")).is_empty(),
        "container left running"
    );
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
}

#[test]
fn pure_cgroup_v2_as_in_the_guest() {
    require_pod!();
    let Some(pod) = Pod::new_v2() else {
        common::skip_or_fail("no cgroup2 hierarchy at /sys/fs/cgroup/unified");
        return;
    };
    pod.run("v2", &["sh", "-c", "cat /proc/self/cgroup; sleep 1000"]);
    let want = format!("0::/{}/v2\n", pod.cgroup_parent);
    // The v2 manager placed it (the kernel still lists the host's v1 hierarchies).
    pod.read_until("v2", "v2", &want);
    let dir = std::path::Path::new("/sys/fs/cgroup/unified")
        .join(&pod.cgroup_parent)
        .join("v2");
    assert!(dir.is_dir(), "no v2 cgroup at {}", dir.display());
    let stats = pod.ok("StatsContainer", json!({"container_id": "v2"}));
    let current = &stats["cgroup_stats"]["pids_stats"]["current"];
    assert!(
        current
            .as_str()
            .is_some_and(|c| c.parse::<u64>().unwrap() >= 1),
        "{stats}"
    );
    pod.ok("PauseContainer", json!({"container_id": "v2"}));
    let frozen = std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap();
    assert_eq!(frozen.trim(), "1");
    pod.ok("ResumeContainer", json!({"container_id": "v2"}));
    pod.ok("RemoveContainer", json!({"container_id": "v2"}));
    assert!(!dir.exists(), "cgroup left behind");
}

#[test]
fn block_device_rootfs_storage() {
    require_pod!();
    let pod = Pod::new();
    let image = pod.dir.path().join("rootfs.ext4");
    let made = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&pod.rootfs)
        .arg(&image)
        .arg("16M")
        .status();
    if !made.is_ok_and(|s| s.success()) {
        common::skip_or_fail("mkfs.ext4 -d failed (apt-get install e2fsprogs)");
        return;
    }
    let Some(dev) = common::LoopDevice::attach(&image) else {
        return;
    };
    let rootfs = pod.run_dir.join("blk/rootfs");
    let mut spec = pod.spec(&["sh", "-c", "echo from-a-block-device"]);
    spec["Root"] = json!({"Path": rootfs.display().to_string(), "Readonly": true});
    pod.ok(
        "CreateContainer",
        json!({"container_id": "blk", "OCI": spec, "storages": [
            {"driver": "blk", "source": dev.0, "fstype": "ext4", "options": ["ro"],
             "mount_point": rootfs.display().to_string()}]}),
    );
    pod.ok("StartContainer", json!({"container_id": "blk"}));
    assert_eq!(pod.read_all("blk", "blk", false), "from-a-block-device\n");
    assert_eq!(pod.wait("blk", "blk"), 0);
    pod.ok("RemoveContainer", json!({"container_id": "blk"}));
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
    assert!(!pod.run_dir.join("blk").exists(), "bundle left behind");
}

#[test]
fn sandbox_pidns_shares_the_first_containers_pid_namespace() {
    require_pod!();
    let pod = Pod::new();
    pod.ok(
        "CreateSandbox",
        json!({"hostname": "pidpod", "sandbox_pidns": true}),
    );
    let show = "readlink /proc/self/ns/pid; echo end; sleep 1000";
    pod.run("pause", &["sh", "-c", show]);
    pod.run("app", &["sh", "-c", show]);
    let a = pod.read_until("pause", "pause", "end\n");
    let b = pod.read_until("app", "app", "end\n");
    assert_eq!(a, b, "PID namespace not shared");
    // The app sees the pause container's processes.
    let mut process = pod.spec(&["ps"])["Process"].clone();
    process["Args"] = json!(["sh", "-c", "ps | grep -c 'sleep 1000'"]);
    pod.ok(
        "ExecProcess",
        json!({"container_id": "app", "exec_id": "ps", "process": process}),
    );
    let count: u32 = pod.read_all("app", "ps", false).trim().parse().unwrap();
    assert!(count >= 2, "{count}");
}

#[test]
fn block_device_into_a_container() {
    require_pod!();
    let pod = Pod::new();
    let image = pod.dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let Some(dev) = common::LoopDevice::attach(&image) else {
        return;
    };
    let spec = pod.spec(&[
        "sh",
        "-c",
        "ls -l /dev/vdz; head -c 4 /dev/vdz | od -An -tx1",
    ]);
    pod.ok(
        "CreateContainer",
        json!({"container_id": "dev", "OCI": spec, "devices": [
            {"id": "disk", "type": "blk", "vm_path": dev.0, "container_path": "/dev/vdz"}]}),
    );
    pod.ok("StartContainer", json!({"container_id": "dev"}));
    let out = pod.read_all("dev", "dev", false);
    assert!(out.starts_with('b') && out.contains(" 7,"), "{out}");
    assert!(out.contains("00 00 00 00"), "{out}");
    assert_eq!(pod.wait("dev", "dev"), 0);
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "dev2", "OCI": pod.spec(&["true"]), "devices": [
                {"id": "x", "type": "vfio-ap", "vm_path": "/dev/x", "container_path": "/dev/x"}]}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("devices[0].type"),
        "{err}"
    );
}

#[test]
fn a_paused_container_can_be_removed() {
    require_pod!();
    let pod = Pod::new();
    pod.run("p", &["sleep", "1000"]);
    pod.ok("PauseContainer", json!({"container_id": "p"}));
    let started = std::time::Instant::now();
    pod.ok(
        "RemoveContainer",
        json!({"container_id": "p", "timeout": 5}),
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(pod.mounts().is_empty(), "{:?}", pod.mounts());
}

/// Kata's Rust conversion (runtime-rs, kata-agent-ctl) names namespaces `net` and `mnt`;
/// the Go runtime `network` and `mount`. Both make the same container.
#[test]
fn both_namespace_spellings_create_a_container() {
    require_pod!();
    let pod = Pod::new();
    let show = "for n in mnt net; do readlink /proc/self/ns/$n; done; echo end";
    let host: Vec<String> = ["mnt", "net"]
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/self/ns/{n}"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for (cid, net, mnt) in [("go", "network", "mount"), ("rs", "net", "mnt")] {
        let mut spec = pod.spec(&["sh", "-c", show]);
        spec["Linux"]["Namespaces"] = json!([{"Type": "pid"}, {"Type": mnt}, {"Type": "ipc"},
            {"Type": "uts"}, {"Type": net}]);
        pod.create(cid, spec);
        pod.ok("StartContainer", json!({"container_id": cid}));
        let out = pod.read_all(cid, cid, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{cid}: {out:?}");
        assert!(
            lines[0].starts_with("mnt:[") && lines[0] != host[0],
            "{cid}: {out:?}"
        );
        assert!(
            lines[1].starts_with("net:[") && lines[1] != host[1],
            "{cid}: {out:?}"
        );
        assert_eq!(pod.wait(cid, cid), 0);
    }
    // Anything else is still refused, naming the spec.
    let mut spec = pod.spec(&["true"]);
    spec["Linux"]["Namespaces"] = json!([{"Type": "netns"}]);
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": "bad", "OCI": spec}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("netns"),
        "{err}"
    );
}

/// An empty `exec_id` is the init process for every call, as upstream's
/// `find_container_process`; the end of a stream is OK with no data; empty WriteStdin
/// data closes stdin (runtime-rs); TtyWinResize without a terminal is UNAVAILABLE.
#[test]
fn empty_exec_id_is_the_init_process_and_eof_is_ok() {
    require_pod!();
    let pod = Pod::new();
    pod.run("e", &["cat"]);
    pod.write_stdin("e", "", b"ping\n");
    assert_eq!(pod.read_until("e", "", "ping\n"), "ping\n");
    let err = pod
        .call(
            "TtyWinResize",
            json!({"container_id": "e", "exec_id": "", "row": 10, "column": 10}),
        )
        .unwrap_err();
    assert!(
        err.contains("UNAVAILABLE") && err.contains("no tty"),
        "{err}"
    );
    // Empty data: the end of stdin, cat ends.
    let v = pod.ok(
        "WriteStdin",
        json!({"container_id": "e", "exec_id": "", "data": ""}),
    );
    assert_eq!(v.get("len").and_then(|l| l.as_u64()).unwrap_or(0), 0, "{v}");
    assert_eq!(pod.wait("e", ""), 0);
    assert_eq!(pod.read_all("e", "", false), "");
    // EOF again, and on stderr: OK with empty data, never an error.
    for method in ["ReadStdout", "ReadStderr", "ReadStdout"] {
        let v = pod.ok(
            method,
            json!({"container_id": "e", "exec_id": "", "len": 100}),
        );
        assert!(pod::decode(&v["data"]).is_empty(), "{method}: {v}");
    }
    assert_eq!(pod.wait("e", "e"), 0);
    pod.ok("CloseStdin", json!({"container_id": "e", "exec_id": ""}));
    // An unknown exec id is still NOT_FOUND.
    let err = pod
        .call(
            "ReadStdout",
            json!({"container_id": "e", "exec_id": "nope", "len": 1}),
        )
        .unwrap_err();
    assert!(err.contains("NOT_FOUND"), "{err}");
}

/// SignalProcess with an empty `exec_id`: SIGKILL means every process of the container,
/// another signal only the init process (containerd's SIGTERM on delete). SIGTERM to an
/// init process without a handler becomes SIGKILL, as upstream does (PID 1 of its
/// namespace would ignore it).
#[test]
fn signal_with_an_empty_exec_id() {
    require_pod!();
    let pod = Pod::new();
    pod.run(
        "trap",
        &[
            "sh",
            "-c",
            "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    pod.read_until("trap", "", "ready");
    let process = pod.spec(&["sleep", "1000"])["Process"].clone();
    pod.ok(
        "ExecProcess",
        json!({"container_id": "trap", "exec_id": "bg", "process": process}),
    );
    pod.ok(
        "SignalProcess",
        json!({"container_id": "trap", "exec_id": "", "signal": 15}),
    );
    pod.read_until("trap", "", "got-term");
    pod.ok(
        "SignalProcess",
        json!({"container_id": "trap", "exec_id": "", "signal": 9}),
    );
    assert_eq!(pod.wait("trap", ""), 128 + 9);
    // The exec got SIGKILL with the rest, never the SIGTERM (that would be 128 + 15).
    assert_eq!(pod.wait("trap", "bg"), 128 + 9);

    // `sleep` as PID 1 has no SIGTERM handler: without the conversion it would live on.
    // (Signalled once it is `sleep`: before its exec, libcontainer's init has handlers.)
    let marker = format!("{}", 800_000 + std::process::id() % 99_999);
    pod.run("sleeper", &["sleep", &marker]);
    pod::wait_pids(&marker, 1);
    pod.ok(
        "SignalProcess",
        json!({"container_id": "sleeper", "exec_id": "sleeper", "signal": 15}),
    );
    assert_eq!(pod.wait("sleeper", "sleeper"), 128 + 9);
}

/// GetDiagnosticData `termination_log`: the file mounted at the container's
/// terminationMessagePath, read from the pod's shared directory as upstream reads it.
#[test]
fn diagnostic_data_is_the_termination_log() {
    require_pod!();
    let pod = Pod::new();
    let shared = pod.run_dir.join("shared/containers");
    std::fs::create_dir_all(&shared).unwrap();
    let log = shared.join("term-0123-termination-log");
    std::fs::write(&log, "").unwrap();
    let mut spec = pod.spec(&["sh", "-c", "echo 'it ended badly' > /dev/termination-log"]);
    spec["Mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/dev/termination-log", "source": log.display().to_string(),
        "type": "bind", "options": ["rbind", "rw"]}));
    spec["Annotations"] =
        json!({"io.kubernetes.container.terminationMessagePath": "/dev/termination-log"});
    pod.create("term", spec);
    pod.ok("StartContainer", json!({"container_id": "term"}));
    assert_eq!(pod.wait("term", "term"), 0);
    let v = pod.ok(
        "GetDiagnosticData",
        json!({"log_type": "termination_log", "container_id": "term"}),
    );
    assert_eq!(v["data"], "it ended badly\n", "{v}");
    let err = pod
        .call(
            "GetDiagnosticData",
            json!({"log_type": "kernel_log", "container_id": "term"}),
        )
        .unwrap_err();
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("kernel_log"),
        "{err}"
    );
    let err = pod
        .call(
            "GetDiagnosticData",
            json!({"log_type": "termination_log", "container_id": "nobody"}),
        )
        .unwrap_err();
    assert!(err.contains("NOT_FOUND"), "{err}");
    // A container without the annotation has no termination log to read.
    pod.run("plain", &["true"]);
    let err = pod
        .call(
            "GetDiagnosticData",
            json!({"log_type": "termination_log", "container_id": "plain"}),
        )
        .unwrap_err();
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("terminationMessagePath"),
        "{err}"
    );
}
