#!/usr/bin/env python3
"""Writes the uncompressed layer tars of the image-pull benchmark image.

    gen-image.py OUT_DIR [TOTAL_MIB]

Six layers, ~TOTAL_MIB (default 1024) of tar in all, a mix that resembles a real image:
many small text-ish files (sources, configs, docs), medium text files, semi-compressible
"binaries" (random runs mixed with text and zero runs, like .so files), and a few large
incompressible files (archives, models). Content is seeded, so runs are repeatable.
Writes OUT_DIR/layer-N.tar (bottom first) and prints one line per layer.
"""

import io
import os
import random
import sys
import tarfile

MIB = 1 << 20
MTIME = 1_700_000_000


def text_pool(rng, size):
    """Pseudo-text: lines of words from a 5000-word vocabulary (gzip ratio ~3x)."""
    letters = "abcdefghijklmnopqrstuvwxyz_"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(5000)]
    vocab += ["{", "}", "(", ")", ";", "=", "return", "if", "for", "0", "1", "//"]
    out, n = [], 0
    while n < size:
        words = rng.choices(vocab, k=rng.randint(3, 14))
        line = "    " * rng.randint(0, 3) + " ".join(words) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


class Layer:
    def __init__(self, path):
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
        self.dirs = set()
        self.bytes = 0
        self.files = 0

    def _dir(self, d):
        if not d or d in self.dirs:
            return
        self._dir(os.path.dirname(d))
        ti = tarfile.TarInfo(d)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
        self.tar.addfile(ti)
        self.dirs.add(d)

    def add(self, name, size, reader, mode=0o644, uid=0):
        self._dir(os.path.dirname(name))
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = size, mode, MTIME, uid, uid
        self.tar.addfile(ti, reader)
        self.bytes += size
        self.files += 1

    def close(self):
        self.tar.close()


class Random:
    """An incompressible stream of `size` bytes."""

    def __init__(self, rng, size):
        self.rng, self.left = rng, size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


def main():
    out = sys.argv[1]
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    scale = total / 1024
    rng = random.Random(9)
    pool = text_pool(rng, 8 * MIB)

    def text(size):
        off = rng.randrange(0, len(pool) - size)
        return io.BytesIO(pool[off : off + size])

    def binary(size):
        parts, n = [], 0
        while n < size:
            k = rng.choice((0, 1, 1, 2))
            m = rng.randint(512, 8192)
            if k == 0:
                parts.append(b"\0" * m)
            elif k == 1:
                parts.append(rng.randbytes(m))
            else:
                o = rng.randrange(0, len(pool) - m)
                parts.append(pool[o : o + m])
            n += m
        return io.BytesIO(b"".join(parts)[:size])

    def s(mib):
        return max(1, int(mib * scale))

    os.makedirs(out, exist_ok=True)
    layers = []

    # 1: a base system: busybox, ~20k small config/doc/source files.
    l = Layer(f"{out}/layer-1.tar")
    if os.path.exists("/bin/busybox"):
        with open("/bin/busybox", "rb") as f:
            bb = f.read()
        l.add("bin/busybox", len(bb), io.BytesIO(bb), 0o755)
    i = 0
    while l.bytes < s(100) * MIB:
        size = int(rng.lognormvariate(7.8, 1.0)) + 16  # median ~2.4 KiB
        size = min(size, 256 * 1024)
        l.add(f"usr/share/base/d{i // 200:03}/file-{i:05}.txt", size, text(size))
        i += 1
    layers.append(l)

    # 2: libraries: semi-compressible binaries, 40 KiB .. 4 MiB.
    l = Layer(f"{out}/layer-2.tar")
    i = 0
    while l.bytes < s(220) * MIB:
        size = min(int(rng.lognormvariate(12.5, 1.2)), 4 * MIB)
        l.add(f"usr/lib/x86_64-linux-gnu/lib{i:04}.so.1", size, binary(size), 0o755)
        i += 1
    layers.append(l)

    # 3: a large incompressible payload (a model, an archive).
    l = Layer(f"{out}/layer-3.tar")
    l.add("opt/data/model.bin", s(256) * MIB, Random(rng, s(256) * MIB))
    l.add("opt/data/blob-a.tar.gz", s(48) * MIB, Random(rng, s(48) * MIB))
    layers.append(l)

    # 4: an application tree: medium text files.
    l = Layer(f"{out}/layer-4.tar")
    i = 0
    while l.bytes < s(180) * MIB:
        size = min(int(rng.lognormvariate(10.5, 1.3)), 2 * MIB)
        l.add(f"srv/app/src/m{i // 100:03}/mod-{i:05}.py", size, text(size), uid=1000)
        i += 1
    layers.append(l)

    # 5: node_modules style: very many tiny files.
    l = Layer(f"{out}/layer-5.tar")
    i = 0
    while l.bytes < s(120) * MIB:
        size = int(rng.lognormvariate(8.2, 1.4)) + 1
        size = min(size, 512 * 1024)
        l.add(f"srv/app/node_modules/p{i // 50:04}/index-{i:06}.js", size, text(size), uid=1000)
        i += 1
    layers.append(l)

    # 6: the top layer: a few configs, a mid-sized random asset, some binaries.
    l = Layer(f"{out}/layer-6.tar")
    for j in range(200):
        size = rng.randint(100, 4000)
        l.add(f"etc/app/conf-{j:03}.conf", size, text(size))
    l.add("srv/app/assets/bundle.bin", s(64) * MIB, Random(rng, s(64) * MIB))
    for j in range(10):
        size = s(4) * MIB
        l.add(f"usr/local/bin/tool-{j}", size, binary(size), 0o755)
    layers.append(l)

    for n, l in enumerate(layers, 1):
        l.close()
        print(f"layer-{n}.tar: {l.files} files, {l.bytes / MIB:.0f} MiB of content")


if __name__ == "__main__":
    main()
