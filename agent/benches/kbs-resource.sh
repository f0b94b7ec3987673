#!/usr/bin/env bash
# KBS resource fetches through the agent, side by side, against the test KBS on loopback
# (cocoon-test-kbs, a faithful double of Trustee's RCAR 0.4.0 KBS) with the sample attester.
# Each fetch is a `GET /cdh/resource/...` on the agent's workload REST API (curl's total time).
#
#   cold: a fresh agent's first fetch (handshake auth+attest, then the resource), median of N
#   warm: later fetches on the same session, median of N
#   20 resources: ours (one agent: 1 handshake + 20 fetches, summed) against upstream's
#         pattern (a full handshake per resource: 20 cold fetches, summed), and the ratio
#
# Usage: agent/benches/kbs-resource.sh [RUNS]   (env PROFILE=release|dev, default release)
set -euo pipefail

RUNS=${1:-50}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
command -v curl >/dev/null || { echo "kbs-resource: needs curl" >&2; exit 1; }

cargo build --quiet --profile "$PROFILE" -p cocoon-agent -p cocoon-test-kbs
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
AGENT="$TARGET/$dir/cocoon-agent"
KBS="$TARGET/$dir/cocoon-test-kbs"

WORK=$(mktemp -d /tmp/cocoon-kbs-bench.XXXXXX)
KBS_PID=
AGENT_PID=
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
    [ -n "$KBS_PID" ] && kill "$KBS_PID" 2>/dev/null && wait "$KBS_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/res/default/bench"
for i in $(seq 0 19); do head -c 32 /dev/urandom >"$WORK/res/default/bench/$i"; done
"$KBS" --listen 127.0.0.1:0 --resources "$WORK/res" >"$WORK/kbs.out" 2>&1 &
KBS_PID=$!
for _ in $(seq 200); do grep -q '^listening on' "$WORK/kbs.out" 2>/dev/null && break; sleep 0.01; done
KBS_URL=$(sed -n 's/^listening on //p' "$WORK/kbs.out")
[ -n "$KBS_URL" ] || { echo "test KBS did not start" >&2; cat "$WORK/kbs.out" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/agent.toml" <<EOF
attester = "sample"
aa_kbc_params = "cc_kbc::$KBS_URL"
guest_components_rest_api = "resource"
guest_components_rest_api_addr = "127.0.0.1:$port"
log_level = "warn"
EOF

start_agent() {
    KATA_AGENT_SERVER_ADDR="unix://$WORK/agent.sock" COCOON_RUN_DIR="$WORK/run" \
        "$AGENT" --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
    AGENT_PID=$!
    for _ in $(seq 500); do
        curl -s -o /dev/null "http://127.0.0.1:$port/info" && return 0
        sleep 0.005
    done
    echo "agent did not serve its REST API" >&2; cat "$WORK/agent.log" >&2; exit 1
}
stop_agent() { kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=; }
fetch() { # prints seconds
    curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/cdh/resource/default/bench/$1"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
sum() { awk '{s+=$1} END {print s}'; }
ms() { awk '{printf "%.2f", $1*1000}'; }

: >"$WORK/cold"
for _ in $(seq "$RUNS"); do start_agent; fetch 0 >>"$WORK/cold"; stop_agent; done
start_agent
fetch 0 >/dev/null
: >"$WORK/warm"
for i in $(seq "$RUNS"); do fetch $((i % 20)) >>"$WORK/warm"; done
stop_agent
start_agent
ours20=$(for i in $(seq 0 19); do fetch "$i"; done | sum)
stop_agent
hs=$(curl -s "$KBS_URL/test/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["handshakes"])')
upstream20=$(head -n 20 "$WORK/cold" | sum)

cold=$(median <"$WORK/cold" | ms)
warm=$(median <"$WORK/warm" | ms)
printf 'KBS resource fetch through the agent (test KBS on loopback, sample attester, %s runs, %s)\n' "$RUNS" "$PROFILE"
printf '  cold (handshake + first resource), median: %s ms   (goal <= 20 ms)\n' "$cold"
printf '  warm (same session), median:              %s ms   (goal <= 2 ms)\n' "$warm"
printf '  20 resources, ours (1 handshake):         %s ms\n' "$(echo "$ours20" | ms)"
printf '  20 resources, a handshake each (upstream):%s ms\n' " $(echo "$upstream20" | ms)"
printf '  ratio upstream/ours:                      %sx\n' "$(awk -v a="$upstream20" -v b="$ours20" 'BEGIN {printf "%.1f", a/b}')"
printf '  handshakes the KBS counted in total:      %s (expected %s)\n' "$hs" "$((RUNS + 2))"
