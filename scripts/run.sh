#!/usr/bin/env bash
# The main job, as far as it goes today: build the static agent and an initrd around it,
# boot the guest under QEMU (OVMF, TCG, hybrid vsock), talk to the agent running as
# PID 1 (Health.Check, GetGuestDetails), create a sandbox, copy a busybox rootfs in and
# run a container in the VM, print its output, and power the VM off (DestroySandbox).
# The workload becomes an *encrypted* image once the KBS and image-pull work lands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash tests/qemu/smoke.sh
