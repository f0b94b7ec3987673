#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (stable toolchain, no sanitizer), one at a time.
# Corpora live in fuzz/corpus/<target>/ (not committed), seeded from fuzz/seeds/<target>/.
# Exits non-zero on the first crash, printing the crash file.
set -euo pipefail
secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    echo "== $t (${secs}s)"
    log="artifacts/$t/last.log"
    # `time` reports the CPU (user + system) the run cost, into its own file.
    if ! { TIMEFORMAT='%U %S'; time cargo fuzz run "$t" --sanitizer none "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; } 2>"artifacts/$t/cpu"; then
        tail -40 "$log"
        crash=$(grep -o "artifacts/$t/[a-z-]*-[0-9a-f]*" "$log" | tail -1 || true)
        echo "fuzz/run.sh: $t FAILED; crash file: fuzz/${crash:-artifacts/$t/}" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$log" | tr '\n' ' '
    echo "cpu_seconds=$(awk '{ printf "%d", $1 + $2 }' "artifacts/$t/cpu") corpus=$(find "corpus/$t" -type f | wc -l)"
done
echo "fuzz/run.sh: all targets ran ${secs}s without a crash"
