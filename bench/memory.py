"""`python -m bench.memory [--sizes 1 8] [--quick] [--json PATH]`: the engine's peak RSS by export size.

A lan-like fake (no throttling) with large files; the engine runs at the same concurrency for every
size, so a flat peak RSS means memory is bounded by concurrency x buffers, not by data size.
The result is merged into the benchmark JSON as "memory": {"1gib": MiB, "8gib": MiB}.
Generating 8 GiB of parquet takes minutes the first time (cached afterwards).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from . import report
from .profiles import Profile
from .runner import Variant, log, run_profile, summarize


def size_key(gib: float) -> str:
    return f"{gib:g}gib"


def profile_for(gib: float) -> Profile:
    # large files: 256 MiB parts up to 1 GiB, then 512 MiB parts (16 files at 8 GiB)
    part_mib = 256 if gib <= 1 else 512
    files = max(1, round(gib * 1024 / part_mib))
    if gib < 1:
        files, part_mib = 2, int(gib * 1024 / 2)
    return Profile(f"memory-{size_key(gib)}", f"{files} x {part_mib} MiB, no throttling",
                   ["--preset", "lan", "--files-per-batch", str(files), "--file-mb", str(part_mib)],
                   limit_kind="none", timeout_s=1800, start_timeout_s=3600)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=float, help="export sizes in GiB (default 1 8; --quick: 0.25 1)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--concurrency", "-C", type=int, default=16)
    p.add_argument("--json", type=Path, default=report.DEFAULT_JSON, help="merged into this results file")
    args = p.parse_args(argv)
    sizes = args.sizes or ([0.25, 1] if args.quick else [1, 8])
    memory: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for gib in sizes:
        prof = profile_for(gib)
        log(f"[{prof.name}] {prof.description}")
        raw = run_profile(prof, [Variant("engine", "engine")], reps=args.reps, concurrency=args.concurrency)
        s = summarize(raw["samples"]["engine"], raw["bytes"], raw["files"])
        memory[size_key(gib)] = s["peak_rss_mib"]
        details[size_key(gib)] = {k: s[k] for k in ("peak_rss_mib", "mb_s", "cpu_s_per_gib", "ok", "wall_s")} | {
            "bytes": raw["bytes"], "files": raw["files"], "concurrency": args.concurrency}
        print(f"{size_key(gib):>8}: peak RSS {s['peak_rss_mib']:.1f} MiB  ({s['mb_s']:.1f} MB/s, "
              f"{s['cpu_s_per_gib']:.2f} CPU s/GiB, ok={s['ok']})", flush=True)
    results = report.load_json(args.json) or {"profiles": {}, "machine": report.machine(), "command": ""}
    results["memory"] = memory
    results["memory_details"] = details | {
        "command": "python -m bench.memory " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "machine": report.machine()}
    report.write_json(results, args.json)
    print(f"memory: {memory} -> {args.json}")
    return 0 if all(d["ok"] for d in details.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
