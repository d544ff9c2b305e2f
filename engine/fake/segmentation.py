"""Segmentation: profile export jobs, NEW -> PROCESSING -> SUCCEEDED/FAILED (aep-api.md §6)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .http import UPS, int_param, problem


@dataclass
class ExportJob:
    id: int
    dataset_id: str
    batch_key: str  # "" when the job will fail
    body: dict[str, Any]
    created_ms: int
    polls: int = 0
    cancelled: bool = False



class SegmentationApi:
    """Export job routes (a mixin of FakePlatform)."""

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
        dest = body.get("destination") or {}
        ds_id = dest.get("datasetId") or dest.get("dataSetId") or ""
        ds = self.model.datasets.get(ds_id)
        ok = ds.latest_success if ds else None
        job = ExportJob(id=self._next_job_id, dataset_id=ds_id, batch_key=ok.key if ok else "",
                        body=body, created_ms=created_ms)
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
        dest.setdefault("datasetId", job.dataset_id)
        dest["batchId"] = job.batch_key
        obj: dict[str, Any] = {
            "id": job.id, "jobType": "BATCH", "destination": dest,
            "fields": job.body.get("fields"), "schema": job.body.get("schema"),
            "filter": job.body.get("filter", {}), "mergePolicy": job.body.get("mergePolicy"),
            "imsOrgId": self.cfg.org_id, "profileInstanceId": "ups", "status": status,
            "requestId": hashlib.sha256(str(job.id).encode()).hexdigest()[:32],
            "computeGatewayJobId": {"exportJob": _uuid_from(f"e{job.id}"), "pushJob": _uuid_from(f"p{job.id}")},
            "creationTime": job.created_ms, "updateTime": job.created_ms + 1000 * job.polls,
        }
        if status == "SUCCEEDED":
            rows = sum(p.rows for _, p in self.model.batches_by_key[job.batch_key].parts)
            obj["metrics"] = {"totalTime": {"startTimeInMs": job.created_ms, "endTimeInMs": job.created_ms + 60_000,
                                            "totalTimeInMs": 60_000},
                              "totalExportedProfileCounter": rows,
                              "exportedProfileByNamespaceCounter": {"ECID": rows}}
        if status == "FAILED":
            obj["errors"] = [{"code": "0090000009", "msg": "Cancelled" if job.cancelled else "Target dataset not found",
                              "callStack": ""}]
        return obj

    async def h_job_create(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("application/json"):
            return web.json_response({"type": "/placeholder/type/uri", "status": 400, "title": "BadRequestError",
                                      "detail": "A valid content-type must be specified"}, status=400)
        try:
            body = await request.json()
        except ValueError:
            return problem(400, "BadRequestError", "Body is not valid JSON", ns="UPS")
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


