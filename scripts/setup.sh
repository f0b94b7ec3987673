#!/usr/bin/env bash
# Installs everything Cocoon's build, tests and demo need on a fresh Debian 12 machine.
# Idempotent: a second run only checks. Called by scripts/test.sh and scripts/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
log() { printf 'setup: %s\n' "$*" >&2; }

# Build and native-test packages (the QEMU/rootfs ones are in tests/qemu/setup.sh).
PACKAGES=(
    musl-tools      # static musl build of the guest agent (C parts of dependencies)
    gperf           # building libseccomp for musl (scripts/libseccomp-musl.sh)
    libseccomp-dev  # seccomp in the native (glibc) build and tests of the agent
    busybox-static  # a real rootfs for container tests; debug shell in the initrd
    util-linux      # unshare, nsenter, losetup: PID-1 and container tests
    iproute2        # ip: the network RPC tests (veth in a private netns)
    e2fsprogs       # mkfs.ext4 -d: a container rootfs on a block device
    python3         # small helpers in scripts
    docker-registry # image-pull registry tests: a real registry on 127.0.0.1
    skopeo          # image-pull tests: push (and encrypt) test images
    apache2-utils   # htpasswd -B: bcrypt users for the basic-auth registry test
    umoci           # image-pull: the rootfs we unpack is compared with `umoci unpack`
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "rust: musl target, rustfmt, clippy"
rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1
rustup component add rustfmt clippy >/dev/null 2>&1

log "libseccomp for the static musl agent"
bash scripts/libseccomp-musl.sh

bash tests/qemu/setup.sh
