"""bench/: bytes refetched from the fake's per-file counters, and whether a kill landed part-way."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from bench import harness, resume
from bench.harness import ExpectedFile, RunResult


def ef(dsf: str, name: str, size: int) -> ExpectedFile:
    return ExpectedFile("ds", "b", dsf, name, size, "0" * 64)


EXPECTED = [ef("b-1", "p0", 100), ef("b-1", "p1", 50), ef("b-2", "p0", 80)]


def snap(**by_file: int) -> dict:
    counts = {k.replace("__", "/"): v for k, v in by_file.items()}
    return {"bytes_sent": sum(counts.values()), "bytes_by_file": counts}


def test_refetched_is_what_each_file_was_served_beyond_its_size() -> None:
    before = snap(**{"b-1__p0": 7, "other__x": 999})  # earlier runs and other files do not count
    after = snap(**{"b-1__p0": 7 + 100 + 30, "b-1__p1": 50, "b-2__p0": 80 + 80, "other__x": 5000})
    assert resume.refetched_bytes(before, after, EXPECTED) == 30 + 0 + 80
    assert resume.served(before, after, EXPECTED) == {"b-1/p0": 130, "b-1/p1": 50, "b-2/p0": 160}


def test_a_file_served_less_than_its_size_refetched_nothing() -> None:
    assert resume.refetched_bytes(snap(), snap(**{"b-1__p0": 60}), EXPECTED) == 0


def run(rc: int | None, interrupted: bool) -> RunResult:
    return RunResult(argv=["x"], rc=rc, wall_s=1.0, cpu_s=0.1, peak_rss_mib=1.0, interrupted=interrupted)


@pytest.mark.parametrize("first, killed_at, landed", [
    (run(-9, True), 600, True),
    (run(0, False), 600, False),  # finished before the kill
    (run(0, True), 600, False),  # asked, but it had exited by itself
    (run(-9, True), 1000, False),  # every byte was already served
    (run(-9, True), 0, False),
])
def test_kill_problem_says_whether_the_kill_landed_part_way(first: RunResult, killed_at: int, landed: bool) -> None:
    assert (resume.kill_problem(first, killed_at, 1000) is None) == landed


def test_fake_server_counts_per_file_under_the_key_resume_uses(tmp_path: Path) -> None:
    """The bench's fake process: the stats port's counters move with downloads, keyed as file_key says."""
    fake = harness.start_fake(["--preset", "small", "--datasets", "1", "--files-per-batch", "2", "--rows-per-file", "300",
                               "--data-dir", str(tmp_path / "data")], timeout=120, log_dir=tmp_path / "log")
    try:
        from bench.discovery import discover

        c0 = fake.counters()
        assert c0["bytes_sent"] == 0
        found = discover(fake, 2)
        e, f = fake.expected[0], found.files[0]
        assert f.rel_path == e.rel_path
        for headers in ({}, {"Range": f"bytes={e.size // 2}-"}):
            with urllib.request.urlopen(urllib.request.Request(f.url, headers=found.headers | headers)) as r:
                r.read()
        c1 = fake.counters()
        assert c1["bytes_by_file"][resume.file_key(e)] == e.size + (e.size - e.size // 2)
        assert resume.refetched_bytes(c0, c1, fake.expected) == e.size - e.size // 2
    finally:
        fake.stop()
    assert fake.proc.poll() is not None
