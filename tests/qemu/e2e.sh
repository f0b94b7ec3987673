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
# explicitly requested sample attester (also with COCOON_E2E_FAKE_TEE=0).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
log() { printf 'e2e: %s\n' "$*" >&2; }
# The guest kernel and the fake TEE modules built for it: Debian's (tests/qemu/setup.sh),
# or another kernel's (tests/qemu/builtin-kernel.sh prints the two files to name).
KERNEL_ENV="${COCOON_KERNEL_ENV:-$BUILD/kernel/env}"
FAKE_TEE_ENV="${COCOON_FAKE_TEE_ENV:-$BUILD/fake-tee/env}"
[ -f "$KERNEL_ENV" ] || { log "no $KERNEL_ENV: run bash tests/qemu/setup.sh first"; exit 1; }
# shellcheck disable=SC1090
. "$KERNEL_ENV"
export PATH="$PATH:$HOME/.cargo/bin"
cd "$ROOT"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
log "building the agent (release, musl), the test KBS, rootfs-builder and the harness"
cargo build --quiet --release --target x86_64-unknown-linux-musl -p cocoon-agent
cargo build --quiet --release -p cocoon-test-kbs -p rootfs-builder -p cocoon-qemu-e2e

MODULES="$KERNEL_MODULES"
FAKE=()
if [ -f "$FAKE_TEE_ENV" ] && [ "${COCOON_E2E_FAKE_TEE:-1}" != 0 ]; then
    # shellcheck disable=SC1090
    . "$FAKE_TEE_ENV"
    MODULES="$FAKE_TEE_MODULES"
    for m in $FAKE_TEE_MODULE_NAMES; do FAKE+=(--fake-tee-module "$m"); done
else
    log "no fake TEE modules ($FAKE_TEE_ENV): the guest uses the sample attester"
fi

# The confidential default policy, with stream reads allowed so that the test can read
# the workload's output (ExecProcess stays denied). Measured: it is in the initrd.
POLICY="$(mktemp "${TMPDIR:-/tmp}/cocoon-e2e-policy.XXXXXX.rego")"
trap 'rm -f "$POLICY"' EXIT
sed 's/^default ReadStreamRequest := false$/default ReadStreamRequest := true/' \
    agent/src/policy/default.rego >"$POLICY"
grep -q '^default ReadStreamRequest := true$' "$POLICY" ||
    { log "agent/src/policy/default.rego changed: cannot derive the test policy"; exit 1; }
# The built-in policy gets this from the agent; a policy file defines it itself.
echo 'kata_run_dir := "/run/kata-containers"' >>"$POLICY"

"$TARGET_DIR/release/cocoon-e2e" \
    --agent "$TARGET_DIR/x86_64-unknown-linux-musl/release/cocoon-agent" \
    --rootfs-builder "$TARGET_DIR/release/rootfs-builder" \
    --test-kbs "$TARGET_DIR/release/cocoon-test-kbs" \
    --kernel "$KERNEL_IMAGE" --kernel-modules "$MODULES" \
    --policy "$POLICY" "${FAKE[@]}" "$@"
