"""Segmentation: profile export jobs, NEW -> PROCESSING -> SUCCEEDED/FAILED (aep-api.md §6)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .http import UPS, int_param, json_body, problem

if TYPE_CHECKING:
    from .catalog import CreatedDataset
    from .config import FakeConfig
    from .data import Model


@dataclass
class ExportJob:
    id: int
    dataset_id: str
    batch_key: str  # "" when the job will fail
    body: dict[str, Any]
    created_ms: int
    polls: int = 0
    cancelled: bool = False
    attach_to: str | None = None  # a segment's batch is written into this dataset on success
    failure: str = "Target dataset not found"  # errors[].msg when it fails



class SegmentationApi:
    """Export job routes (a mixin of FakePlatform, which sets what it uses, declared here)."""

    cfg: FakeConfig
    model: Model
    _jobs: dict[int, ExportJob]
    _next_job_id: int
    _attached: dict[str, str]
    _created: dict[str, CreatedDataset]

    def _preconfigure_jobs(self) -> None:
        for ds in self.model.datasets.values():
            if ds.spec.audience_job:
                body = {"fields": "identities.id,personalEmail.address",
                        "mergePolicy": {"id": "timestampOrdered-none-mp", "version": 1},
                        "filter": {"segments": [{"segmentId": _uuid_from(ds.id), "segmentNs": "ups",
                                                 "status": ["realized"]}]},
                        "destination": {"datasetId": ds.id, "segmentPerBatch": False},
                        "schema": {"name": "_xdm.context.profile"}}
                self._new_job(body, created_ms=ds.created + 500)

    def _new_job(self, body: dict[str, Any], created_ms: int) -> ExportJob:
        """Which batch the job will write. A segment whose export data the fake holds (a dataset
        with DatasetSpec.segment_id) is written into the destination dataset; a destination that
        already holds batches (the preconfigured demo job) gives its newest; else the job fails."""
        dest = body.get("destination") or {}
        ds_id = dest.get("datasetId") or dest.get("dataSetId") or ""
        segments = [s.get("segmentId") for s in (body.get("filter") or {}).get("segments") or [] if isinstance(s, dict)]
        job = ExportJob(id=self._next_job_id, dataset_id=ds_id, batch_key="", body=body, created_ms=created_ms)
        source = next((d for d in self.model.datasets.values() if d.spec.segment_id and d.spec.segment_id in segments), None)
        target = self.model.datasets.get(ds_id)
        if source is not None:
            batch = source.latest_success
            if not (ds_id in self._created or (target is not None and not target.spec.segment_id)):
                job.failure = f"Dataset '{ds_id}' not found"
            elif batch is None or batch.key in self._attached or any(j.batch_key == batch.key for j in self._jobs.values()):
                job.failure = f"Segment '{source.spec.segment_id}' has no profiles to export"  # the fake exports each once
            else:
                job.batch_key, job.attach_to = batch.key, ds_id
        elif target is not None and target.latest_success is not None:
            job.batch_key = target.latest_success.key
        else:
            job.failure = f"Segment definition '{segments[0] if segments else ''}' not found"
        self._next_job_id += 1
        self._jobs[job.id] = job
        return job

    def _job_status(self, job: ExportJob) -> str:
        """NEW until first polled, PROCESSING for a few polls, then SUCCEEDED (FAILED if no batch)."""
        if job.cancelled:
            return "FAILED"
        if job.polls == 0:
            return "NEW"
        if job.polls < self.cfg.job_polls_to_success:
            return "PROCESSING"
        return "SUCCEEDED" if job.batch_key else "FAILED"

    def _job_obj(self, job: ExportJob) -> dict[str, Any]:
        status = self._job_status(job)
        dest = dict(job.body.get("destination") or {})
        if "dataSetId" not in dest:
            dest.setdefault("datasetId", job.dataset_id)
        dest.setdefault("segmentPerBatch", False)
        dest["batchId"] = job.batch_key if status != "FAILED" else ""
        if dest["segmentPerBatch"]:  # one batch per segment, listed in destination.batches[] (§6.3)
            dest["batches"] = [{"segmentId": s.get("segmentId"), "segmentNs": s.get("segmentNs", "ups"),
                                "status": s.get("status", ["realized", "existing"]), "batchId": dest["batchId"]}
                               for s in (job.body.get("filter") or {}).get("segments") or [] if isinstance(s, dict)]
        obj: dict[str, Any] = {
            "id": job.id, "jobType": "BATCH", "destination": dest,
            "fields": job.body.get("fields", ""), "schema": job.body.get("schema"),
            "filter": job.body.get("filter", {}),
            # "If not provided, the export will take the same merge policy as the given segment."
            "mergePolicy": job.body.get("mergePolicy") or {"id": "timestampOrdered-none-mp", "version": 1},
            "imsOrgId": self.cfg.org_id, "profileInstanceId": "ups", "status": status,
            "requestId": hashlib.sha256(str(job.id).encode()).hexdigest()[:32],
            "computeGatewayJobId": {"exportJob": _uuid_from(f"e{job.id}") if job.polls else ""},
            "creationTime": job.created_ms, "updateTime": job.created_ms + 1000 * job.polls,
            "metrics": self._job_metrics(job, status),
        }
        if "additionalFields" in job.body:
            obj["additionalFields"] = job.body["additionalFields"]
        if status == "FAILED":
            obj["errors"] = [{"code": "0090000009", "msg": "Cancelled" if job.cancelled else job.failure,
                              "callStack": "com.adobe.aep.unifiedprofile.common.logging.Logger"}]
        return obj

    def _job_metrics(self, job: ExportJob, status: str) -> dict[str, Any]:
        """The documented metrics (export-jobs.md): only a start time while NEW."""
        start = job.created_ms
        if status in ("NEW", "PROCESSING"):
            return {"totalTime": {"startTimeInMs": start}}
        span = {"startTimeInMs": start, "endTimeInMs": start + 60_000, "totalTimeInMs": 60_000}
        metrics: dict[str, Any] = {"totalTime": span, "profileExportTime": dict(span)}
        if status == "SUCCEEDED":
            rows = sum(p.rows for _, p in self.model.batches_by_key[job.batch_key].parts)
            metrics.update(totalExportedProfileCounter=rows, exportedProfileByNamespaceCounter={"ECID": rows})
        return metrics

    async def h_job_create(self, request: web.Request) -> web.Response:
        body, refused = await json_body(request, ns="UPS")
        if refused is not None:
            return refused
        dest = body.get("destination") if isinstance(body, dict) else None
        if not isinstance(dest, dict) or not (dest.get("datasetId") or dest.get("dataSetId")) \
                or not (body.get("schema") or {}).get("name"):
            return problem(400, "BadRequestError", "destination.datasetId and schema.name are required", ns="UPS")
        job = self._new_job(body, created_ms=int(time.time() * 1000))
        return web.json_response(self._job_obj(job), headers={"X-Location": f"{UPS}/export/jobs/{job.id}"})

    def _job_from(self, request: web.Request) -> ExportJob | None:
        try:
            return self._jobs.get(int(request.match_info["id"]))
        except ValueError:
            return None

    async def h_job_get(self, request: web.Request) -> web.Response:
        job = self._job_from(request)
        if job is None:
            return problem(404, "NotFoundError", "Export job not found", ns="UPS")
        job.polls += 1
        if job.attach_to and self._job_status(job) == "SUCCEEDED":
            self._attached.setdefault(job.batch_key, job.attach_to)  # the batch now exists in that dataset
        return web.json_response(self._job_obj(job))

    async def h_job_delete(self, request: web.Request) -> web.Response:
        job = self._job_from(request)
        if job is None:
            return problem(404, "NotFoundError", "Export job not found", ns="UPS")
        if self._job_status(job) not in ("SUCCEEDED", "FAILED"):
            job.cancelled = True
        return web.json_response({"status": True, "message": "Export job has been marked for cancelling"})

    async def h_job_list(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 20, 1, 100) or 20
        status = request.query.get("status")
        jobs = sorted(self._jobs.values(), key=lambda j: (j.created_ms, j.id), reverse=True)
        if status:
            jobs = [j for j in jobs if self._job_status(j) == status.upper()]
        cursor = request.query.get("offset")
        if cursor:  # `{creationTimeMs}_{jobId}`: records strictly after it in desc order
            try:
                ms, jid = (int(x) for x in cursor.split("_", 1))
            except ValueError:
                return problem(400, "BadRequestError", "Invalid offset", ns="UPS")
            jobs = [j for j in jobs if (j.created_ms, j.id) < (ms, jid)]
        page = jobs[:limit]
        last = f"{page[-1].created_ms}_{page[-1].id}" if page else ""
        body: dict[str, Any] = {"records": [self._job_obj(j) for j in page],
                                "page": {"sortField": "createdTime", "sort": "desc", "pageOffset": last,
                                         "pageSize": len(page)}, "link": {}}
        if len(jobs) > limit:
            body["link"]["next"] = f"/export/jobs/?limit={limit}&offset={last}"
        return web.json_response(body)



def _uuid_from(s: str) -> str:
    h = hashlib.sha256(s.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


