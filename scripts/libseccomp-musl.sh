#!/usr/bin/env bash
# Builds libseccomp as a static library for musl, for the guest agent's seccomp
# (youki's libcontainer enforces the OCI `linux.seccomp` through it, as runc does).
# Debian ships libseccomp only for glibc, so this builds Debian's own source package
# (`apt-get source`, signature-checked by apt; a private sources list under build/, the
# machine's apt configuration is untouched) with musl-gcc. Upstream kata-agent's CI
# does the same (ci/install_libseccomp.sh).
#
#   bash scripts/libseccomp-musl.sh     # -> build/libseccomp-musl/lib/libseccomp.a
#
# Idempotent: with the library present it only checks. agent/build.rs links it into the
# musl build and fails with a pointer here when it is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
OUT="$BUILD/libseccomp-musl"
log() { printf 'libseccomp-musl: %s\n' "$*" >&2; }

if [ -f "$OUT/lib/libseccomp.a" ]; then
    log "present ($OUT/lib/libseccomp.a)"
    exit 0
fi
for tool in musl-gcc gperf make apt-get; do
    command -v "$tool" >/dev/null || { log "needs $tool (scripts/setup.sh installs it)"; exit 1; }
done

WORK="$BUILD/libseccomp-src"
rm -rf "$WORK" "$OUT.partial"
mkdir -p "$WORK/lists/partial" "$WORK/src" "$WORK/kernel-headers"
chmod 0755 "$WORK" "$WORK/src"
cat > "$WORK/cocoon.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
APT=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null
     -o Dir::Etc::sourcelist="$WORK/cocoon.sources" -o Dir::State::Lists="$WORK/lists"
     -o APT::Sandbox::User=root)
log "fetching Debian's libseccomp source package"
apt-get -qq "${APT[@]}" update
(cd "$WORK/src" && apt-get -qq "${APT[@]}" source --download-only libseccomp >/dev/null)
tar -xzf "$WORK"/src/libseccomp_*.orig.tar.gz -C "$WORK/src"
SRCDIR="$(echo "$WORK"/src/libseccomp-*/)"

# musl-gcc's include path has no Linux UAPI headers; give it Debian's (linux-libc-dev).
ln -sfn /usr/include/linux "$WORK/kernel-headers/linux"
ln -sfn /usr/include/x86_64-linux-gnu/asm "$WORK/kernel-headers/asm"
ln -sfn /usr/include/asm-generic "$WORK/kernel-headers/asm-generic"

log "building $(basename "$SRCDIR") with musl-gcc"
(
    cd "$SRCDIR"
    CC=musl-gcc CFLAGS="-O2 -isystem $WORK/kernel-headers" \
        ./configure --quiet --enable-static --disable-shared --prefix="$OUT.partial" >/dev/null
    make --quiet -j"$(nproc)" -C src >/dev/null
    make --quiet -C src install >/dev/null
    make --quiet -C include install >/dev/null
)
mv "$OUT.partial" "$OUT"
rm -rf "$WORK"
log "built $OUT/lib/libseccomp.a"
