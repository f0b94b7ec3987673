# Cocoon's built-in agent policy for a confidential guest (a TEE was detected and no
# policy file was given). The host is the adversary here: it may run the pod's
# lifecycle, but not read or steer the workload.
#
# Denied: ExecProcess, ReadStream (ReadStdout/ReadStderr answer empty data),
# WriteStream, SetPolicy, GetDiagnosticData, swap, iptables, ephemeral mounts, the
# memory agent; CopyFile outside the shared containers directory.
# Confined: CreateSandbox (no guest hooks, no kernel modules, no virtio-fs storages) and
# CreateContainer (root only in its bundle or a pod storage, no OCI hooks, no namespace
# paths, bind mounts only from the pod's storages and the shared containers directory,
# only virtual file systems otherwise).
#
# `kata_run_dir` ("/run/kata-containers") is defined by the agent in a second module.
# Each denial prints why: the agent puts that after "<Request> is blocked by policy: ".
package agent_policy

import future.keywords.contains
import future.keywords.every
import future.keywords.if
import future.keywords.in

# ---- the pod lifecycle: allowed ----
default CreateContainerRequest := false
default CreateSandboxRequest := false
default DestroySandboxRequest := true
default StartContainerRequest := true
default RemoveContainerRequest := true
default WaitProcessRequest := true
default SignalProcessRequest := true
default StatsContainerRequest := true
default UpdateContainerRequest := true
default PauseContainerRequest := true
default ResumeContainerRequest := true
default TtyWinResizeRequest := true
default CloseStdinRequest := true
default GetOOMEventRequest := true
default GuestDetailsRequest := true
default GetMetricsRequest := true
default OnlineCPUMemRequest := true
default MemHotplugByProbeRequest := true
default ReseedRandomDevRequest := true
default SetGuestDateTimeRequest := true
default UpdateInterfaceRequest := true
default UpdateRoutesRequest := true
default ListInterfacesRequest := true
default ListRoutesRequest := true
default AddARPNeighborsRequest := true
default VolumeStatsRequest := true
default ResizeVolumeRequest := true
default RemoveStaleVirtiofsShareMountsRequest := true

# ---- reading or steering the workload: denied ----
default ExecProcessRequest := false
default ReadStreamRequest := false
default WriteStreamRequest := false
default SetPolicyRequest := false
default GetDiagnosticDataRequest := false
default CopyFileRequest := false
default UpdateEphemeralMountsRequest := false
default AddSwapRequest := false
default AddSwapPathRequest := false
default GetIPTablesRequest := false
default SetIPTablesRequest := false
default MemAgentMemcgConfig := false
default MemAgentCompactConfig := false

denied_by_default := "denied in a confidential guest by the agent's default policy"

ExecProcessRequest if {
	print("ExecProcessRequest:", denied_by_default)
	false
}

ReadStreamRequest if {
	print("ReadStreamRequest:", denied_by_default)
	false
}

WriteStreamRequest if {
	print("WriteStreamRequest:", denied_by_default)
	false
}

SetPolicyRequest if {
	print("SetPolicyRequest:", denied_by_default)
	false
}

# ---- paths ----
shared_dir := concat("", [kata_run_dir, "/shared/containers"])

has_dotdot(p) if {
	some c in split(p, "/")
	c == ".."
}

# `p` is `dir` or below it, with no `..` on the way.
under(p, dir) if {
	not has_dotdot(p)
	p == dir
}

under(p, dir) if {
	not has_dotdot(p)
	startswith(p, concat("", [dir, "/"]))
}

# Prints the problems found, if any; true when there are none.
report(name, problems) if {
	count(problems) == 0
}

report(name, problems) if {
	count(problems) > 0
	print(name, concat("; ", sort(problems)))
	false
}

# ---- storages ----
storage_problems(storages) := {msg |
	some s in storages
	is_virtio_fs(s)
	msg := sprintf("storage %s: host-shared (virtio-fs) storages are not allowed", [s.mount_point])
}

is_virtio_fs(s) if s.driver == "virtio-fs"

is_virtio_fs(s) if s.fstype == "virtiofs"

# Mount points of the sandbox's storages (recorded by CreateSandbox) and this request's.
sandbox_mount_points := mps if {
	mps := data.pstate.sandbox_storages
} else := []

pod_mount_points := array.concat(sandbox_mount_points, [s.mount_point | some s in input.storages])

under_pod_storage(p) if {
	some mp in pod_mount_points
	mp != ""
	under(p, mp)
}

# ---- CreateSandbox ----
sandbox_problems contains "guest hooks are not allowed" if input.guest_hook_path != ""

sandbox_problems contains "kernel modules are not allowed" if count(input.kernel_modules) > 0

sandbox_problems contains msg if {
	some msg in storage_problems(input.storages)
}

CreateSandboxRequest := {"allowed": true, "ops": [record_storages]} if {
	report("CreateSandboxRequest:", sandbox_problems)
	record_storages := {
		"op": "add",
		"path": "/pstate/sandbox_storages",
		"value": [s.mount_point | some s in input.storages],
	}
}

# ---- CreateContainer ----
root_path := input.OCI.Root.Path

bundle := concat("/", [kata_run_dir, input.container_id])

root_ok if {
	# Relative: inside the bundle.
	root_path != ""
	not startswith(root_path, "/")
	not has_dotdot(root_path)
}

root_ok if under(root_path, bundle)

root_ok if under_pod_storage(root_path)

container_problems contains "missing OCI spec" if is_null(input.OCI)

container_problems contains msg if {
	input.container_id in {"shared", "sandbox"}
	msg := sprintf("container id %s names one of the agent's own directories", [input.container_id])
}

container_problems contains msg if {
	not is_null(input.OCI)
	not root_ok
	msg := sprintf("root %s is neither in the container's bundle nor in a storage of the pod", [root_path])
}

container_problems contains "OCI hooks are not allowed" if {
	hooks := input.OCI.Hooks
	not is_null(hooks)
	some _, list in hooks
	count(list) > 0
}

container_problems contains msg if {
	some ns in input.OCI.Linux.Namespaces
	ns.Path != ""
	msg := sprintf("namespace %s: a path (%s) is not allowed; the agent sets up the pod's namespaces", [ns.Type, ns.Path])
}

container_problems contains msg if {
	some m in input.OCI.Mounts
	is_bind(m)
	not bind_source_ok(m.source)
	msg := sprintf("bind mount %s: source %s is neither in the shared containers directory nor in a storage of the pod", [m.destination, m.source])
}

container_problems contains msg if {
	some m in input.OCI.Mounts
	not is_bind(m)
	not m.type_ in virtual_fs
	msg := sprintf("mount %s: type %s is not allowed", [m.destination, m.type_])
}

container_problems contains msg if {
	some msg in storage_problems(input.storages)
}

virtual_fs := {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}

is_bind(m) if m.type_ == "bind"

is_bind(m) if "bind" in m.options

is_bind(m) if "rbind" in m.options

bind_source_ok(src) if under(src, shared_dir)

bind_source_ok(src) if under_pod_storage(src)

CreateContainerRequest if report("CreateContainerRequest:", container_problems)

# ---- CopyFile: only into the shared containers directory ----
copy_problems contains msg if {
	not under(input.path, shared_dir)
	msg := sprintf("%s is outside %s", [input.path, shared_dir])
}

copy_problems contains msg if {
	input.path == shared_dir
	msg := sprintf("%s itself cannot be replaced", [shared_dir])
}

copy_problems contains msg if {
	not input.file_type in {"Regular", "Directory", "Symlink"}
	msg := sprintf("file type %s is not allowed", [input.file_type])
}

# A symlink stays inside the directory it is copied to (the kubelet's `..data` links).
copy_problems contains msg if {
	input.file_type == "Symlink"
	not relative_inside(input.symlink_target)
	msg := sprintf("symlink target %s leaves the shared containers directory", [input.symlink_target])
}

relative_inside(t) if {
	t != ""
	not startswith(t, "/")
	not has_dotdot(t)
}

CopyFileRequest if report("CopyFileRequest:", copy_problems)
