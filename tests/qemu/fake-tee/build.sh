#!/usr/bin/env bash
# TEST ONLY: builds the fake SEV-SNP guest modules (fake_sev_guest: /dev/sev-guest;
# fake_tsm_sev: configfs-tsm provider "sev_guest") against Debian's headers for the
# guest kernel, and a modules directory for `rootfs-builder initrd --kernel-modules`
# holding the kernel's own modules plus these two. Never use that directory for a
# production initrd: the fake devices answer with a recorded report that no real
# verifier accepts.
#
#   bash tests/qemu/fake-tee/build.sh      # after tests/qemu/setup.sh; idempotent
#   FAKE_TEE_KERNEL_BUILD=DIR bash tests/qemu/fake-tee/build.sh
#                                          # against a kernel built by
#                                          # kernel-config/build-kernel.sh --out DIR instead
#                                          # (tests/qemu/builtin-kernel.sh); leaves DIR/fake-tee/
#
# Needs build/kernel/env (tests/qemu/setup.sh). Leaves, under build/fake-tee/:
#   debs/                         linux-headers-$KVER, -common, linux-kbuild (apt-get download)
#   root/                         those, dpkg -x'ed (the system's /usr/src is not touched)
#   src/                          the module sources, fake_report.h, the built .ko files
#   modules/lib/modules/$KVER/    the kernel's modules (hard links) + extra/fake_*.ko, depmod'ed
#   env                           FAKE_TEE_MODULES=<that dir>, FAKE_TEE_MODULE_NAMES, FAKE_TEE_REPORT, FAKE_TEE_VCEK
# and prints the modules directory on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
OUT="$BUILD/fake-tee"
# The recorded report (Trustee's test-report.bin, real SEV-SNP hardware; PROVENANCE.md).
REPORT="${FAKE_TEE_REPORT:-$ROOT/attester/tests/fixtures/snp/trustee-test-report.bin}"
# The VCEK that signed it (DER), for the certificate table.
VCEK="${FAKE_TEE_VCEK:-$ROOT/attester/tests/fixtures/snp/trustee-test-vcek.der}"
MODULES=(fake_sev_guest fake_tsm_sev)
export DEBIAN_FRONTEND=noninteractive

log() { printf 'fake-tee: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

KBUILD="${FAKE_TEE_KERNEL_BUILD:-}"
if [ -n "$KBUILD" ]; then
    # A kernel of our own: its build tree is the headers, its modules-root the modules.
    KBUILD="$(cd "$KBUILD" && pwd)"
    [ -f "$KBUILD/include/config/kernel.release" ] || die "$KBUILD: not a built kernel tree"
    KVER="$(cat "$KBUILD/include/config/kernel.release")"
    KERNEL_MODULES="$KBUILD/modules-root/lib/modules/$KVER"
    [ -f "$KERNEL_MODULES/modules.builtin" ] || die "$KERNEL_MODULES: no modules_install"
    OUT="$KBUILD/fake-tee"
else
    [ -f "$BUILD/kernel/env" ] || die "no $BUILD/kernel/env: run bash tests/qemu/setup.sh first"
    # shellcheck disable=SC1091
    . "$BUILD/kernel/env"
    KVER="$KERNEL_VERSION"               # 6.12.117+deb12-amd64
    KBASE="${KVER%-amd64}"               # 6.12.117+deb12
    [ "$KBASE" != "$KVER" ] || die "unexpected kernel version $KVER (want ...-amd64)"
fi
[ "$(stat -c %s "$REPORT")" -eq 1184 ] || die "$REPORT is not a 1184-byte SEV-SNP report"

DEST="$OUT/modules/lib/modules/$KVER"
STAMP="$OUT/.stamp"
inputs_hash() {
    { echo "$KVER $KBUILD"; [ -z "$KBUILD" ] || cat "$KBUILD/.config"; cat "$HERE"/*.c "$HERE"/*.h "$HERE/Kbuild" "$REPORT" "$VCEK" "$0"; } | sha256sum | cut -d' ' -f1
}
HASH="$(inputs_hash)"
write_env() {
    cat >"$OUT/env" <<EOF
FAKE_TEE_MODULES=$DEST
FAKE_TEE_MODULE_NAMES="${MODULES[*]}"
FAKE_TEE_REPORT=$REPORT
FAKE_TEE_VCEK=$VCEK
EOF
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && [ -f "$DEST/modules.dep" ]; then
    log "modules present ($DEST)"
    write_env
    echo "$DEST"
    exit 0
fi

if [ -z "$KBUILD" ]; then
# --- headers: apt-get download + dpkg -x, cached ----------------------------------------
PKGS=("linux-headers-$KVER" "linux-headers-$KBASE-common" "linux-kbuild-$KBASE")
DEBS="$OUT/debs"
mkdir -p "$DEBS"
chmod 0755 "$OUT" "$DEBS" # lets apt drop privileges to _apt for the download
for p in "${PKGS[@]}"; do
    compgen -G "$DEBS/${p}_*.deb" >/dev/null && continue
    log "apt-get download $p"
    (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "$p" >/dev/null) || {
        as_root apt-get update -qq
        (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "$p" >/dev/null)
    } || die "cannot download $p (bookworm-security in the apt sources?)"
done
HROOT="$OUT/root"
HDR="$HROOT/usr/src/linux-headers-$KVER"
COMMON="$HROOT/usr/src/linux-headers-$KBASE-common"
if [ ! -f "$HROOT/.complete-$KVER" ]; then
    log "unpacking headers"
    rm -rf "$HROOT"
    mkdir -p "$HROOT"
    for p in "${PKGS[@]}"; do dpkg -x "$(compgen -G "$DEBS/${p}_*.deb" | head -1)" "$HROOT"; done
    touch "$HROOT/.complete-$KVER"
fi
# $HDR/Makefile is "include /usr/src/linux-headers-...-common/Makefile", an absolute path
# into the system. Running the common Makefile with -f instead is the same build (it
# finds its tree from its own location, the objects tree from -C), all inside $HROOT.
[ -f "$COMMON/Makefile" ] && [ -f "$HDR/.config" ] || die "headers incomplete under $HROOT"

# --- the compiler the kernel was built with ---------------------------------------------
CC_TEXT="$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$HDR/.config")"
CC="${CC_TEXT%% *}"                   # x86_64-linux-gnu-gcc-12
GCC_PKG="gcc-${CC##*-gcc-}"           # gcc-12
if ! command -v "$CC" >/dev/null 2>&1; then
    log "installing $GCC_PKG (the kernel was built with $CC_TEXT)"
    as_root apt-get install -y -qq --no-install-recommends "$GCC_PKG" >/dev/null ||
        { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "$GCC_PKG" >/dev/null; }
fi
have="$("$CC" --version | head -1)"
[ "$have" = "$CC_TEXT" ] || log "warning: kernel built with '$CC_TEXT', building with '$have'"
command -v make >/dev/null || die "make missing: run bash tests/qemu/setup.sh"
else
    CC=gcc
fi

# --- build ------------------------------------------------------------------------------
SRC="$OUT/src"
rm -rf "$SRC"
mkdir -p "$SRC"
cp "$HERE"/*.c "$HERE"/*.h "$HERE/Kbuild" "$SRC/"
{
    echo "/* SPDX-License-Identifier: GPL-2.0 */"
    echo "/* Generated by tests/qemu/fake-tee/build.sh from $(basename "$REPORT") and"
    echo " * $(basename "$VCEK"). TEST ONLY. */"
    c_array() { # c_array NAME LEN_MACRO FILE
        echo "#define $2 $(stat -c %s "$3")"
        echo "static const unsigned char $1[$2] = {"
        od -An -v -tx1 "$3" | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1, /g; s/^/\t/; s/ *$//'
        echo "};"
    }
    c_array fake_report FAKE_REPORT_LEN "$REPORT"
    c_array fake_vcek FAKE_VCEK_LEN "$VCEK"
} >"$SRC/fake_report.h"
log "building ${MODULES[*]} for $KVER with $CC"
# No BTF for these modules (it needs pahole, and nothing here reads it).
if [ -n "$KBUILD" ]; then
    KMAKE=(make -s -C "$KBUILD")
else
    KMAKE=(make -s -C "$HDR" -f "$COMMON/Makefile")
fi
"${KMAKE[@]}" M="$SRC" CC="$CC" CONFIG_DEBUG_INFO_BTF_MODULES= modules >"$OUT/build.log" 2>&1 || {
    cat "$OUT/build.log" >&2
    die "module build failed"
}
for m in "${MODULES[@]}"; do
    [ -f "$SRC/$m.ko" ] || die "no $SRC/$m.ko"
    vm="$(modinfo -F vermagic "$SRC/$m.ko")"
    case "$vm" in "$KVER "*) ;; *) die "$m.ko vermagic '$vm' is not for $KVER" ;; esac
done

# --- the TEST modules directory ---------------------------------------------------------
rm -rf "$OUT/modules.partial"
PART="$OUT/modules.partial/lib/modules/$KVER"
mkdir -p "$PART/extra"
# The kernel's module files as hard links (same file system; copies if not); the
# modules.* indexes as copies, since depmod rewrites them.
cp -al "$KERNEL_MODULES/kernel" "$PART/kernel" 2>/dev/null || cp -a "$KERNEL_MODULES/kernel" "$PART/kernel"
cp "$KERNEL_MODULES"/modules.* "$PART/"
for m in "${MODULES[@]}"; do cp "$SRC/$m.ko" "$PART/extra/"; done
depmod -b "$OUT/modules.partial" "$KVER"
grep -q "^extra/fake_tsm_sev.ko:.*kernel/drivers/virt/coco/tsm.ko" "$PART/modules.dep" ||
    grep -q "^kernel/drivers/virt/coco/tsm.ko$" "$PART/modules.builtin" ||
    die "depmod: fake_tsm_sev does not depend on tsm (and tsm is not built in)"
rm -rf "$OUT/modules"
mv "$OUT/modules.partial" "$OUT/modules"
echo "$HASH" >"$STAMP"
write_env
log "modules directory $DEST (modules: ${MODULES[*]})"
echo "$DEST"
