#!/usr/bin/env bash
# Image pull, side by side (issue 9): a generated ~1 GiB (uncompressed) image in six gzip
# layers, encrypted by skopeo (jwe, RSA-OAEP), in a local Debian docker-registry.
#
#   ours:          cocoon-image-pull's `pull` example: registry → sha256 → ocicrypt
#                  decrypt (AES-CTR + HMAC) → gunzip → diff_id → safe unpack, 3 layers at
#                  a time (the default), into a layer store
#   ours, 1 job:   the same with --jobs 1
#   gzip floor:    `gzip -dc` of the same (unencrypted) gzip layers to /dev/null, one
#                  after the other (and 3 at a time, the same parallelism as ours)
#   skopeo+umoci:  `skopeo copy --decryption-key` to an OCI layout, then `umoci unpack`
#                  (what a user would do instead)
#
# Every contender writes into the same tmpfs (a new directory under $BENCH_DIR, default
# /dev/shm): a Kata guest's /run is tmpfs too. Each runs RUNS times (default 3); the median
# wall time counts. Caches are warm (the registry's blobs are in the page cache).
#
# Usage: image-pull/benches/pull.sh [RUNS]   (env SIZE_MIB=1024, BENCH_DIR=/dev/shm/...)
# Needs root (umoci unpack and our unpack keep owners), docker-registry, skopeo, umoci,
# openssl, python3, GNU time (/usr/bin/time, for CPU seconds).
set -euo pipefail

RUNS=${1:-3}
SIZE_MIB=${SIZE_MIB:-1024}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
for t in docker-registry skopeo umoci openssl python3 gzip /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "pull.sh: needs $t (scripts/setup.sh)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "pull.sh: needs root (owners are kept)" >&2; exit 1; }

cargo build --quiet --release -p cocoon-image-pull --example pull
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
PULL="$TARGET/release/examples/pull"

WORK=$(mktemp -d /tmp/cocoon-pull-bench.XXXXXX)
mkdir -p "${BENCH_DIR:=/dev/shm}"
OUT=$(mktemp -d "$BENCH_DIR/cocoon-pull-bench.XXXXXX")
REG_PID=
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
    rm -rf "$WORK" "$OUT"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

# The image: tars, gzip -6 (two at a time), an OCI layout, pushed encrypted.
echo "generating ~$SIZE_MIB MiB in six layers under $WORK ..." >&2
python3 "$ROOT/image-pull/benches/gen-image.py" "$WORK/tars" "$SIZE_MIB" >&2
ls "$WORK"/tars/layer-*.tar | xargs -P 2 -n 1 gzip -6 -n -k
python3 - "$WORK/tars" "$WORK/src" <<'EOF'
import hashlib, json, os, shutil, sys
tars, out = sys.argv[1], sys.argv[2]
os.makedirs(f"{out}/blobs/sha256")
def blob(data=None, path=None):
    h = hashlib.sha256()
    if path:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        shutil.copyfile(path, f"{out}/blobs/sha256/{h.hexdigest()}")
        size = os.path.getsize(path)
    else:
        h.update(data)
        with open(f"{out}/blobs/sha256/{h.hexdigest()}", "wb") as f:
            f.write(data)
        size = len(data)
    return "sha256:" + h.hexdigest(), size
n = len([f for f in os.listdir(tars) if f.endswith(".tar")])
diff_ids, layers = [], []
for i in range(1, n + 1):
    h = hashlib.sha256()
    with open(f"{tars}/layer-{i}.tar", "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    diff_ids.append("sha256:" + h.hexdigest())
    d, size = blob(path=f"{tars}/layer-{i}.tar.gz")
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": size})
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/busybox", "true"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd, cs = blob(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                       "layers": layers}).encode()
md, ms = blob(manifest)
with open(f"{out}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
with open(f"{out}/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
EOF
rm -f "$WORK"/tars/layer-*.tar
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
openssl rsa -pubout -in "$WORK/key.pem" -out "$WORK/pub.pem" 2>/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break
    sleep 0.05
done
IMAGE="127.0.0.1:$port/bench:enc"
skopeo copy --quiet --dest-tls-verify=false --encryption-key "jwe:$WORK/pub.pem" \
    "oci:$WORK/src:v1" "docker://$IMAGE"
tar_bytes=$(for f in "$WORK"/tars/layer-*.tar.gz; do gzip -l "$f" | awk 'NR==2 {print $2}'; done |
    awk '{s+=$1} END {print s}')
gz_bytes=$(cat "$WORK"/tars/layer-*.tar.gz | wc -c)
echo "image: $(ls "$WORK"/tars/*.tar.gz | wc -l) layers, $((tar_bytes >> 20)) MiB of tar," \
    "$((gz_bytes >> 20)) MiB gzip (then encrypted); output on $(df --output=fstype "$OUT" | tail -1)" >&2

: >"$WORK/ours" >"$WORK/ours1" >"$WORK/rss" >"$WORK/rss1" >"$WORK/floor" >"$WORK/floor3"
: >"$WORK/skopeo" >"$WORK/umoci" >"$WORK/both" >"$WORK/cpu" >"$WORK/cpu1" >"$WORK/cpu_floor"
: >"$WORK/cpu_skopeo" >"$WORK/cpu_umoci"
for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS ..." >&2
    for jobs in 3 1; do
        rm -rf "$OUT/store"
        t0=$(now)
        /usr/bin/time -f '%U %S' -o "$WORK/cpu.txt" \
            "$PULL" --insecure "127.0.0.1:$port" --key "$WORK/key.pem" --jobs "$jobs" \
            --store "$OUT/store" "$IMAGE" >"$WORK/pull.json"
        t1=$(now)
        suffix=$([ "$jobs" = 1 ] && echo 1 || true)
        awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}' >>"$WORK/ours$suffix"
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["peak_rss_kib"])' \
            "$WORK/pull.json" >>"$WORK/rss$suffix"
        awk '{print $1+$2}' "$WORK/cpu.txt" >>"$WORK/cpu$suffix"
        rm -rf "$OUT/store"
    done

    t0=$(now)
    /usr/bin/time -f '%U %S' -o "$WORK/cpu.txt" \
        sh -c 'for f in "$@"; do gzip -dc "$f" >/dev/null; done' sh "$WORK"/tars/layer-*.tar.gz
    awk '{print $1+$2}' "$WORK/cpu.txt" >>"$WORK/cpu_floor"
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}' >>"$WORK/floor"
    t0=$(now)
    ls "$WORK"/tars/layer-*.tar.gz | xargs -P 3 -n 1 sh -c 'gzip -dc "$0" >/dev/null'
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}' >>"$WORK/floor3"

    rm -rf "$OUT/layout" "$OUT/bundle"
    t0=$(now)
    /usr/bin/time -f '%U %S' -o "$WORK/cpu.txt" \
        skopeo copy --quiet --src-tls-verify=false --decryption-key "$WORK/key.pem" \
        "docker://$IMAGE" "oci:$OUT/layout:enc"
    t1=$(now)
    awk '{print $1+$2}' "$WORK/cpu.txt" >>"$WORK/cpu_skopeo"
    /usr/bin/time -f '%U %S' -o "$WORK/cpu.txt" \
        umoci unpack --image "$OUT/layout:enc" "$OUT/bundle" >/dev/null
    t2=$(now)
    awk '{print $1+$2}' "$WORK/cpu.txt" >>"$WORK/cpu_umoci"
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}' >>"$WORK/skopeo"
    awk -v a="$t1" -v b="$t2" 'BEGIN {print b-a}' >>"$WORK/umoci"
    awk -v a="$t0" -v b="$t2" 'BEGIN {print b-a}' >>"$WORK/both"
    rm -rf "$OUT/layout" "$OUT/bundle"
done

ours=$(median <"$WORK/ours")
ours1=$(median <"$WORK/ours1")
rss=$(sort -g "$WORK/rss" | tail -1)
rss1=$(sort -g "$WORK/rss1" | tail -1)
floor=$(median <"$WORK/floor")
floor3=$(median <"$WORK/floor3")
sk=$(median <"$WORK/skopeo")
um=$(median <"$WORK/umoci")
both=$(median <"$WORK/both")
mib=$((tar_bytes >> 20))
printf '\nImage pull: %s MiB of tar in %s gzip layers, encrypted (jwe RSA-OAEP), local registry,\n' \
    "$mib" "$(ls "$WORK"/tars/*.tar.gz | wc -l)"
printf 'output on %s, %s runs, median wall seconds (all runs: see below)\n\n' \
    "$(df --output=fstype "$OUT" | tail -1 | tr -d ' ')" "$RUNS"
printf '| | seconds | MiB/s of tar | ours / this | peak RSS |\n| --- | --- | --- | --- | --- |\n'
row() { printf '| %s | %.2f | %.0f | %s | %s |\n' "$1" "$2" "$(awk -v m="$mib" -v t="$2" 'BEGIN {print m/t}')" "$3" "$4"; }
row "ours (3 layers at a time)" "$ours" "1.00" "$((rss / 1024)) MiB ($rss KiB)"
row "ours, --jobs 1" "$ours1" "$(ratio "$ours" "$ours1")" "$((rss1 / 1024)) MiB ($rss1 KiB)"
row "gzip floor: gzip -dc, one layer after another" "$floor" "$(ratio "$ours" "$floor")" ""
row "gzip floor: gzip -dc, 3 at a time" "$floor3" "$(ratio "$ours" "$floor3")" ""
row "skopeo copy --decryption-key + umoci unpack" "$both" "$(ratio "$ours" "$both")" ""
row "  of which skopeo copy" "$sk" "" ""
row "  of which umoci unpack" "$um" "" ""
printf '\nGoals: ours <= 1.3x the gzip floor: %s (%sx, sequential floor); ours, 1 job: %sx\n' \
    "$(awk -v a="$ours" -v b="$floor" 'BEGIN {print (a/b <= 1.3) ? "met" : "MISSED"}')" \
    "$(ratio "$ours" "$floor")" "$(ratio "$ours1" "$floor")"
printf '       >= 2x faster than skopeo+umoci: %s (%sx)\n' \
    "$(awk -v a="$ours" -v b="$both" 'BEGIN {print (b/a >= 2) ? "met" : "MISSED"}')" \
    "$(ratio "$both" "$ours")"
printf '       peak RSS <= 64 MiB: %s (%s KiB)\n' \
    "$(awk -v r="$rss" 'BEGIN {print (r <= 65536) ? "met" : "MISSED"}')" "$rss"
printf '\nCPU seconds (user+sys), medians: ours %s, ours --jobs 1 %s, gzip -dc %s, skopeo %s, umoci %s\n' \
    "$(median <"$WORK/cpu")" "$(median <"$WORK/cpu1")" "$(median <"$WORK/cpu_floor")" \
    "$(median <"$WORK/cpu_skopeo")" "$(median <"$WORK/cpu_umoci")"
for f in ours ours1 floor floor3 skopeo umoci both rss rss1 cpu cpu1 cpu_floor cpu_skopeo cpu_umoci; do
    printf '%-7s %s\n' "$f:" "$(tr '\n' ' ' <"$WORK/$f")"
done
