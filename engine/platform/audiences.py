"""Audiences (aep-api.md §6): a segment exported into a dataset by a profile export job.

From a segment id: create the target dataset (Profile union schema) unless one is given, post
the export job, poll it to SUCCEEDED, wait for its Catalog batch to reach success; the batch is
then exported like any other. From an export job id: the same without the first two steps.
Polls go through the run's one retry loop (RetryPolicy.run with a deadline: jittered back-off, capped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..config import AudienceSettings
from ..errors import ExportError, NotFound
from ..retry import RetryPolicy
from .catalog import CatalogApi
from .client import PlatformClient
from .polling import wait_for_status

log = structlog.get_logger("aep_export.audiences")

SEGMENTATION = "/data/core/ups"
DONE_JOB = "SUCCEEDED"
FAILED_JOB = frozenset({"FAILED", "CANCELLED", "CANCELLING"})  # CANCELLED: the segment-job wording


class AudienceFailed(ExportError):
    """The export job failed or was cancelled (its reason included), or did not finish in time."""

    kind = "audience_failed"


@dataclass
class AudiencePlan:
    """What `check` says of an audience: what a run would do, and any batch already known."""

    actions: list[str] = field(default_factory=list)
    batches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (dataset, key, obj)


class AudienceJobs:
    """Export jobs through the run's client; the datasets and batches they write, through the Catalog."""

    def __init__(self, client: PlatformClient, catalog: CatalogApi):
        self.client = client
        self.catalog = catalog

    @property
    def policy(self) -> RetryPolicy:
        """The run's failure policy; its back-off paces the polls of jobs and batches."""
        return self.client.policy

    async def audience_batches(self, aud: AudienceSettings, on_job: Any = None) -> list[tuple[str, str, dict[str, Any]]]:
        """(dataset id, batch id, Catalog object) of each batch the audience's job wrote, once downloadable."""
        deadline = time.monotonic() + aud.wait_timeout
        job_id = aud.export_job_id or await self.start_segment_export(_segment(aud), aud.dataset_id)
        if on_job is not None:
            on_job(job_id)
        job = await self.wait_for_job(job_id, deadline)
        return [(dataset_id, batch_id, await self.catalog.wait_until_downloadable(batch_id, deadline, self.policy))
                for dataset_id, batch_id in job_batches(job)]

    async def start_segment_export(self, segment_id: str, dataset_id: str | None) -> str:
        if dataset_id is None:
            dataset_id = await self.catalog.create_profile_dataset(dataset_name_for(segment_id))
            log.info("dataset_created", segment=segment_id, dataset=dataset_id,
                     note=f"to export into it again, set dataset_id = \"{dataset_id}\" in this [[audiences]] entry")
        job = await self.client.post_json(f"{SEGMENTATION}/export/jobs", export_job_body(segment_id, dataset_id))
        job_id = job.get("id") if isinstance(job, dict) else None
        if job_id is None or job_id == "":
            raise ExportError(f"posting the export job for segment {segment_id} answered without a job id")
        log.info("export_job_started", segment=segment_id, dataset=dataset_id, job=str(job_id),
                 note=f"a rerun can wait for this job with export_job_id = \"{job_id}\" instead of starting another")
        return str(job_id)

    async def wait_for_job(self, job_id: str, deadline: float) -> dict[str, Any]:
        async def look() -> tuple[dict[str, Any], str, str]:
            job: dict[str, Any] = await self.client.get_json(f"{SEGMENTATION}/export/jobs/{job_id}")
            return job, f"audience export job {job_id}", job_status(job)

        return await wait_for_status(self.policy, look, done={DONE_JOB}, failed=FAILED_JOB, why=job_failure,
                                     fails=AudienceFailed, what=f"export job {job_id}", deadline=deadline)

    async def audience_plan(self, aud: AudienceSettings) -> AudiencePlan:
        """What a run would do for this audience, creating and starting nothing."""
        plan = AudiencePlan()
        wait = f"wait up to {aud.wait_timeout:.0f} s for it and for its batch to reach success, and export that batch"
        if aud.segment_id is not None:
            if aud.dataset_id is None:
                plan.actions.append(f"create dataset {dataset_name_for(aud.segment_id)!r} (Profile union schema)")
                target = "it"
            else:
                await self.catalog.dataset(aud.dataset_id)  # NotFound says so
                target = f"dataset {aud.dataset_id}"
            plan.actions.append(f"post an export job for segment {aud.segment_id} into {target}, {wait}")
            return plan
        job = await self.client.get_json(f"{SEGMENTATION}/export/jobs/{aud.export_job_id}")
        status = job_status(job)
        if status in FAILED_JOB:
            raise AudienceFailed(f"audience export job {aud.export_job_id} ended {status}{job_failure(job)}")
        if status != DONE_JOB:
            plan.actions.append(f"export job {aud.export_job_id} is {status or 'without status'}: a run would {wait}")
            return plan
        for dataset_id, batch_id in job_batches(job):
            try:
                obj = await self.catalog.batch(batch_id)
            except NotFound:
                obj = {}
            plan.batches.append((dataset_id, batch_id, obj))
        return plan


def dataset_name_for(segment_id: str) -> str:
    return f"aep-export audience {segment_id} {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}"


def export_job_body(segment_id: str, dataset_id: str) -> dict[str, Any]:
    """The least the export-job API needs (§6.2): the segment, the target dataset, the schema.
    Membership statuses and the merge policy are left to the platform's defaults."""
    return {
        "filter": {"segments": [{"segmentId": segment_id, "segmentNs": "ups"}]},
        "destination": {"datasetId": dataset_id, "segmentPerBatch": False},
        "schema": {"name": "_xdm.context.profile"},
    }


def job_status(job: Any) -> str:
    return str(job.get("status", "")).upper() if isinstance(job, dict) else ""


def job_failure(job: dict[str, Any]) -> str:
    """`: <code> <msg>` of the job's first errors (§6.3 errors[]: {code, msg, callStack})."""
    errors = [e for e in job.get("errors") or [] if isinstance(e, dict)]
    reasons = [" ".join(str(e.get(k)) for k in ("code", "msg") if e.get(k)) for e in errors[:3]]
    return (": " + "; ".join(r for r in reasons if r)) if any(reasons) else ""


def job_batches(job: dict[str, Any]) -> list[tuple[str, str]]:
    """(dataset id, batch id) pairs: destination.batchId, or destination.batches[] with segmentPerBatch."""
    dest = job.get("destination") or {}
    dataset = dest.get("datasetId") or dest.get("dataSetId")
    if not dataset:
        raise ExportError(f"export job {job.get('id')} names no destination dataset")
    per_segment = dest.get("batches") or []
    if isinstance(per_segment, dict):  # one export-jobs.md example writes a single object, not a list
        per_segment = [per_segment]
    ids = [dest.get("batchId")] + [b.get("batchId") for b in per_segment if isinstance(b, dict)]
    batches = [(str(dataset), str(b)) for b in dict.fromkeys(ids) if b]
    if not batches:
        raise ExportError(f"export job {job.get('id')} succeeded but names no batch")
    return batches


def _segment(aud: AudienceSettings) -> str:
    """The segment whose export a run starts (config: an entry names a segment or an export job)."""
    if aud.segment_id is None:
        raise ExportError(f"audience {aud.label}: neither segment_id nor export_job_id is set")
    return aud.segment_id
