"""Small pure rules whose regressions no end-to-end test notices (each was proved by a mutation
that the whole suite let through): where credentials may go, the retry loop's continuation and
per-file budget, the pool-wide throttle pause, when free connections are lent, which run `status`
judges, and the shard a name or segment entry falls to."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import run_export, settings_for

from engine.config import AudienceSettings, DatasetSettings, ExportSettings
from engine.errors import Throttled, TransferError
from engine.fake import FakeConfig
from engine.outcome import EXIT_OK
from engine.output.status import export_status
from engine.pieces import Download
from engine.platform.origin import same_origin
from engine.retry import Budget, RetryPolicy
from engine.shard import entry_key, shard_of
from engine.transfer.fetcher import FileJob
from engine.transfer.scheduler import Scheduler

# ----------------------------------------------------------------------------- origins


@pytest.mark.parametrize("a, b", [
    ("https://platform.adobe.io", "http://platform.adobe.io:443/data"),  # the gateway's port, in clear text
    ("http://127.0.0.1:8080", "https://127.0.0.1:8080/data"),
])
def test_the_scheme_alone_makes_another_origin(a: str, b: str) -> None:
    """Same host, same effective port, another scheme: no credentials go there (a bearer token
    sent over plain http to the gateway's port is a token on the wire)."""
    assert not same_origin(a, b) and not same_origin(b, a)


# ----------------------------------------------------------------------------- the retry loop


async def test_failures_after_progress_continue_at_once_and_do_not_count() -> None:
    """A response cut after progress (the gateway's time limit, a reset mid-body) continues from
    the bytes held however often it happens: no back-off, no retry counted, no budget spent."""
    policy, budget, position = RetryPolicy(max_attempts=2, base=0.0, cap=0.0), Budget(2), [0]

    async def cut_after_progress() -> str:
        position[0] += 100
        if position[0] < 2000:
            raise TransferError("response cut")
        return "whole"

    assert await policy.run(cut_after_progress, what="f", progress=lambda: position[0], budget=budget) == "whole"
    assert (policy.continuations, policy.retries, budget.spent) == (19, 0, 0)


async def test_a_files_budget_is_shared_by_all_its_streams() -> None:
    policy, budget = RetryPolicy(max_attempts=50, base=0.0, cap=0.0), Budget(5)
    calls: list[int] = []

    async def always_fails() -> None:
        calls[-1] += 1
        raise TransferError("reset")

    for _ in range(3):  # three streams of one file
        calls.append(0)
        with pytest.raises(TransferError):
            await policy.run(always_fails, what="f", progress=lambda: 0, budget=budget)
    assert calls == [5, 1, 1]  # the budget, not each stream's max_attempts, bounds the file


async def test_a_throttle_pauses_every_request_of_the_pool() -> None:
    """One 429 with Retry-After: another request (another file, no failure of its own) waits too.
    Only a lower bound is asserted: a loaded machine can make the wait longer, never shorter."""
    policy = RetryPolicy(base=0.0, cap=0.0)
    throttled_at = time.monotonic()
    policy.delay_for(Throttled(429, "Too many requests", retry_after=0.4), 1)
    sent_at: list[float] = []

    async def other_request() -> None:
        sent_at.append(time.monotonic())

    await policy.run(other_request, what="another file")
    assert sent_at[0] - throttled_at >= 0.4


# ----------------------------------------------------------------------------- lending connections


async def test_free_connections_are_lent_only_when_no_file_waits_for_a_worker() -> None:
    scheduler = Scheduler(ExportSettings(concurrency=4))
    download = Download(64 << 20)
    download.next_claim()
    scheduler.jobs.add(FileJob(task=None, download=download, target=None, budget=Budget(1)))  # type: ignore[arg-type]
    scheduler.files_in_flight = 1

    scheduler.queue_idle = lambda: False  # files are waiting: a free connection is theirs
    assert scheduler.lend() == [] and len(download.claims) == 1 and scheduler.connections.value == 4

    scheduler.queue_idle = lambda: True
    lent = scheduler.lend()
    # one file in flight: its fair share is every connection, i.e. 4 streams (the 4th is its own)
    assert len(lent) == 3 and scheduler.connections.value == 1 and len(download.claims) == 4


# ----------------------------------------------------------------------------- status


async def test_status_judges_the_newest_run_and_ignores_reports_of_another_shard_count(tmp_path: Path, make_fake) -> None:
    """A complete unsharded export, then a 2-shard rerun that is still running (shard 1 never
    started): the export is not complete, whatever the older report says."""
    async with make_fake(FakeConfig.small(n_datasets=1, files=1, rows=20, seed=56)) as fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
    older = json.loads((out / "_report.json").read_text())
    older["started_at"] = "2001-01-01T00:00:00+00:00"
    (out / "_report.json").write_text(json.dumps(older))
    assert export_status(out).complete  # on its own, the unsharded run is complete

    (out / "_report.shard-0-of-2.json").write_text(json.dumps(
        {"status": "running", "started_at": "2002-01-01T00:00:00+00:00", "entries": [f"dataset:{fp.dataset_ids[0]}"]}))
    status = export_status(out)
    assert not status.complete
    assert status.shards == 2 and status.ignored == ["_report.json"] and status.reports == ["_report.shard-0-of-2.json"]
    assert {r.shard for r in status.rows if r.state == "missing"} == {"0/2", "1/2"}


# ----------------------------------------------------------------------------- shards


def test_name_and_segment_entries_fall_to_a_stable_shard() -> None:
    """The shard of every entry form is a contract between pods of different builds (the id form
    is pinned in test_sharding.py). Values from coreutils: printf KEY | sha256sum, first 16 hex
    digits as an unsigned number, mod 7."""
    name = DatasetSettings(name="Propensity scores")
    segment = AudienceSettings(segment_id="seg-high-value")
    job = AudienceSettings(export_job_id="11037")
    assert [entry_key(e) for e in (name, segment, job)] == [
        "dataset:Propensity scores", "audience:segment:seg-high-value", "audience:11037"]
    assert [shard_of(entry_key(e), 7) for e in (name, segment, job)] == [0, 3, 5]

