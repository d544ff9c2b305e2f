"""`python -m bench.memory [--sizes 1 8] [--files 3000 30000] [--quick] [--json PATH]`: the engine's peak RSS
by export size, and by number of files.

Sizes: a lan-like fake (no throttling) with large files; the engine runs at the same concurrency for
every size, so a flat peak RSS means memory is bounded by concurrency x buffers, not by data size.
Merged into the benchmark JSON as "memory": {"1gib": MiB, "8gib": MiB}.
Generating 8 GiB of parquet takes minutes the first time (cached afterwards).

Files (`--files N ...`): N tiny parts (~20 KiB, 3 per batch, one batch per dataset), exported, then
the same command run again over the finished export (nothing to fetch: the rerun's time is the
figure). A flat peak RSS here means per-file state ends with its file (issue #20); `--engine-ref
REF` runs the engine of another commit beside it. Merged as "memory_files": {"3000": {...}}.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from . import harness, refs, report
from .profiles import Profile
from .runner import FakeSession, Variant, log, run_profile, summarize
from .tools import RunContext, run_engine

FILES_PER_BATCH = 3


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


def files_profile(n: int) -> Profile:
    datasets = max(1, n // FILES_PER_BATCH)
    return Profile(f"memory-{n}-files", f"{datasets} datasets x {FILES_PER_BATCH} parts of ~20 KiB, then a rerun",
                   ["--preset", "small", "--datasets", str(datasets), "--files-per-batch", str(FILES_PER_BATCH),
                    "--file-mb", "0.02"], limit_kind="none", timeout_s=1800, start_timeout_s=3600)


def by_files(n: int, concurrency: int, refs_: list[str]) -> dict[str, Any]:
    """Each engine (this checkout, then every REF) exports the N files and reruns over them, in turn."""
    prof = files_profile(n)
    log(f"[{prof.name}] {prof.description}")
    root = harness.bench_tmp_root()
    session = FakeSession(prof, root, concurrency)
    found: dict[str, Any] = {}
    try:
        fake = session.start()
        for label, repo in [("engine", None), *((f"engine@{r}", refs.checkout(r)) for r in refs_)]:
            out, work = root / f"out-{label}", root / f"work-{label}"
            work.mkdir(parents=True)
            ctx = RunContext(fake=fake, files=[], headers={}, out_dir=out, work_dir=work, concurrency=concurrency,
                             timeout=prof.timeout_s, repo=repo)
            first, rerun = run_engine(ctx), run_engine(ctx)
            good, problems = harness.check_outputs(out, fake.expected)
            harness.drop_tree(out)
            harness.drop_tree(work)
            found[label] = {"files": len(fake.expected), "peak_rss_mib": round(first.peak_rss_mib, 1),
                            "wall_s": round(first.wall_s, 2), "cpu_s": round(first.cpu_s, 2),
                            "rerun_wall_s": round(rerun.wall_s, 2), "rerun_cpu_s": round(rerun.cpu_s, 2),
                            "rerun_peak_rss_mib": round(rerun.peak_rss_mib, 1),
                            "ok": first.rc == 0 and rerun.rc == 0 and not problems}
            f = found[label]
            print(f"{n:>8} files {label:<16} peak RSS {f['peak_rss_mib']:6.1f} MiB in {f['wall_s']:.1f} s "
                  f"(cpu {f['cpu_s']:.1f} s); rerun {f['rerun_wall_s']:.1f} s (cpu {f['rerun_cpu_s']:.1f} s) "
                  f"{f['rerun_peak_rss_mib']:.1f} MiB; ok={f['ok']} ({good} good)", flush=True)
    finally:
        session.stop()
        harness.drop_tree(root)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=float, help="export sizes in GiB (default 1 8; --quick: 0.25 1)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--concurrency", "-C", type=int, default=16)
    p.add_argument("--files", nargs="+", type=int, default=[], help="numbers of tiny files (instead of --sizes)")
    p.add_argument("--engine-ref", nargs="+", default=[], metavar="REF", help="with --files: also these commits' engines")
    p.add_argument("--json", type=Path, default=report.DEFAULT_JSON, help="merged into this results file")
    args = p.parse_args(argv)
    if args.files:
        return _files_axis(args, argv)
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


def _files_axis(args: argparse.Namespace, argv: list[str] | None) -> int:
    found = {str(n): by_files(n, args.concurrency, args.engine_ref) for n in args.files}
    results = report.load_json(args.json) or {"profiles": {}, "machine": report.machine(), "command": ""}
    results["memory_files"] = found | {
        "command": "python -m bench.memory " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "machine": report.machine()}
    report.write_json(results, args.json)
    print(f"memory by files -> {args.json}")
    return 0 if all(v["ok"] for f in found.values() for v in f.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
