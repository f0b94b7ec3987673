# Sourced by the container benchmarks (container-start.sh, seccomp.sh): needs root and
# busybox; builds the agent and cocoon-ctl (PROFILE), makes $WORK with a busybox rootfs in
# $WORK/bundle/rootfs, starts the agent on $SOCK in its own run dir and cgroup subtree
# (stopped and cleaned up on exit), and defines now_us and median. Set NAME first.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

[ "$(id -u)" = 0 ] || { echo "$NAME: needs root" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "$NAME: needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

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

start_agent() {
    SOCK="$WORK/agent.sock"
    KATA_AGENT_SERVER_ADDR="unix://$SOCK" KATA_AGENT_LOG_LEVEL=warn COCOON_RUN_DIR="$WORK/run" \
        COCOON_CGROUP_PARENT="$CGROUP" "$AGENT" >"$WORK/agent.log" 2>&1 &
    AGENT_PID=$!
    "$CTL" -a "unix://$SOCK" --wait 20 Check >/dev/null
}
now_us() { echo $(( $(date +%s%N) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
