"""Bounded requests and stalls (issue #17, cases 3 and 8), end to end against tests/liar/bodies.py.

An attempt that keeps no checked bytes is a failed attempt (back-off, the file's failure budget),
whatever the reason; a file has a ceiling of requests; a response slower than
`export.lowest_speed` bytes/s for `export.lowest_speed_time` seconds is cut and retried. Before,
an HTML page for a `.parquet` and a short first chunk each cost thousands of requests without
end, a trickle never timed out, and drip-and-stall reset the failure count forever.

Every test bounds its own run (anyio.fail_after); the windows are short here (0.3 s), and the
unit tests at the end show what the defaults bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import assert_files_match, expected_path, run_export, settings_for
from liar import bodies
from structlog.testing import capture_logs

from engine.config import ExportSettings
from engine.fake import DatasetSpec, FakeConfig
from engine.fake.data import ExpectedFile
from engine.model import FileResult
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.output.report import RunOutcome
from engine.retry import MIN_PROGRESS, RetryPolicy, SpeedWindow, request_ceiling, stall_bound

WINDOW = 0.3  # export.lowest_speed_time in these tests
CEILING = 40  # export.max_file_requests in these tests
FAST = {"lowest_speed": 1024, "lowest_speed_time": WINDOW, "max_file_requests": CEILING}


def _small(seed: int) -> FakeConfig:
    return FakeConfig.small(n_datasets=1, files=2, rows=400, seed=seed)


def _mib(seed: int) -> FakeConfig:
    """Two parts of about 1 MiB: the victim is split between two streams."""
    return FakeConfig(seed=seed, datasets=[DatasetSpec(files_per_dataset_file=2, file_mb=1.0)])


async def _run(fp: Any, out: Path, seconds: float, **export: Any) -> RunOutcome:
    with anyio.fail_after(seconds):  # the test's own bound: a storm or a hang fails here
        return await run_export(settings_for(fp, out, **{**FAST, **export}))


def _result(run: RunOutcome, victim: ExpectedFile) -> FileResult:
    found = [r for b in run.batches() for r in b.results if r.task.name == victim.name]
    assert len(found) == 1, found
    return found[0]


def _failed_alone(run: RunOutcome, fp: Any, out: Path, victim: ExpectedFile) -> str:
    """The victim failed, nothing is under its final name, every other file is exported."""
    result = _result(run, victim)
    assert not result.ok and result.error, result
    assert run.exit_code == EXIT_FAILED
    assert not expected_path(out, victim).exists()
    for other in fp.expected_files():
        if other.name != victim.name:
            assert expected_path(out, other).is_file(), other.name
    return result.error


# ----------------------------------------------------------------------------- case 3: storms


@pytest.mark.parametrize("length", ["listed", "sent", "none"])
async def test_an_html_page_for_a_parquet_fails_the_file_and_says_what_it_got(length: str, tmp_path: Path, make_fake) -> None:
    # about 1 MiB, so that two streams fetch it: the second one skips to its offset in each 200
    fp = make_fake(_mib(71))
    victim = bodies.victim_of(fp)
    served = bodies.html_page(fp, victim, length=length)
    async with fp:
        with capture_logs() as logs:
            run = await _run(fp, tmp_path / "out", 30)

    assert len(served) <= 2 * RetryPolicy().max_attempts, served  # failed attempts, each with its back-off
    error = _failed_alone(run, fp, tmp_path / "out", victim)
    assert "not parquet: starts with '<!DOCTYPE html>" in error, error
    warned = [e for e in logs if e["log_level"] == "warning" and "<!DOCTYPE" in str(e.get("error"))]
    assert warned, "what the server sent was never logged at warning level"


async def test_a_short_first_chunk_behind_a_delay_is_kept_until_it_can_be_checked(tmp_path: Path, make_fake) -> None:
    fp = make_fake(_small(72))
    victim = bodies.victim_of(fp)
    served = bodies.short_first_chunk(fp, victim, delay=0.1)
    async with fp:
        run = await _run(fp, tmp_path / "out", 30)

    assert run.exit_code == EXIT_OK, _result(run, victim).error
    assert_files_match(tmp_path / "out", fp.expected_files())
    assert len(served) == 1, served  # one request: the 2 bytes wait for the rest, no storm


# ----------------------------------------------------------------------------- case 8: stalls


async def test_a_body_that_stops_half_way_fails_in_bounded_time(tmp_path: Path, make_fake) -> None:
    fp = make_fake(_mib(73))
    victim = bodies.victim_of(fp)
    served = bodies.stop_halfway(fp, victim)
    async with fp:
        run = await _run(fp, tmp_path / "out", 30)

    error = _failed_alone(run, fp, tmp_path / "out", victim)
    assert "slower than 1024 bytes/s" in error, error
    assert len(served) <= CEILING, served


async def test_a_trickle_of_one_byte_every_1_5_s_is_cut(tmp_path: Path, make_fake) -> None:
    fp = make_fake(_small(74))
    victim = bodies.victim_of(fp)
    served = bodies.trickle(fp, victim, every=1.5)
    async with fp:
        run = await _run(fp, tmp_path / "out", 30)

    error = _failed_alone(run, fp, tmp_path / "out", victim)
    assert "slower than 1024 bytes/s" in error, error
    assert len(served) <= RetryPolicy().max_attempts, served


async def test_drip_and_stall_does_not_reset_the_failure_count(tmp_path: Path, make_fake) -> None:
    fp = make_fake(_mib(75))
    victim = bodies.victim_of(fp)
    served = bodies.drip_and_stall(fp, victim, drip=4096)
    async with fp:
        run = await _run(fp, tmp_path / "out", 30)

    _failed_alone(run, fp, tmp_path / "out", victim)
    # each stream (at most two for this size) gives up after max_attempts responses of 4 KiB
    assert len(served) <= 2 * RetryPolicy().max_attempts, served


async def test_the_request_ceiling_ends_a_file_whose_every_response_makes_some_progress(tmp_path: Path, make_fake) -> None:
    fp = make_fake(_mib(76))
    victim = bodies.victim_of(fp)
    served = bodies.drip_and_stall(fp, victim, drip=MIN_PROGRESS + (16 << 10))  # counts as progress every time
    async with fp:
        run = await _run(fp, tmp_path / "out", 30, max_file_requests=5)

    error = _failed_alone(run, fp, tmp_path / "out", victim)
    assert "export.max_file_requests" in error and "slower than" in error, error
    size = next(e.size for e in fp.expected_files() if e.name == victim.name)  # known once generated
    assert len(served) <= request_ceiling(5, size) < size // MIN_PROGRESS, served


# ----------------------------------------------------------------------------- the defaults


def test_the_default_speed_window_cuts_stalls_and_trickles_within_a_window_and_a_quarter() -> None:
    defaults = ExportSettings()
    window, rate = defaults.lowest_speed_time, defaults.lowest_speed

    def cut_after(bytes_at, flushing=lambda t: 0.0) -> float | None:
        """Drive a SpeedWindow as the fetcher's timer does, on a clock of our own: when it would
        cut the response (None: not in 10 minutes). `flushing(t)`: our own time spent by then."""
        sw = SpeedWindow(rate, window, start=0.0)
        for tick in range(1, int(600 / sw.step)):
            t = tick * sw.step
            if sw.too_slow(t - flushing(t), int(bytes_at(t))):
                return t
        return None

    stalled = cut_after(lambda t: min(t, 5.0) * 2e6)  # 2 MB/s for 5 s, then nothing
    assert stalled is not None and stalled - 5.0 <= 1.25 * window + 1e-9, stalled
    assert cut_after(lambda t: 0) == pytest.approx(window)  # nothing from the start
    trickle = cut_after(lambda t: t / 1.5)  # one byte every 1.5 s
    assert trickle is not None and trickle <= 1.25 * window + 1e-9, trickle
    assert cut_after(lambda t: t * 2 * rate) is None  # twice the limit: never cut
    assert cut_after(lambda t: t * rate / 2 if t < 100 else 50 * rate + (t - 100) * 10 * rate) is not None
    # our own time (a slow disk, a full spool) is not the server's slowness
    assert cut_after(lambda t: min(t, 1.0) * 4 * rate, flushing=lambda t: max(0.0, t - 1.0)) is None


def test_with_the_default_settings_a_file_whose_every_response_stalls_ends_within_five_minutes() -> None:
    defaults = ExportSettings()
    window, attempts = defaults.lowest_speed_time, min(defaults.max_attempts, defaults.max_file_attempts)
    # the response that stalls: cut within a window and a quarter (above); then each failed
    # attempt is cut after one window, and waits at most its back-off's cap before the next
    policy = RetryPolicy(max_attempts=defaults.max_attempts, base=defaults.backoff_base, cap=defaults.backoff_cap)
    backoffs = [min(policy.cap, policy.base * 2**k) for k in range(1, attempts)]
    assert all(policy.backoff(k) <= cap for k, cap in enumerate(backoffs, 1) for _ in range(50))
    assert stall_bound(defaults) == pytest.approx(1.25 * window + attempts * window + sum(backoffs))
    assert stall_bound(defaults) <= 300, stall_bound(defaults)  # before: ~10 min, and never for a trickle


def test_the_new_settings_are_documented_with_their_defaults() -> None:
    import tomllib

    root = Path(__file__).parent.parent
    example = tomllib.loads((root / "config.example.toml").read_text())["export"]
    readme = (root / "README.md").read_text()
    defaults = ExportSettings()
    for key in ("max_file_requests", "lowest_speed", "lowest_speed_time"):
        assert example[key] == getattr(defaults, key), key
        assert f"`export.{key}`" in readme, key
