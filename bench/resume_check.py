"""`python -m bench.resume_check [--mib 512] [--reps 3]`

What checking the pieces an earlier run left costs, for the two ways issue 11 allows:

- re-read hash (what the engine does): on a rerun, the held bytes are read back from disk once to
  rebuild the whole-file SHA-256. It costs CPU only on resume, and only for the bytes held;
- piece hash: a digest of every piece recorded while downloading, compared on resume. It costs a
  second pass over every byte of every run (SHA-256 or, cheaper, CRC32), crash or not.

Prints seconds of CPU per GiB for each (medians), on a file of --mib MiB in the page cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import zlib

from engine.checks.integrity import hash_from_disk

PIECE = 1 << 20


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.resume_check")
    p.add_argument("--mib", type=int, default=512)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    data = os.urandom(PIECE) * args.mib  # incompressible enough for a hash; allocation is not measured
    gib = len(data) / (1 << 30)
    with tempfile.NamedTemporaryFile(prefix="aep-resume-check-") as fh:
        fh.write(data)
        fh.flush()
        fd = fh.fileno()
        hash_from_disk(fd, hashlib.sha256(), 0, len(data))  # warm the page cache
        view = memoryview(data)
        costs: dict[str, list[float]] = {"re-read sha256 (on resume only)": [], "piece sha256 (every run)": [],
                                         "piece crc32 (every run)": []}
        for _ in range(args.reps):
            t = _cpu()
            hash_from_disk(fd, hashlib.sha256(), 0, len(data))
            costs["re-read sha256 (on resume only)"].append((_cpu() - t) / gib)
            t = _cpu()
            for i in range(0, len(data), PIECE):
                hashlib.sha256(view[i:i + PIECE]).digest()
            costs["piece sha256 (every run)"].append((_cpu() - t) / gib)
            t = _cpu()
            for i in range(0, len(data), PIECE):
                zlib.crc32(view[i:i + PIECE])
            costs["piece crc32 (every run)"].append((_cpu() - t) / gib)
    print(f"{args.mib} MiB in the page cache, {args.reps} reps, medians ({time.strftime('%Y-%m-%d %H:%M')})")
    for name, values in costs.items():
        print(f"  {name:<34} {statistics.median(values):6.3f} CPU s/GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
