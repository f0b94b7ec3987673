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
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

[ "$(id -u)" = 0 ] || { echo "container-start: needs root" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "container-start: needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

cargo build --quiet --profile "$PROFILE" -p cocoon-agent -p cocoon-ctl
# Where cargo puts binaries (CARGO_TARGET_DIR and cargo config honoured).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
AGENT="$TARGET_DIR/$dir/cocoon-agent"
CTL="$TARGET_DIR/$dir/cocoon-ctl"

WORK=$(mktemp -d /tmp/cocoon-bench.XXXXXX)
CGROUP="cocoon-bench-$$"
AGENT_PID=
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
    for d in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/"$CGROUP"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    grep -q "$WORK" /proc/self/mountinfo && awk -v w="$WORK" '$5 ~ w {print $5}' /proc/self/mountinfo |
        sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
[ -n "${KEEP_LOG:-}" ] && trap 'cp "$WORK/agent.log" /tmp/cocoon-bench-agent.log; cleanup' EXIT

# A busybox root filesystem.
mkdir -p "$WORK/bundle/rootfs/bin" "$WORK/bundle/rootfs/proc" "$WORK/bundle/rootfs/dev"
cp /bin/busybox "$WORK/bundle/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf busybox "$WORK/bundle/rootfs/bin/$a"
done
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

SOCK="$WORK/agent.sock"
KATA_AGENT_SERVER_ADDR="unix://$SOCK" KATA_AGENT_LOG_LEVEL=warn COCOON_RUN_DIR="$WORK/run" \
    COCOON_CGROUP_PARENT="$CGROUP" "$AGENT" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
"$CTL" -a "unix://$SOCK" --wait 20 Check >/dev/null

now_us() { echo $(( $(date +%s%N) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

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
