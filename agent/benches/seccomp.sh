#!/usr/bin/env bash
# The cost of a seccomp filter at container start: create + start + wait (+ remove) of a
# `true` container through the agent with `cocoon-ctl run`, with containerd's default
# profile (agent/tests/data/seccomp/default-amd64.json, no noNewPrivileges, as Kubernetes'
# RuntimeDefault) and without any, alternating, median over N runs each. Prints both and
# the ratio.
#
# Needs root, busybox-static (for the rootfs) and util-linux (unshare).
# Usage: agent/benches/seccomp.sh [RUNS]   (env PROFILE=release|dev, default release)
set -euo pipefail

RUNS=${1:-50}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

[ "$(id -u)" = 0 ] || { echo "seccomp-bench: needs root" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "seccomp-bench: needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

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
python3 - "$WORK/bundle" "$ROOT/agent/tests/data/seccomp/default-amd64.json" <<'PY'
import json, sys
bundle, profile = sys.argv[1], sys.argv[2]
spec = {"ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
                    "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": False},
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "linux": {"namespaces": [{"type": t} for t in ["pid", "mount", "ipc", "uts", "network"]]}}
json.dump(spec, open(f"{bundle}/none.json", "w"))
# (The profile is in the wire's spelling; cocoon-ctl matches field names without case.)
spec["linux"]["seccomp"] = json.load(open(profile))
json.dump(spec, open(f"{bundle}/default.json", "w"))
PY

SOCK="$WORK/agent.sock"
KATA_AGENT_SERVER_ADDR="unix://$SOCK" KATA_AGENT_LOG_LEVEL=warn COCOON_RUN_DIR="$WORK/run" \
    COCOON_CGROUP_PARENT="$CGROUP" "$AGENT" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
"$CTL" -a "unix://$SOCK" --wait 20 Check >/dev/null

now_us() { echo $(( $(date +%s%N) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

# One warm-up run each.
"$CTL" -a "unix://$SOCK" run --id warm-none "$WORK/bundle/none.json"
"$CTL" -a "unix://$SOCK" run --id warm-default "$WORK/bundle/default.json"

: >"$WORK/none.times"; : >"$WORK/default.times"
for i in $(seq "$RUNS"); do
    for p in none default; do
        t0=$(now_us)
        "$CTL" -a "unix://$SOCK" run --id "bench-$p-$i" "$WORK/bundle/$p.json"
        echo $(( $(now_us) - t0 )) >>"$WORK/$p.times"
    done
done
none=$(median <"$WORK/none.times")
default=$(median <"$WORK/default.times")
echo "seccomp-bench: $RUNS runs each, profile $PROFILE"
echo "  containerd's default seccomp profile: median ${default} us"
echo "  no seccomp:                           median ${none} us"
awk -v a="$default" -v f="$none" 'BEGIN {printf "  ratio default/none: %.2fx (+%d us)\n", a / f, a - f}'
