"""Limits (issue #21): --bwlimit, --tps-limit/--tps-burst, and fewer download connections while the
gateway keeps throttling. Rates are judged on the fake's own clock and counters (FakeStats.sent_log,
request_log, in_flight_at_start), never on how long a run took."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from aiolimiter import AsyncLimiter
from conftest import run_export, settings_for

from engine.cli import build_parser, flag_settings
from engine.config import ExportSettings, load_settings
from engine.fake import FakeConfig, FakePlatform
from engine.fake.faults import Faults
from engine.limits import Bandwidth
from engine.transfer.scheduler import Connections
from engine.units import parse_bytes

BASE = {"AEP_EXPORT_PLATFORM__ORG_ID": "X@AdobeOrg", "AEP_EXPORT_AUTH__CLIENT_ID": "cid",
        "AEP_EXPORT_AUTH__CLIENT_SECRET": "s", "AEP_EXPORT_DATASETS": '["5cd9146b31dae914b75f654f"]'}
ROOT = Path(__file__).parent.parent


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("text", "value"), [("20M", 20 << 20), ("512K", 512 << 10), ("1.5GiB", 3 << 29), ("20MB", 20_000_000),
                                             ("20 MB/s", 20_000_000), ("3Mi", 3 << 20), ("1048576", 1 << 20), ("64kB", 64_000)])
def test_sizes_read_as_rclone_curl_and_aria2_read_them(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "M", "20X", "-1", "1e6", "20 MiBps", "1ib"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes(text)


def test_the_limits_come_from_flags_the_environment_and_the_file(tmp_path: Path) -> None:
    args = build_parser().parse_args(["run", "--bwlimit", "20M", "--tps-limit", "10", "--tps-burst", "20"])
    s = load_settings(None, flag_settings(args), environ=BASE)
    assert (s.export.bwlimit, s.export.tps_limit, s.export.tps_burst) == (20 << 20, 10.0, 20)

    env = {**BASE, "AEP_EXPORT_EXPORT__BWLIMIT": "512K", "AEP_EXPORT_EXPORT__TPS_LIMIT": "2.5", "AEP_EXPORT_EXPORT__TPS_BURST": "4"}
    s = load_settings(None, environ=env)
    assert (s.export.bwlimit, s.export.tps_limit, s.export.tps_burst) == (512 << 10, 2.5, 4)

    path = tmp_path / "c.toml"
    path.write_text('[platform]\norg_id = "X@AdobeOrg"\n[auth]\nclient_id = "c"\nclient_secret = "s"\n'
                    '[export]\nbwlimit = "1.5GiB"\ntps_limit = 0\n[[datasets]]\nid = "5cd9146b31dae914b75f654f"\n')
    s = load_settings(path, environ={})
    assert (s.export.bwlimit, s.export.tps_limit, s.export.tps_burst) == (3 << 29, 0, 1)  # 0: no cap; burst 1 as rclone's
    assert load_settings(None, environ=BASE).export.bwlimit is None


def test_the_limits_are_documented() -> None:
    example, readme = (ROOT / "config.example.toml").read_text(), (ROOT / "README.md").read_text()
    for key in ("bwlimit", "tps_limit", "tps_burst"):
        assert f"`export.{key}`" in readme, key
    assert "# bwlimit = " in example and "# tps_limit = " in example  # no default: shown commented out
    assert tomllib.loads(example)["export"]["tps_burst"] == ExportSettings().tps_burst
    assert "### Limits" in readme


# ----------------------------------------------------------------------------- bandwidth


async def test_a_chunk_larger_than_the_bucket_is_taken_in_pieces() -> None:
    """aiolimiter refuses an amount above its capacity; the bucket holds 0.1 s of the rate, so a
    1 MiB chunk under an 8 MiB/s cap is more than it holds, and still passes (in pieces)."""
    cap = Bandwidth(8 << 20)
    assert cap.piece < 1 << 20
    with pytest.raises(ValueError, match="maximum capacity"):
        await AsyncLimiter(cap.piece, 1).acquire(1 << 20)
    await cap.take(1 << 20)
    await cap.take(0)


async def test_a_bandwidth_cap_holds_at_the_server(make_fake: Callable[[FakeConfig], FakePlatform], tmp_path: Path) -> None:
    """--bwlimit 8M, judged on the fake's clock and byte counter: over any second and over the whole
    run the fake sent at most the cap plus the bucket's burst plus what the sockets can hold ahead
    of the engine's reads (loopback buffers whole bodies: at most one per connection, so the files
    are small); over the middle of the run it sent at least 0.8 of the cap (a cap, not a crawl)."""
    cap, conc = 8 << 20, 4
    async with make_fake(FakeConfig.sized(40, 160, seed=5, faults=Faults(chunked=True))) as fp:
        run = await run_export(settings_for(fp, tmp_path / "out", concurrency=conc, bwlimit="8M", fsync=False))
        assert run.totals["files_failed"] == 0 and run.totals["files_downloaded"] == 160
        log = fp.stats.sent_log
        largest = max(e.size for e in fp.expected_files())
    first, last, total = log[0][0], log[-1][0], log[-1][1]
    assert total >= 40 << 20

    def sent_by(t: float) -> int:
        return max((n for when, n in log if when <= t), default=0)

    slack = Bandwidth(cap).piece + conc * largest

    def within_cap(a: float, b: float) -> bool:
        return sent_by(b) - sent_by(a) <= cap * (b - a) + slack

    assert within_cap(first, last), (total / (last - first) / cap, slack / cap)
    assert all(within_cap(t, t + 1.0) for t, _ in log if t + 1.0 <= last)
    span = last - first
    middle = (first + 0.15 * span, last - 0.15 * span)
    rate = (sent_by(middle[1]) - sent_by(middle[0])) / (middle[1] - middle[0])
    assert rate >= 0.8 * cap, rate / cap


# ----------------------------------------------------------------------------- request rate


async def test_a_request_rate_cap_holds_at_the_gateway(make_fake: Callable[[FakeConfig], FakePlatform], tmp_path: Path) -> None:
    """--tps-limit 20 --tps-burst 4: the gateway requests the fake received (Catalog, listings,
    downloads; IMS is not the gateway's quota) come no faster than 20/s after the burst of 4."""
    rate, burst = 20.0, 4
    async with make_fake(FakeConfig.small(n_datasets=2, files=24, rows=40, seed=11)) as fp:
        run = await run_export(settings_for(fp, tmp_path / "out", concurrency=8, tps_limit=rate, tps_burst=burst, fsync=False))
        assert run.totals["files_failed"] == 0
        gateway = sorted(when for when, route in fp.stats.request_log if route != "ims.token")
        routes = {route for _, route in fp.stats.request_log}
    assert {"catalog.batches", "export.batchFiles", "export.download"} <= routes
    assert len(gateway) >= 50
    # every run of requests, on the fake's clock: at most the burst plus the rate, with 100 ms of
    # slack (the fake shares the engine's event loop: a stalled loop delivers requests together)
    slack = 1 + rate * 0.1
    for i in range(len(gateway)):
        for j in range(i + burst, len(gateway)):
            assert j - i + 1 <= burst + rate * (gateway[j] - gateway[i]) + slack, (i, j, gateway[j] - gateway[i])
    overall = (len(gateway) - burst) / (gateway[-1] - gateway[0])
    assert 0.8 <= overall / rate <= 1.08, overall / rate


# ----------------------------------------------------------------------------- adaptive concurrency


async def test_connections_halve_on_sustained_throttling_and_climb_back() -> None:
    pool = Connections(8)
    pool.throttled(pool.epoch)  # one 429: the pause (Retry-After) is enough
    assert pool.allowed == 8
    pool.accepted(pool.epoch)
    pool.throttled(pool.epoch)
    assert pool.allowed == 8  # an accepted answer in between: not sustained
    ticket = pool.epoch
    pool.throttled(ticket)
    assert pool.allowed == 4 and pool.epoch != ticket
    for _ in range(6):
        pool.throttled(ticket)  # answers to requests sent before the change: already answered for
    assert pool.allowed == 4
    for expected in (2, 1, 1):
        pool.throttled(pool.epoch)
        pool.throttled(pool.epoch)
        assert pool.allowed == expected  # never below one
    grown = [pool.allowed]
    while pool.allowed < 8:
        pool.accepted(pool.epoch)
        grown.append(pool.allowed)
    assert len(grown) == 1 + sum(range(1, 8))  # one more per round of accepted requests at each level
    for _ in range(20):
        pool.accepted(pool.epoch)
    assert pool.allowed == 8  # never above export.concurrency


async def test_a_lowered_pool_keeps_the_permits_it_had_lent() -> None:
    pool = Connections(4)
    for _ in range(4):
        pool.acquire_nowait()
    pool.throttled(pool.epoch)
    pool.throttled(pool.epoch)
    assert pool.allowed == 2 and pool.in_use == 4 and pool.value == 0
    for _ in range(4):
        pool.release()
    assert pool.value == 2 and pool.in_use == 0


async def test_a_burst_of_429s_lowers_the_connections_at_the_fake_then_they_climb_back(
        make_fake: Callable[[FakeConfig], FakePlatform], tmp_path: Path) -> None:
    """Download requests 41..56 all answer 429 (Retry-After: 0). Before them the fake serves 8
    bodies at once (export.concurrency). After them the pool is down to one connection and earns
    one more per round of accepted requests: the first 8 bodies start with at most 4 in flight
    (8149c4a: all 8 streams come back at once after the pause); the last ones with 8 again."""
    burst = (41, 56)
    faults = Faults(throttle_downloads=burst, retry_after_s=0, bandwidth_bps=1 << 20)  # a body lasts ~0.1 s
    async with make_fake(FakeConfig.sized(14, 140, seed=9, faults=faults)) as fp:
        run = await run_export(settings_for(fp, tmp_path / "out", concurrency=8, fsync=False))
        assert run.totals["files_failed"] == 0 and run.totals["files_downloaded"] == 140
        flight = list(fp.stats.in_flight_at_start)
        throttled = fp.stats.statuses[429]
    assert throttled == burst[1] - burst[0] + 1
    before, after, end = flight[: burst[0] - 1], flight[burst[0] - 1: burst[0] + 7], flight[-40:]
    assert max(before) >= 7, before
    assert max(after) <= 4, after  # 1, then 2 after one accepted, 3 after two more, 4 after three more
    assert max(end) >= 7, end

