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
NAME=seccomp-bench
. "$(dirname "$0")/common.sh"

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

start_agent

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
