#!/usr/bin/env bash
# CopyFile throughput before and after the fd-based rewrite (issue 12): the same client
# (`cocoon-ctl copy`, 1 MiB chunks as the runtime sends them) copies one 60 MiB file and a
# tree of 2,000 4 KiB files into two agents on unix sockets — this tree's, and one built
# from OLD_REV (default 937e375^, the commit before CopyFile went through descriptors) in
# a git worktree with its own target directory. Median of RUNS each; prints both and the
# ratio.
#
# Needs root (the agent's run dir). Usage: agent/benches/copy-file.sh [RUNS]
#   env OLD_REV=<commit>, PROFILE=release|dev (default release)
set -euo pipefail
RUNS=${1:-5}
PROFILE=${PROFILE:-release}
OLD_REV=${OLD_REV:-937e375^}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
[ "$(id -u)" = 0 ] || { echo "copy-file: needs root" >&2; exit 1; }

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
cargo build --quiet --profile "$PROFILE" -p cocoon-agent -p cocoon-ctl
NEW="$TARGET_DIR/$dir/cocoon-agent"
CTL="$TARGET_DIR/$dir/cocoon-ctl"

WORK=$(mktemp -d /tmp/cocoon-copy-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    git -C "$ROOT" worktree remove --force "$WORK/old-src" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

OLD_TARGET="$TARGET_DIR/copy-file-bench-old"
git -C "$ROOT" worktree add --quiet --detach "$WORK/old-src" "$OLD_REV"
CARGO_TARGET_DIR="$OLD_TARGET" cargo build --quiet --profile "$PROFILE" \
    --manifest-path "$WORK/old-src/Cargo.toml" -p cocoon-agent
OLD="$OLD_TARGET/$dir/cocoon-agent"

# The payloads.
mkdir -p "$WORK/big" "$WORK/tree"
head -c $((60 * 1024 * 1024)) /dev/urandom >"$WORK/big/blob"
python3 - "$WORK/tree" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(20):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d}/f{f}", "wb") as fh:
            fh.write(os.urandom(4096))
PY

start_agent() { # NAME BINARY
    mkdir -p "$WORK/$1-run/shared/containers"
    KATA_AGENT_SERVER_ADDR="unix://$WORK/$1.sock" KATA_AGENT_LOG_LEVEL=warn \
        COCOON_RUN_DIR="$WORK/$1-run" "$2" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    "$CTL" -a "unix://$WORK/$1.sock" --wait 20 Check >/dev/null
}
start_agent new "$NEW"
start_agent old "$OLD"

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
secs() { python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'; }
for i in $(seq "$RUNS"); do
    for who in new old; do
        # (COCOON_RUN_DIR moves /run/kata-containers, the shared directory with it.)
        shared="$WORK/$who-run/shared/containers"
        for what in big tree; do
            "$CTL" -a "unix://$WORK/$who.sock" copy "$WORK/$what" "$shared/bench-$i-$what" |
                secs >>"$WORK/$who-$what.times"
        done
    done
done
echo "copy-file: $RUNS runs each, profile $PROFILE, old = $(git -C "$ROOT" rev-parse --short "$OLD_REV")"
for what in big tree; do
    n=$(median <"$WORK/new-$what.times"); o=$(median <"$WORK/old-$what.times")
    case $what in
        big) mib=60; label="one 60 MiB file" ;;
        tree) mib=$(python3 -c 'print(2000*4096/1048576)'); label="2,000 files of 4 KiB in 20 dirs" ;;
    esac
    python3 -c "
n, o, mib = $n, $o, $mib
print(f'  {\"$label\":32s} after {n*1000:8.1f} ms ({mib/n:6.1f} MiB/s)  before {o*1000:8.1f} ms ({mib/o:6.1f} MiB/s)  after/before {n/o:.2f}x')"
done
