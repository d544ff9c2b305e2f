"""`python -m bench.s3 [--quick] [--reps N] [--concurrency C] [--targets disk,s3,azure] [--json PATH]`

The same export into a local folder, into an S3-compatible server (moto's standalone server on
loopback, started here, HTTP) and into an Azure Blob server (Azurite, the same), alternating
within each repetition: MB/s, CPU s/GiB and peak RSS of the engine's process tree, the peak of
its local spool, and every object read back and compared with the source. moto (Python) and
Azurite (Node.js) share the same 2 cores: they bound the store's rate, so read `s3/disk` and
`azure/disk` as floors for what a real store gives, not as the engine's ceiling.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import harness, report
from .harness import PYTHON, REPO
from .runner import log

GiB = 1 << 30
DEFAULT_JSON = report.DEFAULT_JSON.with_name("s3.json")


def fake_args(quick: bool) -> list[str]:
    files, mib = (8, 24) if quick else (16, 64)  # 192 MiB / 1 GiB, no throttling
    return ["--preset", "lan", "--files-per-batch", str(files), "--file-mb", str(mib)]


def engine_run(fake: harness.Fake, out: str, work: Path, concurrency: int, env: dict[str, str] | None) -> harness.RunResult:
    info = fake.info
    lines = [f'[platform]\nurl = "{info["url"]}"\norg_id = "{info["org_id"]}"\nsandbox = "{info["sandbox"]}"',
             f'[auth]\nclient_id = "{info["client_id"]}"\nclient_secret = "{info["client_secret"]}"\nims_url = "{info["ims_url"]}"',
             f'[export]\nout_dir = "{out}"\nconcurrency = {concurrency}',
             f'[store]\nspool_dir = "{work}"']
    lines += [f'[[datasets]]\nid = "{ds}"' for ds in info["datasets"]]
    (work / "engine.toml").write_text("\n\n".join(lines) + "\n")
    argv = [PYTHON, "-m", "engine", "run", "--config", str(work / "engine.toml"), "--json-logs", "--no-progress"]
    return harness.run_measured(argv, timeout=1800, cwd=REPO, env=env, log_dir=work / "logs")


def spool_peak(work: Path) -> int | None:
    for line in (work / "logs" / "stderr.log").read_text(errors="replace").splitlines():
        if '"spool_done"' in line:
            return json.loads(line)["peak_bytes"]
    return None


def bucket_problems(server: Any, bucket: str, prefix: str, expected: list[harness.ExpectedFile]) -> list[str]:
    """Every object read back (moto's or Azurite's own client: `read(bucket, key)`) and compared."""
    problems = []
    for e in expected:
        key = f"{prefix}/{e.rel_path.as_posix()}"
        try:
            data = server.read(bucket, key)
        except Exception as exc:  # noqa: BLE001 - a missing object is a problem to report
            problems.append(f"{key}: {type(exc).__name__}")
            continue
        if len(data) != e.size or hashlib.sha256(data).hexdigest() != e.sha256:
            problems.append(f"{key}: differs")
    return problems


TARGETS = ("disk", "s3", "azure")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__.split("\n\n")[1].strip())
    p.add_argument("--quick", action="store_true", help="192 MiB instead of 1 GiB, 2 repetitions")
    p.add_argument("--reps", type=int)
    p.add_argument("--concurrency", "-C", type=int, default=16)
    p.add_argument("--targets", default=",".join(TARGETS), help="which of disk, s3, azure (default: all three)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    reps = args.reps or (2 if args.quick else 3)
    targets = [t for t in TARGETS if t in args.targets.split(",")]
    sys.path.insert(0, str(REPO / "tests"))

    root = harness.bench_tmp_root()
    samples: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    fake = harness.start_fake(fake_args(args.quick), log_dir=root / "fake")
    total = fake.total_bytes
    log(f"[s3] {len(fake.expected)} files, {total / 2**20:.0f} MiB; {' vs '.join(targets)} at {args.concurrency} connections, {reps} reps")
    try:
        with ExitStack() as servers:
            runners = {t: _runner(t, servers, fake, args.concurrency) for t in targets}
            for rep in range(reps):
                for target in targets:
                    work = Path(tempfile.mkdtemp(prefix=f"{target}-", dir=root))
                    r, problems = runners[target](work)
                    s = {"wall_s": r.wall_s, "cpu_s": r.cpu_s, "peak_rss_mib": r.peak_rss_mib, "rc": r.rc,
                         "ok": r.rc == 0 and not problems, "spool_peak_mib": None}
                    if target != "disk":
                        peak = spool_peak(work)
                        s["spool_peak_mib"] = None if peak is None else round(peak / 2**20, 1)
                    if not s["ok"]:
                        s["problems"], s["stderr_tail"] = problems[:5], r.stderr_tail[-600:]
                    samples[target].append(s)
                    log(f"  rep {rep + 1}/{reps} {target:<5} {total / r.wall_s / 1e6:7.1f} MB/s {r.wall_s:6.2f}s cpu {r.cpu_s:6.2f}s "
                        f"rss {r.peak_rss_mib:6.1f} MiB spool {s['spool_peak_mib']} MiB {'ok' if s['ok'] else 'NOT OK'}")
                    harness.drop_tree(work)
    finally:
        fake.stop()
        harness.drop_tree(root)
    results = {target: _summary(runs, total) for target, runs in samples.items()}
    ratios = {f"ratio_{t}_over_disk": round(results[t]["mb_s"] / results["disk"]["mb_s"], 3)
              for t in results if t != "disk" and "disk" in results}
    print(f"\nexport of {len(fake.expected)} files, {total / 2**20:.0f} MiB, C={args.concurrency}, {reps} reps (medians)")
    print(f"{'target':<6} {'MB/s':>7} {'CPU s/GiB':>10} {'RSS MiB':>8} {'spool MiB':>10} {'ok':>4}")
    for target, t in results.items():
        print(f"{target:<6} {t['mb_s']:>7} {t['cpu_s_per_gib']:>10} {t['peak_rss_mib']:>8} {t['spool_peak_mib']!s:>10} "
              f"{'yes' if t['ok'] else 'NO':>4}")
    for name, ratio in ratios.items():
        print(f"{name.removeprefix('ratio_').replace('_over_', '/')} throughput: {ratio}")
    command = "python -m bench.s3 " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    report.write_json({"targets": results, **ratios, "bytes": total, "files": len(fake.expected),
                       "concurrency": args.concurrency, "reps": reps, "machine": report.machine(),
                       "command": command.strip()}, args.json)
    print(f"results: {args.json}")
    return 0 if all(t["ok"] for t in results.values()) else 1


def _runner(target: str, servers: ExitStack, fake: harness.Fake,
            concurrency: int) -> Callable[[Path], tuple[harness.RunResult, list[str]]]:
    """One export into `target` in a fresh work folder: its measures and what did not read back."""
    if target == "disk":
        def disk(work: Path) -> tuple[harness.RunResult, list[str]]:
            r = engine_run(fake, str(work / "out"), work, concurrency, None)
            return r, harness.check_outputs(work / "out", fake.expected)[1]
        return disk
    if target == "s3":
        from s3server import MotoServer  # the server the tests use

        moto = servers.enter_context(MotoServer())

        def s3(work: Path) -> tuple[harness.RunResult, list[str]]:
            bucket = f"bench-{uuid.uuid4().hex[:10]}"
            moto.create_bucket(bucket)
            r = engine_run(fake, f"s3://{bucket}/run", work, concurrency, {**_env(), **moto.env()})
            return r, bucket_problems(moto, bucket, "run", fake.expected)
        return s3
    from azurite import AzuriteServer  # the server the tests use

    azurite = servers.enter_context(AzuriteServer())

    def azure(work: Path) -> tuple[harness.RunResult, list[str]]:
        container = f"bench-{uuid.uuid4().hex[:10]}"
        azurite.create_container(container)
        r = engine_run(fake, f"az://{container}/run", work, concurrency, {**_env(), **azurite.env()})
        problems = bucket_problems(azurite, container, "run", fake.expected)
        azurite.service.delete_container(container)  # Azurite keeps blobs on its disk: not across repetitions
        return r, problems
    return azure


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AEP_EXPORT_", "AWS_", "AZURE_"))}


def _summary(runs: list[dict[str, Any]], total: int) -> dict[str, Any]:
    wall = statistics.median(s["wall_s"] for s in runs)
    spools = [s["spool_peak_mib"] for s in runs if s["spool_peak_mib"] is not None]
    return {"mb_s": round(total / wall / 1e6, 1),
            "cpu_s_per_gib": round(statistics.median(s["cpu_s"] for s in runs) / (total / GiB), 2),
            "peak_rss_mib": round(statistics.median(s["peak_rss_mib"] for s in runs), 1),
            "spool_peak_mib": max(spools) if spools else None,
            "ok": all(s["ok"] for s in runs), "runs": runs}


if __name__ == "__main__":
    sys.exit(main())
