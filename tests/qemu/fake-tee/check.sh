#!/usr/bin/env bash
# TEST ONLY: boots the guest (as tests/qemu/smoke.sh does: OVMF, TCG, vhost-device-vsock)
# with an initrd holding the fake SEV-SNP modules, and proves that the attester's real
# code runs against them inside the VM:
#
#   1. the agent loads fake_sev_guest and fake_tsm_sev and its start-up probe finds
#      SEV-SNP ("attestation probe: ... TEE snp ..."); the host set HOST_DATA (fw_cfg
#      opt/cocoon/fake-tee/host_data) to the digest of the initdata on a virtio disk, and
#      the agent finds them matching; GetGuestDetails says tee=snp and initdata=verified;
#   2. /dev/sev-guest: a container asks the agent's workload REST API for evidence
#      (GET /aa/evidence, attestation mode; the KBS address is configured but never
#      dialled), which the agent makes with SNP_GET_EXT_REPORT: the evidence is Trustee's
#      SNP shape and its report_data is the container's runtime data;
#   3. configfs-tsm: a container mounts configfs on /sys/kernel/config and runs
#      `cocoon-agent attest --attester snp` (no /dev/sev-guest in the container): the
#      attester falls back to the sev_guest provider, and report_data is ours again;
#   4. the runtime data of 2. is the RCAR binding of a session with cocoon-test-kbs
#      --accept-evidence snp-test on the host (auth as tee snp, SHA-384 of the canonical
#      {additional-evidence, nonce, tee-pubkey}): the host posts the VM's evidence with the
#      initdata as init-data to /kbs/v0/attest and gets a token (tee snp,
#      signature_verified false); other init-data or report data is refused. The guest does
#      not reach the KBS itself here (no guest network): the harness of issue 11 does that;
#   5. a second boot, the host setting HOST_DATA (fw_cfg opt/cocoon/fake-tee/host_data)
#      and giving no initdata: the agent reads HOST_DATA through /dev/sev-guest and
#      refuses to start, naming it.
#
#   bash tests/qemu/setup.sh && bash tests/qemu/fake-tee/check.sh
#
# Environment: COCOON_AGENT, COCOON_CTL, COCOON_ROOTFS_BUILDER, COCOON_TEST_KBS (use given
# binaries), CHECK_BOOT_TIMEOUT (default 150 s), CHECK_KEEP=1 (keep the work directory).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BUILD="${COCOON_BUILD_DIR:-$ROOT/build}"
BOOT_TIMEOUT="${CHECK_BOOT_TIMEOUT:-150}"
VSOCK_PORT=1024
GUEST_CID=3
MEM=512M

log() { printf 'fake-tee check: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
elapsed() { echo $(( $(date +%s) - START )); }

[ -f "$BUILD/kernel/env" ] || die "no $BUILD/kernel/env: run bash tests/qemu/setup.sh first"
# shellcheck disable=SC1091
. "$BUILD/kernel/env"
export PATH="$PATH:$HOME/.cargo/bin"
for tool in qemu-system-x86_64 vhost-device-vsock; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not installed: run bash tests/qemu/setup.sh first"
done
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$OVMF_CODE" ] || die "no $OVMF_CODE: run bash tests/qemu/setup.sh first"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cocoon-fake-tee.XXXXXX")"
CONSOLE="$WORK/console.log"
QEMU_PID="" VHOST_PID="" KBS_PID="" OK=""
START=$(date +%s)

cleanup() {
    local rc=$?
    for pid in $QEMU_PID $VHOST_PID $KBS_PID; do kill "$pid" 2>/dev/null || true; done
    for pid in $QEMU_PID $VHOST_PID $KBS_PID; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -z "$OK" ]; then
        log "console log ($CONSOLE):"
        if [ -f "$CONSOLE" ]; then sed 's/^/  | /' "$CONSOLE" >&2; else log "  (none)"; fi
        rc=$(( rc == 0 ? 1 : rc ))
    fi
    if [ -n "${CHECK_KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ------------------------------------------------------------------------------
cd "$ROOT"
FAKE_MODULES="$(bash "$HERE/build.sh")"
# shellcheck disable=SC1091
. "$BUILD/fake-tee/env"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ -z "${COCOON_AGENT:-}" ]; then
    log "building cocoon-agent (release, musl)"
    cargo build --quiet --release --target x86_64-unknown-linux-musl -p cocoon-agent
    COCOON_AGENT="$TARGET_DIR/x86_64-unknown-linux-musl/release/cocoon-agent"
fi
if [ -z "${COCOON_CTL:-}" ]; then
    cargo build --quiet -p cocoon-ctl
    COCOON_CTL="$TARGET_DIR/debug/cocoon-ctl"
fi
if [ -z "${COCOON_TEST_KBS:-}" ]; then
    cargo build --quiet -p cocoon-test-kbs
    COCOON_TEST_KBS="$TARGET_DIR/debug/cocoon-test-kbs"
fi
RB="${COCOON_ROOTFS_BUILDER:-}"
if [ -z "$RB" ]; then
    cargo build --quiet -p rootfs-builder
    RB="$TARGET_DIR/debug/rootfs-builder"
fi

# With a TEE found, the agent applies its confidential default policy, which refuses a
# rootfs copied in by CopyFile: this test's containers run under an allow-all policy.
RULES="AddARPNeighborsRequest AddSwapRequest AddSwapPathRequest CloseStdinRequest
CopyFileRequest CreateContainerRequest CreateSandboxRequest DestroySandboxRequest
ExecProcessRequest GetDiagnosticDataRequest GetIPTablesRequest GetMetricsRequest
GetOOMEventRequest GuestDetailsRequest ListInterfacesRequest ListRoutesRequest
MemHotplugByProbeRequest OnlineCPUMemRequest PauseContainerRequest PullImageRequest
ReadStreamRequest RemoveContainerRequest RemoveStaleVirtiofsShareMountsRequest
ReseedRandomDevRequest ResizeVolumeRequest ResumeContainerRequest SetGuestDateTimeRequest
SetIPTablesRequest SetPolicyRequest SignalProcessRequest StartContainerRequest
StatsContainerRequest TtyWinResizeRequest UpdateContainerRequest
UpdateEphemeralMountsRequest UpdateInterfaceRequest UpdateRoutesRequest
VolumeStatsRequest WaitProcessRequest WriteStreamRequest"
{ echo "package agent_policy"; for r in $RULES; do echo "default $r := true"; done; } >"$WORK/allow-all.rego"

# initdata as the Kata runtime writes it ("initdata", u64 LE length, gzip(TOML), padded
# to 512), and HOST_DATA = its SHA-384, cut to 32, as the host sets it at launch.
python3 - "$WORK" <<'EOF'
import gzip, hashlib, struct, sys
work = sys.argv[1]
toml = 'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n"note.txt" = "cocoon fake-tee check"\n'
gz = gzip.compress(toml.encode(), mtime=0)
disk = b"initdata" + struct.pack("<Q", len(gz)) + gz
disk += b"\0" * (-len(disk) % 512)
open(f"{work}/initdata.img", "wb").write(disk)
open(f"{work}/initdata.toml", "w").write(toml)
open(f"{work}/initdata-host_data.bin", "wb").write(hashlib.sha384(toml.encode()).digest()[:32])
EOF

log "building the TEST initrd with fake_sev_guest and fake_tsm_sev"
"$RB" initrd --agent "$COCOON_AGENT" --kernel-modules "$FAKE_MODULES" \
    --module fake_sev_guest --module fake_tsm_sev --module virtio_blk \
    --policy "$WORK/allow-all.rego" -o "$WORK/initrd.img" --manifest "$WORK/manifest.json" >/dev/null
grep -q fake_sev_guest "$WORK/manifest.json" || die "fake_sev_guest is not in the initrd"

# --- boot -------------------------------------------------------------------------------
START=$(date +%s)
vhost-device-vsock --guest-cid "$GUEST_CID" --socket "$WORK/vhost.sock" \
    --uds-path "$WORK/vsock.sock" >"$WORK/vhost.log" 2>&1 &
VHOST_PID=$!
for _ in $(seq 1 100); do [ -S "$WORK/vhost.sock" ] && break; sleep 0.1; done
[ -S "$WORK/vhost.sock" ] || die "vhost-device-vsock did not create its socket"

cp "$OVMF_VARS" "$WORK/OVMF_VARS.fd"
# A KBS address that is never dialled: the REST API's evidence route needs none, but the
# agent serves the API only with a KBS configured.
CMDLINE="console=ttyS0 agent.log=debug panic=1 agent.aa_kbc_params=cc_kbc::http://127.0.0.1:9 agent.guest_components_rest_api=attestation agent.policy_file=/etc/kata-opa/default-policy.rego"
qemu-system-x86_64 \
    -machine q35,accel=tcg,memory-backend=mem -cpu max -smp 1 -m "$MEM" \
    -object memory-backend-memfd,id=mem,size="$MEM",share=on \
    -drive if=pflash,format=raw,unit=0,file="$OVMF_CODE",readonly=on \
    -drive if=pflash,format=raw,unit=1,file="$WORK/OVMF_VARS.fd" \
    -kernel "$KERNEL_IMAGE" -initrd "$WORK/initrd.img" -append "$CMDLINE" \
    -chardev socket,id=vsock0,path="$WORK/vhost.sock" \
    -device vhost-user-vsock-pci,chardev=vsock0 \
    -drive if=none,id=initdata,format=raw,readonly=on,file="$WORK/initdata.img" \
    -device virtio-blk-pci,drive=initdata \
    -fw_cfg name=opt/cocoon/fake-tee/host_data,file="$WORK/initdata-host_data.bin" \
    -nodefaults -display none -serial file:"$CONSOLE" -no-reboot \
    >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
log "QEMU pid $QEMU_PID, waiting for the agent (up to ${BOOT_TIMEOUT}s)"
wait_console() { # wait_console WHAT: the agent's "WHAT vsock://-1:PORT" console line
    while ! grep -q "$1 vsock://-1:$VSOCK_PORT" "$CONSOLE" 2>/dev/null; do
        kill -0 "$QEMU_PID" 2>/dev/null || { cat "$WORK/qemu.log" >&2 || true; die "QEMU exited early"; }
        [ "$(elapsed)" -lt "$BOOT_TIMEOUT" ] || die "no '$1' line after ${BOOT_TIMEOUT}s"
        sleep 0.2
    done
}
wait_console "listening on"
log "agent listening after $(elapsed)s"
# The agent listens first and loads the other modules (the fake TEE's among them), probes
# and checks initdata after; it serves once all of that is done.
wait_console "serving requests on"
log "agent serving after $(elapsed)s"

# 1. the modules and the probe
for line in "fake_sev_guest: TEST ONLY" "fake_tsm_sev: TEST ONLY"; do
    grep -a "$line" "$CONSOLE" >&2 || die "no '$line' kernel line: module not loaded"
done
probe="$(grep -a "attestation probe:" "$CONSOLE" | head -1)"
log "console: $probe"
case "$probe" in *"TEE snp"*) ;; *) die "the probe did not find SEV-SNP" ;; esac

ADDR="hvsock://$WORK/vsock.sock:$VSOCK_PORT"
ctl() { timeout 120 "$COCOON_CTL" --server-address "$ADDR" "$@"; }
ctl Check | grep -q SERVING || die "Health.Check did not answer SERVING"
details="$(ctl GetGuestDetails '{"mem_block_size": true}')" || die "GetGuestDetails failed"
grep -a "initdata matches the hardware binding" "$CONSOLE" >&2 ||
    die "the agent did not verify initdata against the fake HOST_DATA"
echo "$details" | grep -q '"tee=snp"' || die "GetGuestDetails does not say tee=snp: $details"
echo "$details" | grep -q '"initdata=verified"' || die "GetGuestDetails does not say initdata=verified: $details"
log "GetGuestDetails: extra_features has tee=snp, initdata=verified"
ctl CreateSandbox '{"hostname": "fake-tee", "sandbox_id": "fake-tee"}' >/dev/null ||
    die "CreateSandbox failed"

# 4. (first half) a KBS session on the host: its binding is the REST request's runtime data.
mkdir -p "$WORK/kbs-resources"
"$COCOON_TEST_KBS" --listen 127.0.0.1:0 --resources "$WORK/kbs-resources" \
    --accept-evidence snp-test -v >"$WORK/kbs.out" 2>"$WORK/kbs.err" &
KBS_PID=$!
for _ in $(seq 1 100); do grep -q "^listening on" "$WORK/kbs.out" 2>/dev/null && break; sleep 0.1; done
KBS_URL="$(sed -n 's/^listening on //p' "$WORK/kbs.out")"
[ -n "$KBS_URL" ] || die "cocoon-test-kbs did not start: $(cat "$WORK/kbs.err")"
python3 - "$KBS_URL" "$WORK/kbs-session.json" <<'EOF' || die "KBS auth failed"
import base64, hashlib, json, sys, urllib.request
url, out = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url + "/kbs/v0/auth", method="POST",
    data=json.dumps({"version": "0.4.0", "tee": "snp", "extra-params": ""}).encode(),
    headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=20) as r:
    cookie = r.headers["Set-Cookie"].split(";")[0]
    nonce = json.load(r)["nonce"]
# The P-256 base point: a valid public key (its private key is 1), fine for a test
# that checks attestation only.
b64 = lambda h: base64.urlsafe_b64encode(bytes.fromhex(h)).rstrip(b"=").decode()
jwk = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
       "x": b64("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"),
       "y": b64("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")}
# Trustee's binding: SHA-384 of the canonical JSON (sorted keys, no whitespace).
doc = {"additional-evidence": "", "nonce": nonce, "tee-pubkey": jwk}
binding = hashlib.sha384(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).digest()
json.dump({"cookie": cookie, "nonce": nonce, "jwk": jwk, "binding": binding.hex(),
           "runtime_data": base64.urlsafe_b64encode(binding).rstrip(b"=").decode()}, open(out, "w"))
EOF
RUNTIME_DATA="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runtime_data"])' "$WORK/kbs-session.json")"
log "KBS session open at $KBS_URL (snp-test); its binding goes to the guest as runtime data"

# 2. and 3. from one container: the REST API (device path) and attest (configfs path).
DATA_TSM="$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BUNDLE="$WORK/bundle"
mkdir -p "$BUNDLE/rootfs/bin" "$BUNDLE/rootfs/proc" "$BUNDLE/rootfs/dev" "$BUNDLE/rootfs/sys" "$BUNDLE/rootfs/tmp"
cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
ln -s busybox "$BUNDLE/rootfs/bin/sh"
cp "$COCOON_AGENT" "$BUNDLE/rootfs/bin/cocoon-agent"
cat >"$BUNDLE/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
              "env": ["PATH=/bin"],
              "capabilities": {"bounding": ["CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN"]},
              "args": ["sh", "-c", "busybox wget -qO- 'http://127.0.0.1:8006/aa/evidence?runtime_data=$RUNTIME_DATA&encoding=base64' || echo WGET-FAILED; echo; echo ====; busybox mount -t configfs none /sys/kernel/config && /bin/cocoon-agent attest --attester snp --report-data $DATA_TSM 2>&1 || echo ATTEST-FAILED"]},
  "root": {"path": "rootfs"},
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
             {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
             {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}],
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}
}
JSON
log "running the container (copying its rootfs in)"
out="$(ctl run --copy-rootfs --id fake-tee-c1 "$BUNDLE/config.json" 2>"$WORK/ctl-run.err")" ||
    die "the container did not run: $out $(cat "$WORK/ctl-run.err")"
printf '%s\n' "$out" >"$WORK/container.out"
python3 - "$WORK/container.out" "$WORK/kbs-session.json" "$DATA_TSM" "$FAKE_TEE_VCEK" <<'EOF' || die "evidence check failed (container output above)"
import json, sys
text = open(sys.argv[1]).read()
rest_part, _, tsm_part = text.partition("\n====\n")
want_rest = bytes.fromhex(json.load(open(sys.argv[2]))["binding"]).ljust(64, b"\0")
want_tsm = bytes.fromhex(sys.argv[3])
vcek = open(sys.argv[4], "rb").read()

def report_data(evidence, what):
    r = evidence["attestation_report"]
    got = bytes(r["report_data"])
    chain = evidence["cert_chain"] or []
    print(f"fake-tee check: {what}: version {r['version']}, vmpl {r['vmpl']}, "
          f"report_data {got.hex()[:32]}..., cert_chain {[(c['cert_type'], len(c['data'])) for c in chain]}",
          file=sys.stderr)
    assert r["vmpl"] == 0, r["vmpl"]
    assert len(chain) == 1 and bytes(chain[0]["data"]) == vcek, "cert_chain is not the recorded VCEK"
    return got

try:
    rest = json.loads(rest_part)
except ValueError:
    sys.exit("REST evidence is not JSON: " + rest_part[:500])
assert report_data(rest, "/aa/evidence (/dev/sev-guest)") == want_rest, "REST report_data differs"

# attest: the probe line (stderr), then {"tee": "snp", "evidence": {...}}
probe_line, _, doc = tsm_part.partition("\n")
print("fake-tee check: in the container:", probe_line, file=sys.stderr)
assert "TEE snp" in probe_line and "provider sev_guest" in probe_line, probe_line
try:
    att = json.loads(doc)
except ValueError:
    sys.exit("attest output is not JSON: " + tsm_part[:800])
assert att["tee"] == "snp", att["tee"]
assert report_data(att["evidence"], "attest (configfs-tsm)") == want_tsm, "configfs-tsm report_data differs"
EOF
log "evidence from /dev/sev-guest (REST API) and configfs-tsm (attest) binds our report data"

# 4. (second half) the VM's evidence, posted to the KBS session it was made for.
python3 - "$KBS_URL" "$WORK/kbs-session.json" "$WORK/container.out" "$WORK/initdata.toml" <<'EOF' || die "the test KBS did not accept the VM's evidence: $(cat "$WORK/kbs.err")"
import base64, json, sys, urllib.error, urllib.request
url, session, out = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read()
toml = open(sys.argv[4]).read()
evidence = json.loads(out.partition("\n====\n")[0])
def attest(body, cookie):
    req = urllib.request.Request(url + "/kbs/v0/attest", method="POST", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Cookie": cookie})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
body = {"init-data": {"format": "toml", "body": toml.replace("0.1.0", "0.1.1")},
        "runtime-data": {"nonce": session["nonce"], "tee-pubkey": session["jwk"]},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}}
status, err = attest(body, session["cookie"])
assert status == 401 and err["type"].endswith("/AttestationError"), (status, err)
print("fake-tee check: other init-data:", status, err["type"].rsplit("/", 1)[1], file=sys.stderr)
body["init-data"]["body"] = toml
status, answer = attest(body, session["cookie"])
assert status == 200, (status, answer)
token = answer["token"]
part = token.split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
print("fake-tee check: KBS token claims: tee", claims["tee"], "evidence", json.dumps(claims["evidence"])[:160], file=sys.stderr)
assert claims["tee"] == "snp" and claims["evidence"]["signature_verified"] is False, claims
assert claims["init-data"]["body"] == toml, claims
# A second session is not given evidence bound to someone else's data: the configfs-tsm
# evidence (bound to random bytes) is refused as Trustee refuses it.
req = urllib.request.Request(url + "/kbs/v0/auth", method="POST",
    data=json.dumps({"version": "0.4.0", "tee": "snp", "extra-params": ""}).encode(),
    headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=20) as r:
    cookie, nonce = r.headers["Set-Cookie"].split(";")[0], json.load(r)["nonce"]
other = json.loads(out.partition("\n====\n")[2].partition("\n")[2])["evidence"]
body["runtime-data"]["nonce"] = nonce
body["tee-evidence"]["primary_evidence"] = other
status, err = attest(body, cookie)
assert status == 401 and err["type"].endswith("/AttestationError"), (status, err)
print("fake-tee check: other report data:", status, err["type"].rsplit("/", 1)[1], file=sys.stderr)
with urllib.request.urlopen(url + "/test/stats", timeout=20) as r:
    stats = json.load(r)
assert stats["handshakes"] == 1, stats
EOF
for why in "Host Data Mismatch" "Report Data Mismatch"; do
    grep -q "$why" "$WORK/kbs.err" || die "the KBS refused for another reason than '$why': $(cat "$WORK/kbs.err")"
done
log "cocoon-test-kbs --accept-evidence snp-test attested the VM's evidence (one handshake)"

ctl DestroySandbox >/dev/null || die "DestroySandbox failed"
for _ in $(seq 1 100); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$QEMU_PID" 2>/dev/null && die "the VM did not power off within 20 s of DestroySandbox"
grep -q "Kernel panic" "$CONSOLE" && die "kernel panic in the console log"
QEMU_PID=""
log "first boot done after $(elapsed)s"

# 5. HOST_DATA set by the host (as QEMU's sev-snp-guest,host-data=... would), no initdata.
HOST_DATA_HEX="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$HOST_DATA_HEX" | python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read()))' >"$WORK/host_data.bin"
CONSOLE="$WORK/console-host-data.log"
cp "$OVMF_VARS" "$WORK/OVMF_VARS.fd"
qemu-system-x86_64 \
    -machine q35,accel=tcg -cpu max -smp 1 -m "$MEM" \
    -drive if=pflash,format=raw,unit=0,file="$OVMF_CODE",readonly=on \
    -drive if=pflash,format=raw,unit=1,file="$WORK/OVMF_VARS.fd" \
    -kernel "$KERNEL_IMAGE" -initrd "$WORK/initrd.img" -append "$CMDLINE" \
    -fw_cfg name=opt/cocoon/fake-tee/host_data,file="$WORK/host_data.bin" \
    -nodefaults -display none -serial file:"$CONSOLE" -no-reboot \
    >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
log "second boot (HOST_DATA $HOST_DATA_HEX, no initdata), QEMU pid $QEMU_PID"
START=$(date +%s)
while kill -0 "$QEMU_PID" 2>/dev/null; do
    [ "$(elapsed)" -lt "$BOOT_TIMEOUT" ] || die "the agent did not stop within ${BOOT_TIMEOUT}s"
    sleep 0.5
done
QEMU_PID=""
grep -a "fake_sev_guest: HOST_DATA from fw_cfg" "$CONSOLE" >&2 || die "fake_sev_guest did not take HOST_DATA"
refusal="$(grep -a '"level":"ERROR"' "$CONSOLE" | head -1)"
log "console: $refusal"
case "$refusal" in
    *"HOST_DATA"*"$HOST_DATA_HEX"*) ;;
    *) die "the agent did not refuse to start over HOST_DATA without initdata" ;;
esac
grep -q "reboot: Power down" "$CONSOLE" || die "no 'reboot: Power down' after the refusal"
log "PASS in $(elapsed)s after the second boot's start"
OK=1
