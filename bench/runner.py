"""Runs one profile: start the fake, discover once for the peers, then alternate the variants per repetition."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import harness
from .profiles import Profile
from .tools import RUNNERS, RunContext, available

GiB = 1 << 30


@dataclass
class Variant:
    label: str  # the name it is reported under
    tool: str  # a key of tools.RUNNERS, or "dd" (disk limit)
    export_overrides: dict[str, object] = field(default_factory=dict)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class FakeSession:
    """The profile's fake platform plus what peers need (token headers, discovered URLs)."""

    def __init__(self, profile: Profile, root: Path):
        self.profile, self.root = profile, root
        self.fake: harness.Fake | None = None
        self.headers: dict[str, str] = {}
        self.files: list[harness.RemoteFile] = []
        self.starts = 0

    def start(self) -> harness.Fake:
        self.stop()
        t0 = time.perf_counter()
        self.fake = harness.start_fake(self.profile.fake_args, timeout=self.profile.start_timeout_s, log_dir=self.root / f"fake-{self.starts}")
        self.starts += 1
        self.headers = harness.gateway_headers(self.fake, harness.get_token(self.fake))
        self.files = harness.discover(self.fake, self.headers)
        if self.starts == 1:
            log(f"  fake up in {time.perf_counter() - t0:.1f}s at {self.fake.url}: {len(self.fake.expected)} files, "
                f"{self.fake.total_bytes / 2**20:.1f} MiB (data {self.fake.info['data_dir']})")
        return self.fake

    def stop(self) -> None:
        if self.fake is not None:
            self.fake.stop()
            self.fake = None


def run_profile(profile: Profile, variants: list[Variant], *, reps: int, concurrency: int) -> dict[str, Any]:
    """Measure every variant `reps` times, alternating within each repetition; returns per-variant samples."""
    root = harness.bench_tmp_root()
    session = FakeSession(profile, root)
    samples: dict[str, list[dict[str, Any]]] = {v.label: [] for v in variants}
    notes: dict[str, str] = {}
    runnable = []
    for v in variants:
        note = available(v.tool) if v.tool != "dd" else None
        if note:
            notes[v.label] = note
            log(f"  {v.label}: {note}")
        else:
            runnable.append(v)
    try:
        fake = session.start()
        total, n_files = fake.total_bytes, len(fake.expected)
        fresh = True  # the fake has served no tool run yet
        for rep in range(reps):
            for v in runnable:
                if v.tool == "dd":
                    r = harness.dd_write(root, max(1, round(total / 2**20)), timeout=profile.timeout_s)
                    s = {"wall_s": r.wall_s, "cpu_s": r.cpu_s, "peak_rss_mib": r.peak_rss_mib, "rc": r.rc,
                         "ok": r.rc == 0, "mb_s": total / r.wall_s / 1e6}
                    samples[v.label].append(s)
                    log(f"  rep {rep + 1}/{reps} {v.label:<10} {s['mb_s']:8.1f} MB/s")
                    continue
                if profile.fresh_fake_per_run and not fresh:
                    session.start()  # same seeded faults for every run: counters start from zero
                fresh = False
                samples[v.label].append(_one_run(profile, v, session, root, concurrency, rep, reps))
    finally:
        session.stop()
        harness.drop_tree(root)
    return {"samples": samples, "notes": notes, "bytes": total, "files": n_files}


def _one_run(profile: Profile, v: Variant, session: FakeSession, root: Path, concurrency: int,
             rep: int, reps: int) -> dict[str, Any]:
    assert session.fake is not None
    work = root / f"work-{v.label}-{rep}"
    out = root / f"out-{v.label}-{rep}"
    work.mkdir(parents=True)
    files, expected = session.files, session.fake.expected
    if v.tool == "naive" and profile.naive_files:
        # naive is sequential, so its rate is stationary: measure it on the first files only
        files = files[: profile.naive_files]
        wanted = {str(f.rel_path) for f in files}
        expected = [e for e in expected if str(e.rel_path) in wanted]
    ctx = RunContext(fake=session.fake, files=files, headers=session.headers, out_dir=out, work_dir=work,
                     concurrency=concurrency, timeout=profile.timeout_s,
                     export_overrides={**profile.export_overrides, **v.export_overrides})
    try:
        r = RUNNERS[v.tool](ctx)
        good, problems = harness.check_outputs(out, expected)
    finally:
        harness.drop_tree(out)
        harness.drop_tree(work)
    ok = r.rc == 0 and not problems
    total = sum(e.size for e in expected)
    s = {"wall_s": r.wall_s, "cpu_s": r.cpu_s, "peak_rss_mib": r.peak_rss_mib, "rc": r.rc, "ok": ok,
         "bytes": total, "files": len(expected),
         "timed_out": r.timed_out, "files_ok": good, "problems": problems[:5], "n_problems": len(problems)}
    if not ok:
        s["stderr_tail"] = r.stderr_tail[-600:]
    log(f"  rep {rep + 1}/{reps} {v.label:<10} {total / r.wall_s / 1e6:8.1f} MB/s {r.wall_s:7.2f}s "
        f"cpu {r.cpu_s:6.2f}s rss {r.peak_rss_mib:6.1f} MiB rc={r.rc} "
        f"{'ok' if ok else f'NOT OK ({len(problems)} bad files)'}")
    return s


def summarize(samples: list[dict[str, Any]], total_bytes: int, n_files: int) -> dict[str, Any]:
    """Medians over the repetitions."""
    wall = statistics.median(s["wall_s"] for s in samples)
    cpu = statistics.median(s["cpu_s"] for s in samples)
    # a tool measured on a subset (naive on large profiles) reports its own bytes and files
    total_bytes = samples[0].get("bytes", total_bytes) if samples else total_bytes
    n_files = samples[0].get("files", n_files) if samples else n_files
    return {
        "mb_s": round(total_bytes / wall / 1e6, 2),
        "files_s": round(n_files / wall, 2),
        "cpu_s_per_gib": round(cpu / (total_bytes / GiB), 3) if total_bytes else None,
        "peak_rss_mib": round(statistics.median(s["peak_rss_mib"] for s in samples), 1),
        "ok": all(s["ok"] for s in samples),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "reps": len(samples),
        "runs": samples,
    }
