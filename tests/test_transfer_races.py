"""Two races the test review reproduced in the transfer code (both fixed; these keep them fixed):
a file starting over while another file's stream lends connections, and the aiofiles write
strategy with several streams writing one file."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import pytest
from aiohttp import web
from conftest import assert_files_match, expected_path, read_report, run_export, settings_for

from engine.fake import DatasetSpec, FakeConfig, Faults
from engine.outcome import EXIT_OK
from engine.output import local
from engine.transfer.scheduler import Scheduler


def _one_batch(**spec) -> DatasetSpec:
    return DatasetSpec(batches=1, failed_batch=False, processing_batch=False, **spec)


async def test_a_file_starting_over_while_another_file_streams(tmp_path: Path, make_fake, monkeypatch) -> None:
    """Bug 1: Downloader._fill awaits `job.target.restart()` in its `except` branch, i.e. after the
    file's task group ended but before `finally` takes the job out of `scheduler.jobs`. A stream of
    another file that lends free connections in that window picks this job (it has a gap nobody
    fills) and calls `start_soon` on the dead task group: the OTHER file fails with "RuntimeError:
    This task group is not active", and the claim added by split_claim is never released, so the
    restarted file ends with "streams ended with bytes still missing".

    Deterministic: the restart waits until another stream has lent in the window (the real window
    is a thread hop; the fake's misbehaving 206 makes the file start over)."""
    window = {"open": False}
    lent_in_window = asyncio.Event()
    original_restart, original_lend = local.LocalTarget.restart, Scheduler.lend

    async def slow_restart(self) -> None:
        window["open"] = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lent_in_window.wait(), timeout=30)
        window["open"] = False
        await original_restart(self)

    def lend(self):
        lent = original_lend(self)
        if window["open"]:
            lent_in_window.set()
        return lent

    monkeypatch.setattr(local.LocalTarget, "restart", slow_restart)
    monkeypatch.setattr(Scheduler, "lend", lend)

    # Two files of ~1.5 MB at 0.5 MB/s: too small to split each other, slow enough to flush (and
    # lend) every 0.5 s while the victim starts over.
    fp = make_fake(FakeConfig(seed=59, faults=Faults(bandwidth_bps=0.5e6), datasets=[_one_batch(files_per_dataset_file=2, file_mb=1.5)]))
    original_files, served = fp.h_files, []

    async def h_files(request: web.Request) -> web.StreamResponse:
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        if m and int(m.group(1)) > 0 and not served and request.query.get("path") == victim.name:
            start, size = int(m.group(1)), victim.size
            served.append(start)  # the file changed on the server: another total
            return web.Response(status=206, body=b"\xa5" * 4096, headers={"Content-Range": f"bytes {start}-{start + 4095}/{size + 10}"})
        return await original_files(request)

    fp.h_files = h_files
    async with fp:
        victim = fp.expected_files()[0]
        out = tmp_path / "out"
        final = expected_path(out, victim)
        final.parent.mkdir(parents=True)
        src = victim.source_path.read_bytes()
        final.with_name(final.name + ".part").write_bytes(src[: len(src) // 2])  # resumed: a ranged request

        run = await run_export(settings_for(fp, out, concurrency=4))

    assert served and lent_in_window.is_set(), "the window was never hit: this reproduction proves nothing"
    assert run.exit_code == EXIT_OK, [b.errors for b in run.batches()] or read_report(out)
    assert_files_match(out, fp.expected_files())


@pytest.mark.parametrize("attempt", range(3))
async def test_aiofiles_strategy_writes_a_split_file_exactly(attempt: int, tmp_path: Path, make_fake) -> None:
    """Bug 2: with export.write_strategy = "aiofiles", all streams of a file share one aiofiles
    handle and LocalTarget._flush_aiofiles does `await seek(offset)` then `await write(chunk)`:
    two streams of a split file interleave between the two awaits and write at each other's
    offsets. The .part grows past the file's size ("9385486 bytes held, 8336910 expected"), the
    file is refetched whole, and after two refetches it fails (exit 1) in about half the runs.
    In-order bytes are hashed from memory, not from the disk, so a misplaced write that stays
    inside the size is not excluded from reaching a committed file either.

    Racy by nature: three runs, each must fetch the file once and exactly (observed: 1 in 6 does)."""
    cfg = FakeConfig(seed=12, faults=Faults(bandwidth_bps=4e6), datasets=[_one_batch(files_per_dataset_file=1, file_mb=8)])
    async with make_fake(cfg) as fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, concurrency=4, write_strategy="aiofiles"))
    assert run.exit_code == EXIT_OK, [b.errors for b in run.batches()]
    assert run.totals["split_files"] == 1 and run.totals["restarts"] == 0, run.totals
    assert_files_match(out, fp.expected_files())
