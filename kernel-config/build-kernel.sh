#!/usr/bin/env bash
# Builds the Cocoon guest kernel: merges the fragments onto a base config, resolves
# dependencies with `make olddefconfig`, checks the result with `kernel-config check`,
# then builds bzImage (and modules). Not run in CI (a full build takes about an hour
# on 2 cores); CI runs it with --config-only.
#
# Usage: kernel-config/build-kernel.sh --source DIR [options]
#   --source DIR        kernel source tree (Debian: apt-get install linux-source-6.12,
#                       tar -xf /usr/src/linux-source-6.12.tar.xz)
#   --base defconfig|tinyconfig|FILE
#                       base config (default: defconfig, i.e. x86_64_defconfig)
#   --fragment NAME     base, confidential, debug or a file (repeatable;
#                       default: base confidential)
#   --out DIR           build directory (default: build/kernel-build)
#   --config-only       stop after writing and checking DIR/.config
#   --jobs N            make -j (default: nproc)
# Needs: gcc make flex bison bc libelf-dev libssl-dev (bzImage), flex bison (config).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SRC="" BASE="defconfig" OUT="$ROOT/build/kernel-build" CONFIG_ONLY="" JOBS="$(nproc)"
FRAGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --source) SRC="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --fragment) FRAGS+=("$2"); shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --config-only) CONFIG_ONLY=1; shift ;;
        --jobs) JOBS="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build-kernel.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$SRC" ] || { echo "build-kernel.sh: --source DIR is required" >&2; exit 2; }
[ "${#FRAGS[@]}" -gt 0 ] || FRAGS=(base confidential)
SRC="$(cd "$SRC" && pwd -P)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

KC="${KERNEL_CONFIG_BIN:-}"
if [ -z "$KC" ]; then
    cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p kernel-config
    # Where cargo put it (CARGO_TARGET_DIR and cargo config honoured).
    KC="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/kernel-config"
fi

# 1. Base config.
case "$BASE" in
    defconfig) make -s -C "$SRC" O="$OUT" x86_64_defconfig ;;
    tinyconfig) make -s -C "$SRC" O="$OUT" tinyconfig ;;
    *) cp "$BASE" "$OUT/.config" ;;
esac

# 2. Fragments, written out so merge_config.sh can read them.
frag_files=()
check_args=()
for f in "${FRAGS[@]}"; do
    if [ -f "$HERE/fragments/$f.conf" ]; then
        file="$HERE/fragments/$f.conf"
    else
        file="$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"
    fi
    frag_files+=("$file")
    check_args+=(--fragment "$file")
done

# 3. Merge (-m: no make) and let Kconfig resolve dependencies and defaults.
(cd "$OUT" && "$SRC/scripts/kconfig/merge_config.sh" -m -O "$OUT" "$OUT/.config" "${frag_files[@]}" >/dev/null)
make -s -C "$SRC" O="$OUT" olddefconfig

# 4. Every fragment line must have survived olddefconfig.
"$KC" check --config "$OUT/.config" "${check_args[@]}"
echo "build-kernel.sh: $OUT/.config"
[ -n "$CONFIG_ONLY" ] && exit 0

# 5. The kernel and its modules.
make -C "$SRC" O="$OUT" -j"$JOBS" bzImage modules
make -s -C "$SRC" O="$OUT" INSTALL_MOD_PATH="$OUT/modules-root" modules_install
echo "build-kernel.sh: kernel $OUT/arch/x86/boot/bzImage, modules $OUT/modules-root/lib/modules"
