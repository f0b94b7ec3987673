#!/usr/bin/env bash
# Builds a guest kernel of our own, Kata-style: kernel-config's base fragment with the
# builtin fragment (vsock, virtio, ext4, overlay and the report drivers built in, as in
# Kata's guest kernel) and the trim fragment (no hardware a VM never has), from Debian's
# linux-source-6.12; then the TEST ONLY fake TEE modules against it. With it, the e2e
# run measures start-up without module loads before the agent listens (issue 11):
#
#   bash tests/qemu/builtin-kernel.sh      # ~40 min on 2 cores the first time; idempotent
#   COCOON_KERNEL_ENV=build/kernel-builtin/env \
#   COCOON_FAKE_TEE_ENV=build/kernel-builtin/fake-tee/env \
#       bash tests/qemu/e2e.sh --startup-runs 5
#
# Not run by CI (the build alone is longer than CI's budget); needs tests/qemu/setup.sh.
# Leaves build/kernel-builtin/ (the build tree, modules-root/, env, fake-tee/) and the
# full source under build/kernel-src-full/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
OUT="$BUILD/kernel-builtin"
SRC_DIR="$BUILD/kernel-src-full"
SRC="$SRC_DIR/linux-source-6.12"
log() { printf 'builtin-kernel: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
export DEBIAN_FRONTEND=noninteractive

# What a kernel build needs beyond tests/qemu/setup.sh.
need=()
for p in build-essential flex bison bc libelf-dev libssl-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

# Debian's patched 6.12 source, the whole tree (setup.sh keeps only its Kconfig files).
if [ ! -f "$SRC_DIR/.complete" ]; then
    log "fetching linux-source-6.12"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    chmod 0755 "$tmp" # lets apt drop privileges to _apt for the download
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root linux-source-6.12 >/dev/null) || {
        as_root apt-get update -qq
        (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root linux-source-6.12 >/dev/null)
    } || die "cannot download linux-source-6.12"
    dpkg -x "$tmp"/*.deb "$tmp/pkg"
    rm -rf "$SRC_DIR"
    mkdir -p "$SRC_DIR"
    tar -xJf "$tmp"/pkg/usr/src/linux-source-6.12.tar.xz -C "$SRC_DIR"
    touch "$SRC_DIR/.complete"
fi

# The kernel (make is incremental: a second run only relinks what changed).
bash "$ROOT/kernel-config/build-kernel.sh" --source "$SRC" --out "$OUT" \
    --fragment base --fragment builtin --fragment trim >"$OUT.log" 2>&1 ||
    { tail -30 "$OUT.log" >&2; die "kernel build failed (log: $OUT.log)"; }
KVER="$(cat "$OUT/include/config/kernel.release")"
depmod -b "$OUT/modules-root" "$KVER"
cat >"$OUT/env" <<EOF
KERNEL_VERSION=$KVER
KERNEL_IMAGE=$OUT/arch/x86/boot/bzImage
KERNEL_MODULES=$OUT/modules-root/lib/modules/$KVER
KERNEL_CONFIG=$OUT/.config
EOF

# TEST ONLY: the fake SEV-SNP devices, built against this tree.
FAKE_TEE_KERNEL_BUILD="$OUT" bash "$ROOT/tests/qemu/fake-tee/build.sh" >/dev/null
log "kernel $KVER: $OUT/env, fake TEE modules: $OUT/fake-tee/env"
