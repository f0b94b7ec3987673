#!/usr/bin/env bash
# Benchmark: our initrd (size, build time) against a Kata-style rootfs image built from
# the same content the way Kata's osbuilder image_builder.sh does: an ext4 image whose
# size is rounded up to a multiple of 128 MiB (kata-containers#8009), plus its dm-verity
# tree. Prints bytes and seconds side by side with the ratio.
#
#   bash tests/qemu/setup.sh && bash tests/qemu/bench-initrd.sh
#
# Content (a superset of what the e2e test needs): the release musl agent, every module
# Debian's 6.12 kernel builds as =m for an option of the base and confidential
# fragments (`kernel-config modules`: vsock, virtio-blk/net, overlay, ext4, erofs,
# dm-crypt, netfilter, sev-guest, tdx-guest, tsm, ...) with their dependencies, the
# built-in pause bundle, the host's CA bundle, and busybox (debug console).
# COCOON_AGENT=PATH skips building the agent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
[ -f "$BUILD/kernel/env" ] || { echo "run bash tests/qemu/setup.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$BUILD/kernel/env"
cd "$ROOT"
# Where cargo puts binaries (CARGO_TARGET_DIR and cargo config honoured).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

if [ -z "${COCOON_AGENT:-}" ]; then
    cargo build --quiet --release --target x86_64-unknown-linux-musl -p cocoon-agent
    COCOON_AGENT="$TARGET_DIR/x86_64-unknown-linux-musl/release/cocoon-agent"
fi
cargo build --quiet --release -p rootfs-builder -p kernel-config
RB="$TARGET_DIR/release/rootfs-builder"
mapfile -t MODS < <("$TARGET_DIR/release/kernel-config" modules --config "$KERNEL_CONFIG")
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cocoon-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

CONTENT=(--agent "$COCOON_AGENT" --kernel-modules "$KERNEL_MODULES")
for m in "${MODS[@]}"; do CONTENT+=(--module "$m"); done
[ -f /etc/ssl/certs/ca-certificates.crt ] && CONTENT+=(--ca-certs /etc/ssl/certs/ca-certificates.crt)
[ -x /bin/busybox ] && CONTENT+=(--busybox /bin/busybox)

now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

# Ours: gzip (default) and zstd initrds.
t0=$(now); "$RB" initrd "${CONTENT[@]}" -o "$WORK/initrd.gz" >/dev/null 2>&1; t1=$(now)
"$RB" initrd "${CONTENT[@]}" --compression zstd -o "$WORK/initrd.zst" >/dev/null 2>&1; t2=$(now)
gz_bytes=$(stat -c %s "$WORK/initrd.gz"); gz_s=$(secs "$t0" "$t1")
zst_bytes=$(stat -c %s "$WORK/initrd.zst"); zst_s=$(secs "$t1" "$t2")
# Ours as a verity rootfs (erofs) for comparison with an image.
t3=$(now); "$RB" rootfs "${CONTENT[@]}" --format erofs -o "$WORK/rootfs.erofs" >/dev/null 2>&1; t4=$(now)
erofs_bytes=$(stat -c %s "$WORK/rootfs.erofs"); erofs_s=$(secs "$t3" "$t4")

# Kata-style: stage the same files, mkfs.ext4 into an image rounded up to 128 MiB, verity.
t5=$(now)
mkdir -p "$WORK/kata-rootfs"
( cd "$WORK/kata-rootfs" && "$RB" initrd "${CONTENT[@]}" --compression none -o "$WORK/plain.cpio" >/dev/null 2>&1 &&
  cpio -idm --quiet --no-absolute-filenames <"$WORK/plain.cpio" 2>/dev/null || true )
content_mb=$(du -sm "$WORK/kata-rootfs" | cut -f1)
# image_builder.sh: rootfs size plus filesystem overhead, aligned up to 128 MiB.
img_mb=$(( ( (content_mb + content_mb / 10 + 8) + 127 ) / 128 * 128 ))
mkfs.ext4 -q -F -b 4096 -d "$WORK/kata-rootfs" "$WORK/kata.img" "${img_mb}M" >/dev/null 2>&1
veritysetup format --no-superblock --hash-offset=$(( img_mb * 1024 * 1024 )) \
    "$WORK/kata.img" "$WORK/kata.img" >/dev/null
t6=$(now)
kata_bytes=$(stat -c %s "$WORK/kata.img"); kata_s=$(secs "$t5" "$t6")

echo "content: agent $(stat -c %s "$COCOON_AGENT") bytes, $(grep -c '\.ko$' <(cpio -it --quiet <"$WORK/plain.cpio")) kernel modules, pause bundle, CA bundle, busybox"
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.1f}x')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1048576:.2f}')" "$1"; }
printf '%-36s %14s %9s %9s %12s\n' artefact bytes MiB seconds "kata/ours"
printf '%-36s %14s %9s %9s %12s\n' "ours: initrd (gzip -9)" "$gz_bytes" "$(mib "$gz_bytes")" "$gz_s" "$(ratio "$kata_bytes" "$gz_bytes")"
printf '%-36s %14s %9s %9s %12s\n' "ours: initrd (zstd -19)" "$zst_bytes" "$(mib "$zst_bytes")" "$zst_s" "$(ratio "$kata_bytes" "$zst_bytes")"
printf '%-36s %14s %9s %9s %12s\n' "ours: erofs + dm-verity" "$erofs_bytes" "$(mib "$erofs_bytes")" "$erofs_s" "$(ratio "$kata_bytes" "$erofs_bytes")"
printf '%-36s %14s %9s %9s %12s\n' "kata-style: ext4 128MiB-aligned+verity" "$kata_bytes" "$(mib "$kata_bytes")" "$kata_s" "1.0x"
limit=$(( 16 * 1024 * 1024 ))
if [ "$gz_bytes" -le "$limit" ]; then
    echo "goal: initrd <= 16 MiB compressed: met ($(mib "$gz_bytes") MiB)"
else
    echo "goal: initrd <= 16 MiB compressed: MISSED ($(mib "$gz_bytes") MiB)"
    exit 1
fi
