"""Audiences end to end (aep-api.md §6): from a segment id to its exported batch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_files_match, read_report, run_export

from engine.config import Settings
from engine.fake import DatasetSpec, FakeConfig
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.retry import RetryPolicy

SEGMENT = "seg-high-value"


def settings(fp: Any, out: Path, audiences: list[dict], datasets: list[Any] | None = None) -> Settings:
    return Settings.model_validate({
        "platform": {"url": fp.url, "org_id": fp.org_id, "sandbox": fp.sandbox},
        "auth": {"client_id": fp.client_id, "client_secret": fp.client_secret, "ims_url": fp.ims_url},
        "export": {"out_dir": out, "concurrency": 4, "backoff_base": 0.01, "backoff_cap": 0.05},
        "datasets": datasets or [], "audiences": audiences,
    })


def org(**cfg: Any) -> FakeConfig:
    """A scores dataset, and the profile export data of one segment (not in the Catalog until exported)."""
    return FakeConfig(seed=91, datasets=[
        DatasetSpec(files_per_dataset_file=2, rows_per_file=20),
        DatasetSpec(segment_id=SEGMENT, files_per_dataset_file=3, rows_per_file=30, failed_batch=False, processing_batch=False),
    ], **cfg)


async def test_an_audience_from_a_segment_id(tmp_path: Path, make_fake) -> None:
    async with make_fake(org(batch_polls_to_success=2)) as fp:
        (scores,) = fp.dataset_ids  # the segment's data is not a visible dataset yet
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, [{"segment_id": SEGMENT}], [scores]))
        assert run.exit_code == EXIT_OK, read_report(out)
        (created,) = fp.created_dataset_ids  # the target dataset was created for it...
        assert fp.stats.requests["catalog.createDataSet"] == 1 and fp.stats.requests["ups.jobs.create"] == 1
        # ...and the job's batch exported into {out}/{that dataset}/{batch}/
        audience = [e for e in fp.expected_files() if e.dataset_id == created]
        assert len(audience) == 3
        assert_files_match(out, fp.expected_files())
        report = {d["dataset_id"]: d for d in read_report(out)["datasets"]}
        assert report[created]["status"] == "ok" and report[created]["source"].startswith("audience:")
        # the job was polled to SUCCEEDED, and the batch past "loading" to success before any download
        assert fp.stats.requests["ups.jobs.get"] >= fp.cfg.job_polls_to_success
        assert fp.stats.requests["catalog.batch"] == fp.cfg.batch_polls_to_success + 1


async def test_an_audience_into_a_given_dataset(tmp_path: Path, make_fake) -> None:
    async with make_fake(org()) as fp:
        import aiohttp

        h = {"Authorization": f"Bearer {fp.static_token}", "x-api-key": fp.client_id,
             "x-gw-ims-org-id": fp.org_id, "x-sandbox-name": fp.sandbox}
        body = {"name": "Audience exports", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union"}}
        async with aiohttp.ClientSession() as http, http.post(f"{fp.url}/data/foundation/catalog/dataSets", json=body, headers=h) as r:
            (ref,) = await r.json()
        target = ref.rsplit("/", 1)[1]
        fp.reset_stats()
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, [{"segment_id": SEGMENT, "dataset_id": target}]))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert fp.stats.requests["catalog.createDataSet"] == 0 and fp.created_dataset_ids == [target]
        assert_files_match(out, [e for e in fp.expected_files() if e.dataset_id == target])


async def test_a_failed_job_fails_its_audience_with_the_reason_and_the_run_goes_on(tmp_path: Path, make_fake) -> None:
    async with make_fake(org()) as fp:
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, [{"segment_id": "no-such-segment"}, {"segment_id": SEGMENT}], fp.dataset_ids))
        assert run.exit_code == EXIT_FAILED
        report = read_report(out)["datasets"]
        failed = [d for d in report if d["status"] == "failed"]
        assert len(failed) == 1 and len(report) == 3
        assert "ended FAILED" in failed[0]["error"] and "Segment definition 'no-such-segment' not found" in failed[0]["error"]
        assert_files_match(out, fp.expected_files())  # the dataset and the other audience were exported


async def test_a_cancelled_job_given_by_id_fails_with_its_reason(tmp_path: Path, make_fake) -> None:
    cfg = FakeConfig(seed=92, job_polls_to_success=5, datasets=[DatasetSpec(audience_job=True, files_per_dataset_file=1, rows_per_file=20)])
    async with make_fake(cfg) as fp:
        import aiohttp

        (job,) = fp.export_job_ids
        h = {"Authorization": f"Bearer {fp.static_token}", "x-api-key": fp.client_id,
             "x-gw-ims-org-id": fp.org_id, "x-sandbox-name": fp.sandbox}
        async with aiohttp.ClientSession() as http, http.delete(f"{fp.url}/data/core/ups/export/jobs/{job}", headers=h) as r:
            assert r.status == 200
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, [{"export_job_id": job}]))
        assert run.exit_code == EXIT_FAILED
        (audience,) = read_report(out)["datasets"]
        assert f"audience export job {job} ended FAILED" in audience["error"] and "Cancelled" in audience["error"]


async def test_a_slow_job_is_polled_with_the_policys_growing_back_off(tmp_path: Path, make_fake, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []
    real_backoff = RetryPolicy.backoff

    def backoff(self: RetryPolicy, attempt: int) -> float:
        attempts.append(attempt)
        return real_backoff(self, attempt)

    monkeypatch.setattr(RetryPolicy, "backoff", backoff)
    async with make_fake(org(job_polls_to_success=6, batch_polls_to_success=3)) as fp:
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, [{"segment_id": SEGMENT}]))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert_files_match(out, [e for e in fp.expected_files() if e.dataset_id in fp.created_dataset_ids])
        assert fp.stats.requests["ups.jobs.get"] == 6 and fp.stats.requests["catalog.batch"] == 4
        # the waits came from RetryPolicy.backoff, attempt numbers rising per wait: 1..5 for the job, 1..3 for the batch
        assert attempts == [1, 2, 3, 4, 5, 1, 2, 3]


async def test_a_job_still_running_at_wait_timeout_fails_in_time(tmp_path: Path, make_fake) -> None:
    async with make_fake(org(job_polls_to_success=10_000)) as fp:
        out = tmp_path / "out"
        started = time.monotonic()
        run = await run_export(settings(fp, out, [{"segment_id": SEGMENT, "wait_timeout": 0.5}], fp.dataset_ids))
        assert time.monotonic() - started < 10
        assert run.exit_code == EXIT_FAILED
        audience = next(d for d in read_report(out)["datasets"] if d["source"].startswith("audience:"))
        assert "still PROCESSING at its wait_timeout" in audience["error"]
        assert_files_match(out, fp.expected_files())  # the dataset was exported meanwhile


async def test_the_one_poll_loop_returns_fails_or_times_out_as_each_waiter_says() -> None:
    """Jobs, DLZ runs and audience batches wait through one loop (engine/platform/polling.py): a done
    status returns the object, a failed one fails at once with its reason, any other polls again
    until the deadline, which fails naming the last status and the setting that set it."""
    from engine.errors import ExportError
    from engine.platform.polling import wait_for_status

    class Failed(ExportError):
        pass

    seen: list[str] = []

    def looking(*statuses: str):
        async def look():
            status = statuses[min(len(seen), len(statuses) - 1)]
            seen.append(status)
            return {"status": status}, "job j", status
        return look

    policy = RetryPolicy(max_attempts=1, base=0.0, cap=0.0)
    rules = {"done": {"ok"}, "failed": {"bad"}, "why": lambda obj: f": {obj['status']}!", "fails": Failed, "what": "job j"}
    soon = time.monotonic() + 30
    assert await wait_for_status(policy, looking("queued", "running", "ok"), deadline=soon, **rules) == {"status": "ok"}
    assert seen == ["queued", "running", "ok"]  # polled past the single attempt max_attempts allows
    seen.clear()
    with pytest.raises(Failed, match=r"^job j ended bad: bad!$"):
        await wait_for_status(policy, looking("running", "bad"), deadline=soon, **rules)
    assert seen == ["running", "bad"]
    seen.clear()
    with pytest.raises(Failed, match=r"^job j is still running at the job's limit$"):
        await wait_for_status(policy, looking("running"), deadline=time.monotonic(), limit="the job's limit", **rules)
