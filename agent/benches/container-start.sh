#!/usr/bin/env bash
# Container start-up through the agent: create + start + wait (+ remove) of a `true`
# container with `cocoon-ctl run`, median over N runs, against the floor
# `unshare --fork --pid --mount chroot <rootfs> true`. Prints both and the ratio.
#
# Needs root, busybox-static (for the rootfs) and util-linux (unshare).
# Usage: agent/benches/container-start.sh [RUNS]   (env PROFILE=release|dev, default release)
set -euo pipefail

RUNS=${1:-50}
PROFILE=${PROFILE:-release}
NAME=container-start
. "$(dirname "$0")/common.sh"

cat > "$WORK/bundle/config.json" <<'JSON'
{"ociVersion": "1.0.2",
 "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
             "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": true},
 "root": {"path": "rootfs", "readonly": true},
 "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
 "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                          {"type": "uts"}, {"type": "network"}]}}
JSON

start_agent

# One warm-up run each.
"$CTL" -a "unix://$SOCK" run --id warm "$WORK/bundle/config.json"
unshare --fork --pid --mount chroot "$WORK/bundle/rootfs" /bin/true

: >"$WORK/agent.times"; : >"$WORK/floor.times"; : >"$WORK/floor-ns.times"
for i in $(seq "$RUNS"); do
    t0=$(now_us)
    "$CTL" -a "unix://$SOCK" run --id "bench-$i" "$WORK/bundle/config.json"
    echo $(( $(now_us) - t0 )) >>"$WORK/agent.times"
done
for i in $(seq "$RUNS"); do
    t0=$(now_us)
    unshare --fork --pid --mount chroot "$WORK/bundle/rootfs" /bin/true
    echo $(( $(now_us) - t0 )) >>"$WORK/floor.times"
done

# The same namespaces as the container (pid, mount, ipc, uts, network), for reference.
for i in $(seq "$RUNS"); do
    t0=$(now_us)
    unshare --fork --pid --mount --ipc --uts --net chroot "$WORK/bundle/rootfs" /bin/true
    echo $(( $(now_us) - t0 )) >>"$WORK/floor-ns.times"
done

agent=$(median <"$WORK/agent.times")
floor_ns=$(median <"$WORK/floor-ns.times")
floor=$(median <"$WORK/floor.times")
echo "container-start: $RUNS runs, profile $PROFILE"
echo "  agent (cocoon-ctl run: create+start+wait+remove): median ${agent} us"
echo "  floor (unshare --fork --pid --mount chroot true):  median ${floor} us"
echo "  same namespaces (+ --ipc --uts --net):          median ${floor_ns} us"
awk -v a="$agent" -v f="$floor" 'BEGIN {printf "  ratio agent/floor: %.1fx\n", a / f}'
