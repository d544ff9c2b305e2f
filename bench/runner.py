"""Runs one profile: start the fake, then alternate the variants within each repetition.

Every peer run starts with the harness's own discovery (timed, bench/discovery.py) and its figures
include it, as the engine's include the engine's; in the listed profiles (`Profile.peers_listed`)
the peers are handed that list instead: the discovery still runs before each peer run, untimed. In the resume profile every run is killed at
half the bytes and the same command runs again (bench/resume.py).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import discovery, harness, profiling, resume
from .profiles import Profile
from .tools import RUNNERS, RunContext, available, run_engine

GiB = 1 << 30


@dataclass
class Variant:
    label: str  # the name it is reported under
    tool: str  # a key of tools.RUNNERS, or "dd" (disk limit)
    export_overrides: dict[str, object] = field(default_factory=dict)
    repo: Path | None = None  # engine only: run the engine from this source tree (another commit)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class FakeSession:
    """The profile's fake platform process, warmed by one (untimed) discovery."""

    def __init__(self, profile: Profile, root: Path, concurrency: int):
        self.profile, self.root, self.concurrency = profile, root, concurrency
        self.fake: harness.Fake | None = None
        self.sha256: dict[Path, str] = {}
        self.starts = 0

    def start(self) -> harness.Fake:
        self.stop()
        t0 = time.perf_counter()
        self.fake = harness.start_fake(self.profile.fake_args, timeout=self.profile.start_timeout_s,
                                       log_dir=self.root / f"fake-{self.starts}")
        self.starts += 1
        self.sha256 = {e.rel_path: e.sha256 for e in self.fake.expected}
        warm = discovery.discover(self.fake, self.concurrency)  # also checks the listing is complete
        if self.starts == 1:
            log(f"  fake up in {time.perf_counter() - t0:.1f}s at {self.fake.url}: {len(self.fake.expected)} files, "
                f"{self.fake.total_bytes / 2**20:.1f} MiB (data {self.fake.info['data_dir']}); peers' discovery "
                f"{warm.requests} requests, {warm.wall_s:.2f}s cold")
        return self.fake

    def stop(self) -> None:
        if self.fake is not None:
            self.fake.stop()
            self.fake = None


def run_profile(profile: Profile, variants: list[Variant], *, reps: int, concurrency: int,
                profile_out: Path | None = None) -> dict[str, Any]:
    """Measure every variant `reps` times, alternating within each repetition; returns per-variant samples.

    With `profile_out`, one more engine run follows under py-spy, which writes its profile there.
    """
    root = harness.bench_tmp_root()
    session = FakeSession(profile, root, concurrency)
    samples: dict[str, list[dict[str, Any]]] = {v.label: [] for v in variants}
    notes: dict[str, str] = {}
    runnable = []
    for v in variants:
        note = (available(v.tool) or profile.skip_tools.get(v.tool)) if v.tool != "dd" else None
        if note:
            notes[v.label] = note
            log(f"  {v.label}: {note}")
        else:
            runnable.append(v)
    extra: dict[str, Any] = {}
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
        if profile_out is not None:  # every engine variant, so a before/after profiles both sides
            for v in (v for v in runnable if v.tool == "engine"):
                if profile.fresh_fake_per_run:
                    session.start()
                summary = profile_engine(profile, v, session, root, concurrency, speedscope_path(profile_out, v.label))
                extra.setdefault("engine_profiles", {})[v.label] = summary
            extra["engine_profile"] = extra.get("engine_profiles", {}).pop("engine", None)
    finally:
        session.stop()
        harness.drop_tree(root)
    return {"samples": samples, "notes": notes, "bytes": total, "files": n_files, **extra}


def _one_run(profile: Profile, v: Variant, session: FakeSession, root: Path, concurrency: int,
             rep: int, reps: int) -> dict[str, Any]:
    fake = session.fake
    assert fake is not None
    work = root / f"work-{v.label}-{rep}"
    out = root / f"out-{v.label}-{rep}"
    work.mkdir(parents=True)
    expected = fake.expected
    if v.tool == "naive" and profile.naive_files:
        # naive is sequential, so its rate is stationary: measure it on the first files only
        expected = expected[: profile.naive_files]
    wanted = {e.rel_path for e in expected}
    peer = v.tool != "engine"
    ctx = RunContext(fake=fake, files=[], headers={}, out_dir=out, work_dir=work, concurrency=concurrency,
                     timeout=profile.timeout_s, export_overrides={**profile.export_overrides, **v.export_overrides},
                     sha256=session.sha256, resume=profile.resume, repo=v.repo)
    found: list[discovery.PeerDiscovery] = []

    def once(interrupt: Any) -> harness.RunResult:
        if peer:
            list_for_peer(profile, fake, concurrency, wanted, ctx, found)
        ctx.interrupt = interrupt
        return RUNNERS[v.tool](ctx)

    extra: dict[str, Any] = {}
    try:
        if profile.resume:
            outcome = resume.kill_then_rerun(once, fake, expected)
            runs = [outcome.first, outcome.second]
            extra = resume_figures(outcome, sum(e.size for e in expected))
        else:
            c0 = fake.counters()
            runs = [once(None)]
            extra["served_bytes"] = fake.counters()["bytes_sent"] - c0["bytes_sent"]
        good, problems = harness.check_outputs(out, expected)
    finally:
        harness.drop_tree(out)
        harness.drop_tree(work)
    s = run_figures(runs, found, share=len(expected) / len(fake.expected))
    s["ok"] = s["rc"] == 0 and not problems and not extra.get("kill_problem")
    s.update(bytes=sum(e.size for e in expected), files=len(expected), files_ok=good, problems=problems[:5],
             n_problems=len(problems), **extra)
    if not s["ok"]:
        s["stderr_tail"] = runs[-1].stderr_tail[-600:]
    total = s["bytes"]
    disc = f" (discovery {s['discovery_s']:.2f}s)" if s["discovery_s"] is not None else ""
    refetch = f" refetched {s['refetched_bytes'] / 2**20:.1f} MiB" if "refetched_bytes" in s else ""
    log(f"  rep {rep + 1}/{reps} {v.label:<10} {total / s['wall_s'] / 1e6:8.1f} MB/s {s['wall_s']:7.2f}s{disc} "
        f"cpu {s['cpu_s']:6.2f}s rss {s['peak_rss_mib']:6.1f} MiB rc={s['rc']}{refetch} "
        f"{'ok' if s['ok'] else 'NOT OK (' + (extra.get('kill_problem') or f'{len(problems)} bad files') + ')'}")
    return s


def list_for_peer(profile: Profile, fake: harness.Fake, concurrency: int, wanted: set[Path], ctx: RunContext,
                  found: list[discovery.PeerDiscovery]) -> None:
    """The part URLs and gateway headers a peer run gets. The peer's own script lists the batches
    first, every time it is started: that discovery is timed and goes into `found`, which the
    peer's figures include. In a listed profile the peer is handed the same list (the files the
    engine exports): the discovery runs untimed and is not counted."""
    d = discovery.discover(fake, concurrency)
    if not profile.peers_listed:
        found.append(d)
    ctx.files, ctx.headers = [f for f in d.files if f.rel_path in wanted], d.headers


def run_figures(runs: list[harness.RunResult], found: list[discovery.PeerDiscovery], share: float = 1.0) -> dict[str, Any]:
    """One sample's time, CPU and memory: its runs (2 when resumed) plus, for a peer, its discoveries.

    `share` is the fraction of the export a subset run fetched (naive on large profiles): it is
    charged that fraction of the discovery.
    """
    download_s = sum(r.wall_s for r in runs)
    disc_s = sum(d.wall_s for d in found) * share if found else None
    disc_cpu = sum(d.cpu_s for d in found) * share if found else 0.0
    return {
        "wall_s": download_s + (disc_s or 0.0), "cpu_s": sum(r.cpu_s for r in runs) + disc_cpu,
        "peak_rss_mib": max(r.peak_rss_mib for r in runs), "rc": runs[-1].rc,
        "timed_out": any(r.timed_out for r in runs),
        "download_s": download_s, "discovery_s": disc_s, "discovery_cpu_s": disc_cpu if found else None,
        "discovery_requests": sum(d.requests for d in found) if found else None,
        "discoveries_s": [round(d.wall_s, 4) for d in found],  # each full listing, unscaled
    }


def resume_figures(o: resume.Outcome, total: int) -> dict[str, Any]:
    return {"refetched_bytes": o.refetched_bytes, "killed_at_bytes": o.killed_at_bytes,
            "killed_at_fraction": round(o.killed_at_bytes / total, 3) if total else None,
            "first_run_s": o.first.wall_s, "second_run_s": o.second.wall_s,
            "first_run_bytes": o.first_bytes, "second_run_bytes": o.second_bytes,
            "served_bytes": o.first_bytes + o.second_bytes, "kill_problem": o.problem}


def speedscope_path(base: Path, label: str) -> Path:
    """`<stem>.<profile>.speedscope.json` for the engine, `<stem>.<profile>.<label>.speedscope.json` for a variant."""
    return base if label == "engine" else base.with_name(base.name.replace(".speedscope.json", f".{label}.speedscope.json"))


def profile_engine(profile: Profile, v: Variant, session: FakeSession, root: Path, concurrency: int,
                   out: Path) -> dict[str, Any]:
    """One run of engine variant `v` under py-spy (after the measured ones: the profiler's overhead stays out of them)."""
    exe = profiling.py_spy()
    if exe is None:
        return {"error": "py-spy not installed: pip install '.[bench]'"}
    fake = session.fake
    assert fake is not None
    out = out.resolve()  # py-spy writes it from the variant's own tree (another commit's cwd)
    work, dest = root / "work-profile", root / "out-profile"
    work.mkdir(parents=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    ctx = RunContext(fake=fake, files=[], headers={}, out_dir=dest, work_dir=work, concurrency=concurrency,
                     timeout=profile.timeout_s * 2, export_overrides={**profile.export_overrides, **v.export_overrides},
                     prefix=profiling.py_spy_prefix(exe, out), repo=v.repo)
    try:
        r = run_engine(ctx)
        good, problems = harness.check_outputs(dest, fake.expected)
    finally:
        harness.drop_tree(dest)
        harness.drop_tree(work)
    if r.rc != 0 or not out.exists():
        return {"error": f"profiled engine run failed (rc={r.rc})", "stderr_tail": r.stderr_tail[-600:]}
    summary = profiling.summarize_file(out, len(fake.expected), fake.total_bytes)
    summary.update(file=str(out), wall_s=round(r.wall_s, 3), ok=not problems, files_ok=good)
    log(f"  {v.label} profile: {out} ({summary['sampled_s']:.2f} busy thread-s sampled, ok={not problems})")
    return summary


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s.get(key) for s in samples]
    return statistics.median(values) if values and all(v is not None for v in values) else None


def summarize(samples: list[dict[str, Any]], total_bytes: int, n_files: int) -> dict[str, Any]:
    """Medians over the repetitions. A peer's wall time (so mb_s, files_s) and CPU include its discovery."""
    wall = statistics.median(s["wall_s"] for s in samples)
    cpu = statistics.median(s["cpu_s"] for s in samples)
    # a tool measured on a subset (naive on large profiles) reports its own bytes and files
    total_bytes = samples[0].get("bytes", total_bytes) if samples else total_bytes
    n_files = samples[0].get("files", n_files) if samples else n_files
    out = {
        "mb_s": round(total_bytes / wall / 1e6, 2),
        "files_s": round(n_files / wall, 2),
        "cpu_s_per_gib": round(cpu / (total_bytes / GiB), 3) if total_bytes else None,
        "peak_rss_mib": round(statistics.median(s["peak_rss_mib"] for s in samples), 1),
        "ok": all(s["ok"] for s in samples),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "discovery_s": _round(_median(samples, "discovery_s"), 3),  # null for the engine: inside its wall_s
        "download_s": _round(_median(samples, "download_s"), 3),
        "reps": len(samples),
    }
    for key in ("refetched_bytes", "served_bytes"):
        value = _median(samples, key)
        if value is not None:
            out[key] = int(value)
    out["runs"] = samples
    return out


def _round(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd)
