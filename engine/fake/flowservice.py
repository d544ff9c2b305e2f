"""Flow Service dataset exports into the Data Landing Zone (aep-dataset-export.md §1, §2).

Eligible datasets, source/base/target connections and dataflows, the on-demand ("ad hoc") run
with its documented refusals, runs that end `success` or `failed` (errors inside a 200), and the
DLZ credentials (a SAS for the container). A successful run writes the dataset's newest batch,
as GZIP-compressed parquet, into the blob store under
`<folder>/<datasetId>/exportTime=YYYYMMDDHHMM/part-…`. Shapes follow tests/fixtures/dlz (one
file per documented sample); where the reference is silent, the choice is marked [I].
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
from aiohttp import web

from ..checks.integrity import file_digest
from .blob import BlobStore
from .data import ExpectedFile, _uuid
from .http import gw_error, json_body

if TYPE_CHECKING:
    from .config import DlzFake, FakeConfig
    from .data import Model

FLOWSERVICE = "/data/foundation/flowservice"
ADHOC = "/data/core/activation/disflowprovider/adhocrun"
CREDENTIALS = "/data/foundation/connectors/landingzone/credentials"
DATASET_SOURCE_SPEC = "23598e46-f560-407b-88d5-ea6207e49db0"
DLZ_CONNECTION_SPEC = "10440537-2a7b-4583-ac39-ed38d4b848e8"
DLZ_FLOW_SPEC = "cd2fc47e-e838-4f38-a581-8fff2f99b63a"
NOT_READY = "Following order ID(s) are not ready for dataset export, please wait for 10 minutes and retry"
NOT_ENABLED = "Adhoc run can not be executed for Flow spec={spec}"
ALREADY = "Adhoc run already exists for flow {flow}"  # [I]: the refusal is documented, its text is not


@dataclass
class FakeRun:
    id: str
    flow_id: str
    dataset_id: str
    created_ms: int
    folder: str  # <folder>/<datasetId>/exportTime=…/
    failed: bool = False
    polls: int = 0
    files: list[tuple[str, int, int]] = field(default_factory=list)  # (blob name, size, rows)
    written: dict[str, Path] = field(default_factory=dict)  # blob name -> the file put there

    @property
    def done(self) -> bool:
        return self.polls >= 0


class FlowServiceApi:
    """Flow Service and DLZ routes (a mixin of FakePlatform, which sets what it uses)."""

    cfg: FakeConfig
    model: Model
    blobs: BlobStore
    dlz: DlzFake

    def _init_flowservice(self) -> None:
        self._fs_objects: dict[str, dict[str, dict[str, Any]]] = {
            "sourceConnections": {}, "connections": {}, "targetConnections": {}, "flows": {}}
        self._flow_created: dict[str, float] = {}  # flow id -> monotonic time of creation
        self._runs: dict[str, FakeRun] = {}
        self._last_export_minute = 0
        self.adhoc_requests = 0
        self.sas_issued: list[str] = []
        self.gateway_saw_sas = False

    def flowservice_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get(f"{FLOWSERVICE}/connectionSpecs/{{spec}}/configs", self.h_eligible, name="fs.eligible")
        for kind in ("sourceConnections", "connections", "targetConnections", "flows"):
            r.add_post(f"{FLOWSERVICE}/{kind}", self._creator(kind), name=f"fs.create.{kind}")
            r.add_get(f"{FLOWSERVICE}/{kind}/{{id}}", self._getter(kind), name=f"fs.get.{kind}")
        r.add_get(f"{FLOWSERVICE}/flows", self.h_flows, name="fs.flows")
        r.add_get(f"{FLOWSERVICE}/runs", self.h_runs, name="fs.runs")
        r.add_post(ADHOC, self.h_adhoc, name="fs.adhoc")
        r.add_get(CREDENTIALS, self.h_credentials, name="dlz.credentials")

    # -- what tests look at -----------------------------------------------------------

    def dlz_runs(self, dataset_id: str | None = None) -> list[FakeRun]:
        return [r for r in self._runs.values() if dataset_id in (None, r.dataset_id)]

    def dlz_expected_files(self) -> list[ExpectedFile]:
        """The files of each dataset's newest successful run as written, where a correct export puts
        them: {out}/{dataset}/{run id}/exportTime=…/{part}."""
        newest: dict[str, FakeRun] = {}
        for run in self._runs.values():
            if run.done and not run.failed and run.created_ms >= getattr(newest.get(run.dataset_id), "created_ms", 0):
                newest[run.dataset_id] = run
        out = []
        for run in newest.values():
            for name, size, rows in run.files:
                folder, _, part = name.rpartition("/")
                path = run.written[name]
                out.append(ExpectedFile(run.dataset_id, run.id, folder.rsplit("/", 1)[-1], part, size,
                                        file_digest(path).hex(), rows, path))
        return out

    def dlz_flows(self) -> list[dict[str, Any]]:
        return list(self._fs_objects["flows"].values())

    # -- eligibility --------------------------------------------------------------------

    async def h_eligible(self, request: web.Request) -> web.Response:
        if request.match_info["spec"] != DATASET_SOURCE_SPEC or request.query.get("outputType") != "activationDatasets":
            return gw_error(400, "400", "Unsupported connection spec or outputType")
        start, limit = int(request.query.get("start", "0")), int(request.query.get("limit", "20"))
        eligible = [ds for ds in self.model.datasets.values() if ds.id not in self.dlz.ineligible and not ds.spec.segment_id]
        page = eligible[start:start + limit]
        items = [{"id": ds.id, "name": ds.name, "state": "ENABLED"} for ds in page]  # [I] the items' fields: properties=name,state
        return web.json_response({"items": items, "pageInfo": {"start": start, "end": start + len(page) - 1,
                                                              "total": len(eligible), "hasNext": start + limit < len(eligible)}})

    # -- connections and flows ----------------------------------------------------------

    def _creator(self, kind: str) -> Any:
        async def create(request: web.Request) -> web.Response:
            body, refused = await json_body(request)
            if refused is not None:
                return refused
            if not isinstance(body, dict) or not body.get("name"):
                return gw_error(400, "400", "name is required")
            obj_id = _uuid(self.cfg.seed, kind, len(self._fs_objects[kind]), body.get("name"))
            etag = f'"{hashlib.sha256(obj_id.encode()).hexdigest()[:8]}-0000-0200-0000-000000000000"'
            self._fs_objects[kind][obj_id] = {"id": obj_id, "etag": etag, "createdAt": int(time.time() * 1000), **body}
            if kind == "flows":
                self._flow_created[obj_id] = time.monotonic()
            return web.json_response({"id": obj_id, "etag": etag}, status=201)
        return create

    def _getter(self, kind: str) -> Any:
        async def get(request: web.Request) -> web.Response:
            obj = self._fs_objects[kind].get(request.match_info["id"])
            if obj is None:
                return gw_error(404, "404", f"{kind} {request.match_info['id']} not found")
            return web.json_response({"items": [obj]})  # Flow Service answers a GET by id with items[] [I]
        return get

    async def h_flows(self, request: web.Request) -> web.Response:
        wanted = request.query.get("property", "")
        flows = [f for f in self._fs_objects["flows"].values()
                 if not wanted or wanted == f"flowSpec.id=={(f.get('flowSpec') or {}).get('id')}"]
        return web.json_response({"items": flows})

    # -- runs ---------------------------------------------------------------------------

    async def h_adhoc(self, request: web.Request) -> web.Response:
        self.adhoc_requests += 1
        body, refused = await json_body(request)
        if refused is not None:
            return refused
        try:
            dest = body["activationInfo"]["destinations"][0]
            flow_id, dataset_id = dest["flowId"], dest["datasets"][0]["id"]
        except (KeyError, IndexError, TypeError):
            return gw_error(400, "400", "activationInfo.destinations[0].flowId and datasets[0].id are required")
        flow = self._fs_objects["flows"].get(flow_id)
        if flow is None:
            return gw_error(404, "404", f"flow {flow_id} not found")
        if not self.dlz.adhoc_enabled:
            return gw_error(400, "400", NOT_ENABLED.format(spec=DLZ_FLOW_SPEC))
        if time.monotonic() - self._flow_created.get(flow_id, 0.0) < self.dlz.not_ready_s:
            return gw_error(400, "400", NOT_READY)
        if any(r.flow_id == flow_id and not r.done for r in self._runs.values()):
            return gw_error(409, "409", ALREADY.format(flow=flow_id))
        run = await self._start_run(flow, dataset_id)
        status_url = f"{FLOWSERVICE}/runs/{run.id}"
        return web.json_response({"destinations": [{"flowId": flow_id, "datasets": [
            {"id": dataset_id, "statusURL": f"https://platform.adobe.io{status_url}"}]}]})

    async def _start_run(self, flow: dict[str, Any], dataset_id: str) -> FakeRun:
        minute = max(int(time.time() // 60), self._last_export_minute + 1)
        self._last_export_minute = minute
        stamp = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y%m%d%H%M")
        target = self._fs_objects["targetConnections"].get((flow.get("targetConnectionIds") or [""])[0], {})
        params = target.get("params") or {}
        base = str(params.get("path") or "").strip("/")
        folder = f"{base}/{dataset_id}/exportTime={stamp}/".lstrip("/")
        run = FakeRun(_uuid(self.cfg.seed, "run", len(self._runs)), flow["id"], dataset_id, minute * 60_000, folder,
                      failed=dataset_id in self.dlz.failing, polls=-self.dlz.run_polls)
        self._runs[run.id] = run
        if not run.failed:
            gzip = str(params.get("compression") or self.dlz.compression).upper() == "GZIP"
            await self._write_run_files(run, gzip)
        return run

    async def _write_run_files(self, run: FakeRun, gzip: bool) -> None:
        batch = self.model.datasets[run.dataset_id].latest_success
        parts = [p for _, p in batch.parts if not p.is_marker] if batch else []
        for i, part in enumerate(parts):
            path = await asyncio.to_thread(_exported_copy, part.path, gzip)
            name = f"{run.folder}part-{i:05d}-{_uuid(self.cfg.seed, 'part', run.id)}-c000.{'gz.' if gzip else ''}parquet"
            await self.blobs.put(name, path)
            run.files.append((name, path.stat().st_size, part.rows))
            run.written[name] = path

    async def h_runs(self, request: web.Request) -> web.Response:
        wanted = request.query.get("property", "")
        runs = [r for r in self._runs.values() if wanted == f"flowId=={r.flow_id}"]
        for r in runs:
            r.polls += not r.done
        return web.json_response({"items": [self._run_obj(r) for r in sorted(runs, key=lambda r: -r.created_ms)]})

    def _run_obj(self, run: FakeRun) -> dict[str, Any]:
        status = "inProgress" if not run.done else "failed" if run.failed else "success"
        started = datetime.fromtimestamp(run.created_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        obj: dict[str, Any] = {
            "id": run.id, "createdAt": run.created_ms, "updatedAt": run.created_ms, "flowId": run.flow_id,
            "etag": f'"{run.id[:8]}-0000-0200-0000-000000000000"',
            "metrics": {
                "durationSummary": {"startedAtUTC": run.created_ms, "completedAtUTC": run.created_ms + 60_000},
                "sizeSummary": {"inputBytes": sum(s for _, s, _ in run.files), "outputBytes": sum(s for _, s, _ in run.files)},
                "recordSummary": {"inputRecordCount": sum(n for *_, n in run.files),
                                  "outputRecordCount": sum(n for *_, n in run.files), "failedRecordCount": 0},
                "fileSummary": {"inputFileCount": len(run.files), "outputFileCount": len(run.files)},
                "statusSummary": {"status": status},
            },
            "activities": [{"id": "activity-1", "name": "Dataset export", "startedAt": started}],  # [I] cut short in the doc
        }
        if not run.done:
            obj["metrics"].pop("durationSummary")
        if run.done and run.failed:
            obj["metrics"]["statusSummary"]["errors"] = [{"code": "CONNECTOR-2001-500",
                                                           "message": "Something went wrong while writing to the destination"}]
            obj["errors"] = obj["metrics"]["statusSummary"]["errors"]
        return obj

    # -- DLZ credentials ----------------------------------------------------------------

    async def h_credentials(self, request: web.Request) -> web.Response:
        if request.query.get("type") != "dlz_destination":
            return gw_error(400, "400", "type must be dlz_destination or user_drop_zone")
        token = self.blobs.sas(self.dlz.sas_ttl_s)
        self.sas_issued.append(token)
        return web.json_response({"containerName": self.blobs.container, "SASToken": token,
                                  "storageAccountName": self.blobs.account,
                                  "SASUri": f"{self.blobs.container_url()}?{token}"})

    def note_sas(self, request: web.Request) -> None:
        """A SAS must never reach the gateway (tests assert it did not)."""
        if "sig=" in request.query_string or any("sig=" in v for v in request.headers.values()):
            self.gateway_saw_sas = True


def _exported_copy(source: Path, gzip: bool) -> Path:
    """The batch's part as the export writes it: the same rows, GZIP-compressed column chunks."""
    if not gzip:
        return source
    out = source.with_name(source.stem + ".gz.parquet")
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        pq.write_table(pq.read_table(source), tmp, compression="gzip")
        tmp.replace(out)
    return out
