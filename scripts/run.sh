#!/usr/bin/env bash
# The main job: a confidential pod under QEMU. Builds the static agent and an initrd
# around it (its config measured with it), boots the guest (OVMF, TCG, hybrid vsock; a
# fake SEV-SNP device answering with a recorded report, test-only), starts a registry and
# the test KBS on loopback (the guest reaches exactly these two), then drives the Kata
# call sequence: the guest attests, pulls and decrypts an encrypted image with the key
# the KBS released, unseals a sealed env var and a sealed secret volume, runs the
# workload and shows its output; the denied key, a tampered layer and ExecProcess are
# refused; DestroySandbox powers the VM off. Prints a short summary and where the logs
# are. (tests/qemu/smoke.sh is the plain boot test.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash tests/qemu/e2e.sh --keep-logs "$@"
