#!/usr/bin/env bash
# Installs what the rootfs-builder/kernel-config tests and the QEMU smoke test need.
# Idempotent: a second run only checks. CI runs it on fresh Debian 12 machines.
#
#   bash tests/qemu/setup.sh            # everything
#   COCOON_SKIP_VSOCK=1 bash tests/qemu/setup.sh   # skip `cargo install vhost-device-vsock`
#
# What it leaves behind (all under build/, which is gitignored):
#   build/kernel/current        -> the unpacked Debian 6.12 kernel package (dpkg -x root)
#   build/kernel/env            shell variables: KERNEL_VERSION, KERNEL_IMAGE, KERNEL_MODULES, KERNEL_CONFIG
#   build/kernel-configs/       Debian's amd64 configs for 6.1 and 6.12 (from linux-config-6.x)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Debian packages -------------------------------------------------------------------
# --no-install-recommends: with recommends, qemu-system-x86 drags in Debian's qemu-utils,
# which would replace a newer one on the machine.
PACKAGES=(
    qemu-system-x86    # the smoke test's VMM
    ovmf               # OVMF firmware for pflash boot and SNP measurement inputs
    cpio               # cross-checks our newc writer (`cpio -t`)
    libarchive-tools   # bsdcpio / bsdtar: a second independent reader
    cryptsetup-bin     # veritysetup: dm-verity hash trees
    erofs-utils        # mkfs.erofs
    e2fsprogs          # mkfs.ext4 -d
    busybox-static     # optional debug shell in the initrd
    kmod               # depmod -b
    xz-utils zstd gzip # decompressing and comparing artefacts in scripts
    socat              # hybrid-vsock handshakes in scripts
    python3            # small helpers in the smoke test
    make flex bison bc # kconfig: kernel-config/build-kernel.sh --config-only in CI
)
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "Debian packages present"
fi

# --- vhost-device-vsock (hybrid vsock backend; no kernel vhost-vsock here) --------------
if [ -z "${COCOON_SKIP_VSOCK:-}" ]; then
    if command -v vhost-device-vsock >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/vhost-device-vsock" ]; then
        log "vhost-device-vsock present"
    else
        log "cargo install --locked vhost-device-vsock (a few minutes)"
        cargo install --locked --quiet vhost-device-vsock
    fi
fi

# --- Debian kernel packages -------------------------------------------------------------
# Downloads the newest Debian package named by a meta-package and unpacks it with dpkg -x.
# `apt-get download` needs no root and installs nothing.
fetch_deb() { # fetch_deb PACKAGE DESTDIR
    local pkg="$1" dest="$2" tmp
    tmp="$(mktemp -d)"
    chmod 0755 "$tmp" # lets apt drop privileges to _apt for the download
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null) || {
        as_root apt-get update -qq
        (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null)
    }
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial"
    dpkg -x "$tmp"/*.deb "$dest.partial"
    rm -rf "$dest" "$tmp"
    mv "$dest.partial" "$dest"
}

# The guest kernel for the smoke test: Debian's 6.12 (bookworm-security).
KMETA=linux-image-6.12-amd64
if ! apt-cache show "$KMETA" >/dev/null 2>&1; then
    as_root apt-get update -qq
fi
KPKG="$(apt-cache depends "$KMETA" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')"
if [ -z "$KPKG" ]; then
    log "cannot resolve $KMETA: is bookworm-security in /etc/apt/sources.list*?"
    exit 1
fi
KVER="${KPKG#linux-image-}"
KDIR="$BUILD/kernel/$KVER"
if [ ! -f "$KDIR/.complete" ]; then
    log "fetching $KPKG"
    fetch_deb "$KPKG" "$KDIR"
    # modules.dep etc. are made by postinst, which dpkg -x does not run.
    depmod -b "$KDIR" "$KVER"
    touch "$KDIR/.complete"
else
    log "kernel $KVER present"
fi
ln -sfn "$KVER" "$BUILD/kernel/current"
cat >"$BUILD/kernel/env" <<EOF
KERNEL_VERSION=$KVER
KERNEL_IMAGE=$KDIR/boot/vmlinuz-$KVER
KERNEL_MODULES=$KDIR/lib/modules/$KVER
KERNEL_CONFIG=$KDIR/boot/config-$KVER
EOF

# Debian's configs for kernel-config's tests (small packages: no image needed).
CDIR="$BUILD/kernel-configs"
mkdir -p "$CDIR"
for series in 6.1 6.12; do
    out="$CDIR/config-$series-amd64"
    [ -s "$out" ] && continue
    log "fetching linux-config-$series"
    fetch_deb "linux-config-$series" "$CDIR/pkg-$series"
    xz -dc "$CDIR/pkg-$series/usr/src/linux-config-$series/config.amd64_none_amd64.xz" >"$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$CDIR/pkg-$series"
done

# Kconfig files of Debian's 6.12 source (not the whole tree: enough for
# `make olddefconfig`, which CI runs through kernel-config/build-kernel.sh --config-only).
SDIR="$BUILD/kernel-src"
if [ ! -f "$SDIR/.complete" ]; then
    log "fetching linux-source-6.12 (Kconfig files only)"
    fetch_deb linux-source-6.12 "$SDIR.pkg"
    rm -rf "$SDIR"
    mkdir -p "$SDIR"
    tar -xJf "$SDIR.pkg/usr/src/linux-source-6.12.tar.xz" -C "$SDIR" --wildcards \
        '*Kconfig*' '*/scripts/*' '*Makefile*' '*/arch/x86/configs/*' '*/include/*'
    rm -rf "$SDIR.pkg"
    touch "$SDIR/.complete"
else
    log "kernel source (Kconfig) present"
fi
echo "KERNEL_SRC=$SDIR/linux-source-6.12" >>"$BUILD/kernel/env"

# TEST ONLY fake SEV-SNP devices for the guest kernel (tests/qemu/README.md, "fake-tee"):
# Debian's headers for $KVER, gcc, two modules, a test modules directory. Quick when built.
if [ -z "${COCOON_SKIP_FAKE_TEE:-}" ]; then
    bash "$ROOT/tests/qemu/fake-tee/build.sh" >/dev/null
fi

log "done (kernel $KVER; configs in $CDIR)"
