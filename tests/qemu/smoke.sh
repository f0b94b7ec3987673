#!/usr/bin/env bash
# QEMU smoke test: boots our initrd (agent as PID 1) with Debian's 6.12 kernel under
# OVMF, TCG, memfd-shared memory and vhost-user-vsock (vhost-device-vsock), then talks
# ttRPC to the agent over the hybrid-vsock socket: Health.Check -> SERVING and
# GetGuestDetails (agent is the init daemon). Nothing is left running afterwards.
#
#   bash tests/qemu/setup.sh && bash tests/qemu/smoke.sh
#
# Environment:
#   COCOON_AGENT=PATH     use this agent binary instead of building cocoon-agent
#   COCOON_CTL=PATH       use this cocoon-ctl instead of building it
#   SMOKE_BOOT_TIMEOUT=S  seconds to wait for the agent's "listening on" line (default 150)
#   SMOKE_KEEP=1          keep the work directory (initrd, console log) for inspection
#   SMOKE_INITRD_ARGS=... extra rootfs-builder initrd arguments (e.g. --busybox /bin/busybox)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
BOOT_TIMEOUT="${SMOKE_BOOT_TIMEOUT:-150}"
VSOCK_PORT=1024
GUEST_CID=3
MEM=512M

log() { printf 'smoke: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
elapsed() { echo $(( $(date +%s) - START )); }

[ -f "$BUILD/kernel/env" ] || die "no $BUILD/kernel/env: run bash tests/qemu/setup.sh first"
# shellcheck disable=SC1091
. "$BUILD/kernel/env"
for tool in qemu-system-x86_64 vhost-device-vsock; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/$tool" ] ||
        die "$tool not installed: run bash tests/qemu/setup.sh first"
done
export PATH="$PATH:$HOME/.cargo/bin"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$OVMF_CODE" ] || die "no $OVMF_CODE: run bash tests/qemu/setup.sh first"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cocoon-smoke.XXXXXX")"
CONSOLE="$WORK/console.log"
QEMU_PID="" VHOST_PID="" OK=""
START=$(date +%s)

cleanup() {
    local rc=$?
    for pid in $QEMU_PID $VHOST_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $QEMU_PID $VHOST_PID; do
        # Give each a moment, then make sure.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -z "$OK" ]; then
        log "console log ($CONSOLE):"
        if [ -f "$CONSOLE" ]; then sed 's/^/  | /' "$CONSOLE" >&2; else log "  (none)"; fi
        [ -f "$WORK/vhost.log" ] && { log "vhost-device-vsock log:"; sed 's/^/  | /' "$WORK/vhost.log" >&2; }
        rc=$(( rc == 0 ? 1 : rc ))
    fi
    if [ -n "${SMOKE_KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ------------------------------------------------------------------------------
cd "$ROOT"
# Where cargo puts binaries (CARGO_TARGET_DIR and cargo config honoured).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ -z "${COCOON_AGENT:-}" ]; then
    log "building cocoon-agent (release, musl)"
    cargo build --quiet --release --target x86_64-unknown-linux-musl -p cocoon-agent
    COCOON_AGENT="$TARGET_DIR/x86_64-unknown-linux-musl/release/cocoon-agent"
fi
if [ -z "${COCOON_CTL:-}" ]; then
    log "building cocoon-ctl"
    cargo build --quiet -p cocoon-ctl
    COCOON_CTL="$TARGET_DIR/debug/cocoon-ctl"
fi
cargo build --quiet -p rootfs-builder
RB="$TARGET_DIR/debug/rootfs-builder"

log "building the initrd (kernel $KERNEL_VERSION)"
"$RB" initrd --agent "$COCOON_AGENT" --kernel-modules "$KERNEL_MODULES" \
    ${SMOKE_INITRD_ARGS:-} -o "$WORK/initrd.img" --manifest "$WORK/manifest.json" >/dev/null
"$RB" verify --initrd "$WORK/initrd.img" --manifest "$WORK/manifest.json" >/dev/null ||
    die "initrd does not match its manifest"
log "initrd $(stat -c %s "$WORK/initrd.img") bytes"

# --- boot -------------------------------------------------------------------------------
START=$(date +%s)
vhost-device-vsock --guest-cid "$GUEST_CID" --socket "$WORK/vhost.sock" \
    --uds-path "$WORK/vsock.sock" >"$WORK/vhost.log" 2>&1 &
VHOST_PID=$!
for _ in $(seq 1 100); do [ -S "$WORK/vhost.sock" ] && break; sleep 0.1; done
[ -S "$WORK/vhost.sock" ] || die "vhost-device-vsock did not create its socket"

cp "$OVMF_VARS" "$WORK/OVMF_VARS.fd"
CMDLINE="console=ttyS0 agent.log=debug agent.log_vport=1025 panic=1"
qemu-system-x86_64 \
    -machine q35,accel=tcg,memory-backend=mem -cpu max -smp 1 -m "$MEM" \
    -object memory-backend-memfd,id=mem,size="$MEM",share=on \
    -drive if=pflash,format=raw,unit=0,file="$OVMF_CODE",readonly=on \
    -drive if=pflash,format=raw,unit=1,file="$WORK/OVMF_VARS.fd" \
    -kernel "$KERNEL_IMAGE" -initrd "$WORK/initrd.img" -append "$CMDLINE" \
    -chardev socket,id=vsock0,path="$WORK/vhost.sock" \
    -device vhost-user-vsock-pci,chardev=vsock0 \
    -nodefaults -display none -serial file:"$CONSOLE" -no-reboot \
    >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
log "QEMU pid $QEMU_PID, waiting for the agent (up to ${BOOT_TIMEOUT}s)"

# Dial only after the agent says it listens: connecting earlier hangs now and then.
while ! grep -q "listening on vsock://-1:$VSOCK_PORT" "$CONSOLE" 2>/dev/null; do
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then
        cat "$WORK/qemu.log" >&2 || true
        die "QEMU exited before the agent listened"
    fi
    [ "$(elapsed)" -lt "$BOOT_TIMEOUT" ] || die "no 'listening on' line after ${BOOT_TIMEOUT}s"
    sleep 0.5
done
log "agent listening after $(elapsed)s"

# --- talk -------------------------------------------------------------------------------
ADDR="hvsock://$WORK/vsock.sock:$VSOCK_PORT"
ctl() { timeout 60 "$COCOON_CTL" --server-address "$ADDR" "$@"; }

check_out="$(ctl Check)" || die "Health.Check failed: $check_out"
log "Check: $(echo "$check_out" | tr -d '\n')"
echo "$check_out" | grep -q SERVING || die "Health.Check did not answer SERVING"

details="$(ctl GetGuestDetails '{"mem_block_size": true}')" || die "GetGuestDetails failed: $details"
log "GetGuestDetails: $(echo "$details" | tr -d '\n' | cut -c1-300)"
python3 - "$details" <<'EOF' || die "GetGuestDetails does not report the agent as init (PID 1)"
import json, sys
doc = json.loads(sys.argv[1])
def find(o, keys):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in keys:
                return v
            r = find(v, keys)
            if r is not None:
                return r
    return None
sys.exit(0 if find(doc, ("init_daemon", "initDaemon")) is True else 1)
EOF

# A pod in the guest: CreateSandbox, then a busybox container whose rootfs travels by
# CopyFile (as the Kata runtime sends it without a shared filesystem), run by
# libcontainer inside the VM; its output comes back over ReadStdout.
ctl CreateSandbox '{"hostname": "cocoon-guest", "sandbox_id": "smoke"}' >/dev/null ||
    die "CreateSandbox failed"
BUNDLE="$WORK/bundle"
mkdir -p "$BUNDLE/rootfs/bin" "$BUNDLE/rootfs/proc" "$BUNDLE/rootfs/dev" "$BUNDLE/rootfs/tmp"
cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
ln -s busybox "$BUNDLE/rootfs/bin/sh"
cat >"$BUNDLE/config.json" <<'JSON'
{
  "ociVersion": "1.0.2",
  "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
              "env": ["PATH=/bin"],
              "args": ["sh", "-c", "echo \"hello from $(busybox hostname), kernel $(busybox uname -r), pid $$\""]},
  "root": {"path": "rootfs"},
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
             {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
             {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
             {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}],
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}
}
JSON
container_out="$(timeout 120 "$COCOON_CTL" --server-address "$ADDR" run --copy-rootfs --id smoke-c1 "$BUNDLE/config.json" 2>"$WORK/ctl-run.err")" ||
    die "the container did not run: $container_out $(cat "$WORK/ctl-run.err")"
log "container said: $container_out"
# Exactly the workload's line: nothing of the agent's own logging leaks into it.
[ "$container_out" = "hello from cocoon-guest, kernel $KERNEL_VERSION, pid 1" ] ||
    die "unexpected container output: $container_out"

# agent.log_vport=1025: the agent listens there for the host's log reader; once we
# connect, its JSON log lines come to us instead of the console.
python3 - "$WORK/vsock.sock" <<'EOF' || die "no JSON log line on vsock port 1025"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(b"CONNECT 1025\n")
buf = b""
while buf.count(b"\n") < 2:          # "OK <port>", then the first log line
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("connection closed: " + repr(buf))
    buf += chunk
ok, line = buf.split(b"\n")[:2]
assert ok.startswith(b"OK "), ok
event = json.loads(line)
print("smoke: log over vsock:", line.decode()[:200], file=sys.stderr)
assert "log reader connected" in event["message"], event
EOF
log "logs stream over vsock port 1025"

# DestroySandbox ends the agent; as PID 1 it syncs and powers the VM off, so QEMU
# (-no-reboot) exits by itself — no kernel panic ("Attempted to kill init").
ctl DestroySandbox >/dev/null || die "DestroySandbox failed"
for _ in $(seq 1 100); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$QEMU_PID" 2>/dev/null && die "the VM did not power off within 20 s of DestroySandbox"
log "DestroySandbox: the VM powered off"
grep -q "Kernel panic" "$CONSOLE" && die "kernel panic in the console log"
grep -q "reboot: Power down" "$CONSOLE" || die "no 'reboot: Power down' on the console"
log "PASS in $(elapsed)s after boot start"
OK=1
