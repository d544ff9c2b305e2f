"""`python -m bench.write_strategy [--quick] [--reps N] [--json PATH]`

The engine's two write strategies side by side on the lan profile ([export] write_strategy =
"coalesced" vs "aiofiles"), alternating within each repetition; medians of MB/s and CPU s/GiB.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import report
from .profiles import build
from .runner import Variant, log, run_profile, summarize

DEFAULT_JSON = report.DEFAULT_JSON.with_name("write_strategy.json")
STRATEGIES = ("coalesced", "aiofiles")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.write_strategy", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, help="default: quick 3, full 5")
    p.add_argument("--concurrency", "-C", type=int, default=16)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    reps = args.reps or (3 if args.quick else 5)
    prof = build("lan", args.quick)
    log(f"[write_strategy on lan] {prof.description}")
    variants = [Variant(s, "engine", {"write_strategy": s}) for s in STRATEGIES]
    raw = run_profile(prof, variants, reps=reps, concurrency=args.concurrency)
    out = {s: summarize(raw["samples"][s], raw["bytes"], raw["files"]) for s in STRATEGIES}
    print(f"\nwrite strategy, lan profile ({raw['files']} files, {raw['bytes'] / 2**20:.0f} MiB, C={args.concurrency}, "
          f"{reps} reps, medians)")
    print(f"{'strategy':<10} {'MB/s':>8} {'CPU s/GiB':>10} {'RSS MiB':>8} {'ok':>4}")
    for s, t in out.items():
        print(f"{s:<10} {t['mb_s']:>8.1f} {t['cpu_s_per_gib']:>10.2f} {t['peak_rss_mib']:>8.1f} {'yes' if t['ok'] else 'NO':>4}")
    ratio = round(out["coalesced"]["mb_s"] / out["aiofiles"]["mb_s"], 3)
    print(f"coalesced/aiofiles throughput ratio: {ratio:.2f}")
    report.write_json({"strategies": out, "ratio_coalesced_over_aiofiles": ratio, "profile": "lan",
                       "bytes": raw["bytes"], "files": raw["files"], "concurrency": args.concurrency, "reps": reps,
                       "machine": report.machine(),
                       "command": "python -m bench.write_strategy " + " ".join(
                           shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))}, args.json)
    print(f"results: {args.json}")
    return 0 if all(t["ok"] for t in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
