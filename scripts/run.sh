#!/usr/bin/env bash
# The main job, as far as it goes today: build the static agent and an initrd around it,
# boot the guest under QEMU (OVMF, TCG, hybrid vsock), and talk to the agent running as
# PID 1 — Health.Check, GetGuestDetails, DestroySandbox (the VM powers off).
# Running an encrypted workload joins this once containers, KBS and image pull land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash tests/qemu/smoke.sh
