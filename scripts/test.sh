#!/usr/bin/env bash
# The test command: installs what it needs, then formatting, clippy -D warnings, every
# crate's tests (including the agent as PID 1 in fresh namespaces), the QEMU smoke
# test that boots the real guest, and the confidential pod end to end under QEMU. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "setup"
bash scripts/setup.sh

step "rustfmt"
cargo fmt --all -- --check

step "clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "fuzz targets: built (stable, no sanitizer) and run 5 s each"
bash fuzz/run.sh 5

step "QEMU smoke test: boot the guest, agent as PID 1 over hybrid vsock"
bash tests/qemu/smoke.sh

step "QEMU fake TEE: the attester's device and configfs code, initdata match/mismatch in the VM"
bash tests/qemu/fake-tee/check.sh

step "QEMU confidential pod: attest, pull an encrypted image, unseal secrets, run it"
bash tests/qemu/e2e.sh

step "all passed"
