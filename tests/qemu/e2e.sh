#!/usr/bin/env bash
# The confidential pod end to end under QEMU (issue 11): builds the static agent, the
# test KBS, rootfs-builder and the harness, then runs `cocoon-e2e`, which starts the
# registry, the test KBS, vhost-device-vsock and QEMU, drives the Kata call sequence and
# leaves nothing running. Prints a short summary; exits non-zero on any failure.
#
#   bash tests/qemu/setup.sh && bash tests/qemu/e2e.sh [--keep | --keep-logs]
#
# With the fake TEE modules built by tests/qemu/setup.sh (build/fake-tee), the guest
# attests as SEV-SNP through the attester's real device code; without them, with the
# explicitly requested sample attester.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
log() { printf 'e2e: %s\n' "$*" >&2; }
[ -f "$BUILD/kernel/env" ] || { log "no $BUILD/kernel/env: run bash tests/qemu/setup.sh first"; exit 1; }
# shellcheck disable=SC1091
. "$BUILD/kernel/env"
export PATH="$PATH:$HOME/.cargo/bin"
cd "$ROOT"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
log "building the agent (release, musl), the test KBS, rootfs-builder and the harness"
cargo build --quiet --release --target x86_64-unknown-linux-musl -p cocoon-agent
cargo build --quiet --release -p cocoon-test-kbs -p rootfs-builder -p cocoon-qemu-e2e

MODULES="$KERNEL_MODULES"
FAKE=()
if [ -f "$BUILD/fake-tee/env" ]; then
    # shellcheck disable=SC1091
    . "$BUILD/fake-tee/env"
    MODULES="$FAKE_TEE_MODULES_DIR"
    for m in $FAKE_TEE_MODULES; do FAKE+=(--fake-tee-module "$m"); done
else
    log "no fake TEE modules ($BUILD/fake-tee/env): the guest uses the sample attester"
fi

exec "$TARGET_DIR/release/cocoon-e2e" \
    --agent "$TARGET_DIR/x86_64-unknown-linux-musl/release/cocoon-agent" \
    --rootfs-builder "$TARGET_DIR/release/rootfs-builder" \
    --test-kbs "$TARGET_DIR/release/cocoon-test-kbs" \
    --kernel "$KERNEL_IMAGE" --kernel-modules "$MODULES" \
    "${FAKE[@]}" "$@"
