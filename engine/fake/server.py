"""aiohttp fake of IMS, Catalog, Data Access and Segmentation export jobs (see aep-api.md).

One main server (IMS + gateway routes) plus a second "blob" server on another loopback
address that receives 307 redirects in `Faults.redirect` mode and records the headers
it is sent (a correct client must not forward Authorization/x-api-key there).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import math
import re
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

from aiohttp import web

from .config import FakeConfig
from .data import Batch, DataSetFile, Dataset, ExpectedFile, Model, PartFile, default_data_dir
from .faults import FaultEngine, RequestFaultState

CATALOG = "/data/foundation/catalog"
EXPORT = "/data/foundation/export"
UPS = "/data/core/ups"
CHUNK = 1 << 20
T0 = web.RequestKey("t0", float)
FAULTS = web.RequestKey("faults", RequestFaultState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ----------------------------------------------------------------------------- stats


@dataclass
class FakeStats:
    requests: Counter[str] = field(default_factory=Counter)  # by route name
    statuses: Counter[int] = field(default_factory=Counter)
    bytes_sent: int = 0  # download body bytes, all files
    bytes_by_file: Counter[str] = field(default_factory=Counter)  # "{dataSetFileId}/{name}"
    faults: Counter[str] = field(default_factory=Counter)  # shared with the FaultEngine
    tokens_issued: int = 0
    redirect_requests: int = 0
    redirect_header_names: list[list[str]] = field(default_factory=list)  # per request, lowercase
    redirect_saw_auth: bool = False  # any Authorization / x-api-key reached the redirect host

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests), "statuses": dict(self.statuses),
            "bytes_sent": self.bytes_sent, "bytes_by_file": dict(self.bytes_by_file),
            "faults": dict(self.faults), "tokens_issued": self.tokens_issued,
            "redirect_requests": self.redirect_requests,
            "redirect_header_names": self.redirect_header_names,
            "redirect_saw_auth": self.redirect_saw_auth,
        }


# ----------------------------------------------------------------------------- helpers


def gw_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Gateway / Data Access error shape {error_code, message} (aep-api.md §1)."""
    return web.json_response({"error_code": code, "message": message}, status=status, headers=headers)


def problem(status: int, title: str, detail: str, ns: str = "CAT") -> web.Response:
    """Catalog/Segmentation error shape, like the documented content-type error (§1)."""
    body = {"type": f"http://ns.adobe.com/aep/errors/{ns}-{status}", "status": status,
            "title": title, "detail": detail}
    return web.json_response(body, status=status)


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def parse_range(value: str | None, total: int) -> tuple[int, int] | str | None:
    """Parse `bytes=a-b`, `bytes=a-`, `bytes=-n`. None = no/ignored range, "416" = unsatisfiable."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # malformed or multi-range: RFC 9110 lets us ignore it
    a, b = m.group(1), m.group(2)
    if a == "":  # suffix range
        n = int(b)
        if n == 0 or total == 0:
            return "416"
        return max(0, total - n), total - 1
    start = int(a)
    end = int(b) if b else total - 1
    if start >= total or end < start:
        return "416"
    return start, min(end, total - 1)


def range_start_of(request: web.Request) -> int | None:
    m = re.match(r"\s*bytes\s*=\s*(\d+)", request.headers.get("Range", ""))
    return int(m.group(1)) if m else None


def content_type_for(name: str) -> str:
    return "application/parquet" if name.endswith(".parquet") else "application/octet-stream"


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int | None) -> int | None:
    """Parse an int query param; None if invalid / out of range."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        return None
    if v < lo or (hi is not None and v > hi):
        return None
    return v


def loopback_alt_host(host: str) -> str:
    """127.0.0.2 if bindable (a different 'host' for redirects), else the same host."""
    if host not in ("127.0.0.1", "localhost"):
        return host
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return host


# ----------------------------------------------------------------------------- platform


@dataclass
class ExportJob:
    id: int
    dataset_id: str
    batch_key: str  # "" when the job will fail
    body: dict[str, Any]
    created_ms: int
    polls: int = 0
    cancelled: bool = False


class FakePlatform:
    """Real TCP fake of the AEP APIs. Use as `async with FakePlatform(cfg) as fp:`."""

    def __init__(self, cfg: FakeConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 redirect_host: str | None = None) -> None:
        self.cfg = cfg or FakeConfig.demo()
        self.host, self.port = host, port
        self._redirect_host_req = redirect_host
        data_dir = Path(self.cfg.data_dir) if self.cfg.data_dir else default_data_dir(self.cfg.seed, self.cfg.datasets)
        self.model = Model(self.cfg.seed, self.cfg.datasets, data_dir)
        self.faults_engine = FaultEngine(self.cfg.seed, self.cfg.faults)
        self._objs_by_dataset: dict[str, list[dict[str, Any]]] | None = None  # Catalog objects, built once
        self.stats = FakeStats(faults=self.faults_engine.injected)
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._jobs: dict[int, ExportJob] = {}
        self._next_job_id = 11037
        self._sig_key = hashlib.sha256(f"sig{self.cfg.seed}".encode()).digest()
        self._runners: list[web.AppRunner] = []
        self.url = ""
        self.redirect_url = ""
        self._preconfigure_jobs()

    # -- public API -------------------------------------------------------------------

    @property
    def faults(self):  # noqa: ANN201 - live Faults object; mutate to toggle at runtime
        return self.cfg.faults

    @property
    def ims_url(self) -> str:
        return self.url

    @property
    def client_id(self) -> str:
        return self.cfg.client_id

    @property
    def client_secret(self) -> str:
        return self.cfg.client_secret

    @property
    def org_id(self) -> str:
        return self.cfg.org_id

    @property
    def sandbox(self) -> str:
        return self.cfg.sandbox

    @property
    def static_token(self) -> str:
        return self.cfg.static_token

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token IMS has handed out (tests check none leaks into output)."""
        return list(self._tokens)

    @property
    def dataset_ids(self) -> list[str]:
        return list(self.model.datasets)

    @property
    def export_job_ids(self) -> list[int]:
        return sorted(self._jobs)

    def expected_files(self, all_batches: bool = False) -> list[ExpectedFile]:
        """Parts of each dataset's latest successful batch (all batches if asked)."""
        return self.model.expected_files(all_batches=all_batches)

    def latest_batch(self, dataset_id: str) -> Batch | None:
        return self.model.datasets[dataset_id].latest_success

    def reset_stats(self) -> None:
        self.faults_engine.reset()
        s = self.stats
        s.requests.clear(); s.statuses.clear(); s.bytes_by_file.clear()
        s.bytes_sent = s.tokens_issued = s.redirect_requests = 0
        s.redirect_header_names.clear()
        s.redirect_saw_auth = False

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "ims_url": self.ims_url, "client_id": self.client_id,
                "client_secret": self.client_secret, "org_id": self.org_id, "sandbox": self.sandbox,
                "static_token": self.static_token, "datasets": self.dataset_ids,
                "export_job_ids": self.export_job_ids, "redirect_url": self.redirect_url,
                "data_dir": str(self.model.data_dir)}

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> FakePlatform:
        await asyncio.to_thread(self.model.materialize)
        main = self._main_app()
        self.url = await self._serve(main, self.host, self.port)
        rhost = self._redirect_host_req or loopback_alt_host(self.host)
        self.redirect_url = await self._serve(self._redirect_app(), rhost, 0)
        return self

    async def stop(self) -> None:
        for r in reversed(self._runners):
            await r.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> FakePlatform:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, app: web.Application, host: str, port: int) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        self._runners.append(runner)
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        h, p = sock.getsockname()[:2]
        return f"http://{h}:{p}"

    @classmethod
    def run_in_thread(cls, cfg: FakeConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                      timeout: float = 600.0, **kw: Any) -> ThreadedFakePlatform:
        """Start on a private event loop in a daemon thread; returns once serving."""
        return ThreadedFakePlatform(cls(cfg, host=host, port=port, **kw), timeout)

    # -- apps -----------------------------------------------------------------------

    def _main_app(self) -> web.Application:
        app = web.Application(middlewares=[self._mw_common, self._mw_gateway, self._mw_faults],
                              client_max_size=4 << 20)
        r = app.router
        r.add_post("/ims/token/v3", self.h_token, name="ims.token")
        r.add_get(f"{CATALOG}/batches", self.h_batches, name="catalog.batches")
        r.add_get(f"{CATALOG}/batches/{{id}}", self.h_batch, name="catalog.batch")
        r.add_get(f"{CATALOG}/dataSets", self.h_datasets, name="catalog.dataSets")
        r.add_get(f"{CATALOG}/dataSets/{{id}}", self.h_dataset, name="catalog.dataSet")
        r.add_get(f"{CATALOG}/lastBatches", self.h_last_batches, name="catalog.lastBatches")
        r.add_get(f"{EXPORT}/batches/{{id}}/files", self.h_batch_files, name="export.batchFiles")
        r.add_route("GET", f"{EXPORT}/files/{{id}}", self.h_files, name="export.files")
        r.add_route("HEAD", f"{EXPORT}/files/{{id}}", self.h_files, name="export.files.head")
        r.add_post(f"{UPS}/export/jobs", self.h_job_create, name="ups.jobs.create")
        r.add_get(f"{UPS}/export/jobs", self.h_job_list, name="ups.jobs.list")
        r.add_get(f"{UPS}/export/jobs/{{id}}", self.h_job_get, name="ups.jobs.get")
        r.add_delete(f"{UPS}/export/jobs/{{id}}", self.h_job_delete, name="ups.jobs.delete")
        return app

    def _redirect_app(self) -> web.Application:
        app = web.Application(middlewares=[self._mw_common, self._mw_faults])
        app.router.add_route("GET", f"{EXPORT}/files/{{id}}", self.h_blob, name="blob.get")
        app.router.add_route("HEAD", f"{EXPORT}/files/{{id}}", self.h_blob, name="blob.head")
        return app

    # -- middlewares ------------------------------------------------------------------

    @web.middleware
    async def _mw_common(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[T0] = time.monotonic()
        self.stats.requests[self._route_name(request)] += 1
        delay = self.cfg.faults.first_byte_delay_s
        if delay:
            await asyncio.sleep(delay)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            self.stats.statuses[exc.status] += 1
            raise
        if not resp.prepared:  # streamed responses count themselves before the body goes out
            self.stats.statuses[resp.status] += 1
        return resp

    @staticmethod
    def _route_name(request: web.Request) -> str:
        name = request.match_info.route.name or "unmatched"
        if name.startswith("export.files"):
            if "path" not in request.query:
                return "export.listing"
            return "export.head" if request.method == "HEAD" else "export.download"
        return name

    @web.middleware
    async def _mw_gateway(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/data/"):
            err = self._check_gateway(request)
            if err is not None:
                return err
        return await handler(request)

    def _check_gateway(self, request: web.Request) -> web.Response | None:
        """The four required headers with the documented codes (aep-api.md §1)."""
        h = request.headers
        auth = h.get("Authorization")
        if not auth:
            return gw_error(403, "403010", "Oauth token is missing.")
        api_key = h.get("x-api-key")
        if not api_key:
            return gw_error(403, "403000", "Api Key is required")
        if api_key != self.cfg.client_id:
            return gw_error(403, "403003", "Api Key is invalid")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not self._token_valid(token.strip()):
            return gw_error(401, "401013", "Oauth token is not valid")
        org = h.get("x-gw-ims-org-id")
        if not org:
            return gw_error(400, "400003", "Missing header")
        if not org.endswith("@AdobeOrg"):
            return gw_error(403, "403027", "User region is missing")
        if org != self.cfg.org_id:
            return gw_error(403, "403025", "Profile is not valid")
        # [I] missing sandbox -> the default `prod` sandbox; any other mismatch -> 403
        sandbox = h.get("x-sandbox-name", "prod")
        if sandbox != self.cfg.sandbox:
            return gw_error(403, "403001", f"Sandbox '{sandbox}' is not valid for this organization or client")
        return None

    def _token_valid(self, token: str) -> bool:
        if token == self.cfg.static_token:
            return True
        exp = self._tokens.get(token)
        return exp is not None and time.monotonic() < exp

    @web.middleware
    async def _mw_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/data/"):
            return await handler(request)
        fs = self.faults_engine.observe(request.method, request.raw_path, range_start_of(request))
        request[FAULTS] = fs
        f = self.cfg.faults
        if fs.decide("429", f.p_429):
            return self._resp_429(fs)
        if fs.decide("5xx", f.p_5xx):
            status = (500, 502, 503, 504)[int(fs.roll("5xx.status") * 4)]
            return gw_error(status, f"{status}000", "Internal Server Error" if status == 500 else "Service Unavailable")
        return await handler(request)

    def _resp_429(self, fs: RequestFaultState) -> web.Response:
        f = self.cfg.faults
        secs = max(0, math.ceil(f.retry_after_s))
        if f.p_retry_after_date and fs.roll("429.date") < f.p_retry_after_date:
            # HTTP-date has 1 s resolution: round up so the client never retries too early
            retry = email.utils.formatdate(math.ceil(time.time()) + secs + 1, usegmt=True)
        else:
            retry = str(secs)
        return gw_error(429, "429050", "Too many requests", headers={"Retry-After": retry})

    # -- IMS ------------------------------------------------------------------------

    async def h_token(self, request: web.Request) -> web.Response:
        form = dict(request.query)
        if request.can_read_body:
            form.update({k: str(v) for k, v in (await request.post()).items()})
        if form.get("grant_type") != "client_credentials":
            return self._ims_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_id") != self.cfg.client_id:
            return self._ims_error(400, "invalid_client", "invalid client_id parameter")
        if form.get("client_secret") != self.cfg.client_secret:
            return self._ims_error(401, "invalid_client", "invalid client_secret parameter")
        if not form.get("scope"):
            return self._ims_error(400, "invalid_scope", "scope parameter is required")
        lifetime = float(self.cfg.faults.token_lifetime_s)
        token = "fake." + secrets.token_urlsafe(32)
        self._tokens[token] = time.monotonic() + lifetime
        self.stats.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": max(1, int(lifetime))})

    @staticmethod
    def _ims_error(status: int, error: str, desc: str) -> web.Response:
        return web.json_response({"error": error, "error_description": desc}, status=status)

    # -- Catalog --------------------------------------------------------------------

    def _batch_obj(self, b: Batch) -> dict[str, Any]:
        ds = b.dataset
        obj: dict[str, Any] = {
            "id": b.key, "externalId": b.key, "status": b.status,
            "tags": {"acp_enableErrorDiagnostics": ["false"]},
            "relatedObjects": [{"type": "dataSet", "id": ds.id}],
            "inputFormat": {"format": "parquet"},
            "imsOrg": self.cfg.org_id, "sandboxId": self._sandbox_id(),
            "created": b.created, "updated": b.created + 10_000,
            "createdClient": ds.spec.created_client,
            "createdUser": "sensei_exp_customerai@AdobeID",
            "updatedUser": "acp_foundation_dataTracker@AdobeID", "version": "1.0.5",
        }
        if b.key != b.data_id:
            obj["relatedObjects"].append({"type": "batch", "id": b.data_id})
        if b.status in ("success", "active"):
            obj.update(started=b.created + 300, completed=b.created + 9_000, metrics=self._metrics(b))
            preds = [p.key for p in ds.batches if p.index < b.index and p.status in ("success", "active")]
            if preds:
                day = time.strftime("%Y-%m-%d", time.gmtime(b.created / 1000))
                obj["replay"] = {"predecessors": preds[-1:], "reason": f"Replacing for {day}",
                                 "predecessorListingType": "IMMEDIATE"}
        elif b.status == "failed":
            obj.update(started=b.created + 300, completed=b.created + 5_000,
                       failedBatchLocation=f"adl://fake.azuredatalakestore.net/failed/{b.key}",
                       errors=[{"code": "INGEST-1212-400", "description": "Scoring job failed", "rows": []}])
        return obj

    def _metrics(self, b: Batch) -> dict[str, Any]:
        parts = [p for _, p in b.parts if not p.is_marker]
        rows, size = sum(p.rows for p in parts), sum(p.size for p in parts)
        if b.dataset.spec.metrics_form == "old":
            return {"recordsRead": rows, "recordsWritten": rows, "recordsFailed": 0,
                    "avgNumExecutorsPerTask": 4, "startTime": b.created + 300,
                    "endTime": b.created + 9_000, "inputSizeInKb": math.ceil(size / 1024)}
        return {"partitionCount": len(b.files), "outputByteSize": size, "inputFileCount": -1,
                "inputByteSize": size, "outputRecordCount": rows, "outputFileCount": len(parts),
                "inputRecordCount": rows, "failedRecordCount": 0}

    def _sandbox_id(self) -> str:
        h = hashlib.sha256(f"{self.cfg.org_id}/{self.cfg.sandbox}".encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    async def h_batches(self, request: web.Request) -> web.Response:
        q = request.query
        limit = int_param(request, "limit", 20, 1, 100)
        if limit is None:
            return problem(400, "BadRequestError", "Invalid limit: the limit must be between 1 and 100")
        start = int_param(request, "start", 0, 0, None) if "start" in q else int_param(request, "offset", 0, 0, None)
        if start is None:
            return problem(400, "BadRequestError", "Invalid start: must be a non-negative integer")
        objs = self._batch_objs(q.get("dataSet"))
        try:
            objs = [o for o in objs if self._match_batch(o, q)]
        except ValueError as exc:
            return problem(400, "BadRequestError", str(exc))
        objs = self._order(objs, q.get("orderBy") or q.get("sort"))
        page = objs[start:start + limit]
        return self._catalog_json({o["id"]: self._project(o, q.get("properties")) for o in page})

    def _batch_objs(self, dataset_filter: str | None) -> list[dict[str, Any]]:
        """Catalog objects (built once: batches never change), narrowed by a plain dataSet filter."""
        if self._objs_by_dataset is None:
            self._objs_by_dataset = {}
            for b in self.model.batches_by_key.values():
                self._objs_by_dataset.setdefault(b.dataset.id, []).append(self._batch_obj(b))
        if dataset_filter and not dataset_filter.startswith("!"):
            return [o for ds in dataset_filter.split(",") for o in self._objs_by_dataset.get(ds.strip(), [])]
        return [o for objs in self._objs_by_dataset.values() for o in objs]

    @staticmethod
    def _catalog_json(body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status)

    def _match_batch(self, o: dict[str, Any], q: Any) -> bool:
        special = {"limit", "start", "offset", "orderBy", "sort", "properties", "property"}
        for k, v in q.items():
            if k in special:
                continue
            if k == "dataSet":
                vals = [r["id"] for r in o["relatedObjects"] if r["type"] == "dataSet"]
                if not _simple_match(vals, v):
                    return False
            elif k in ("createdAfter", "createdBefore"):
                t = _int_or_raise(k, v)
                if (k == "createdAfter" and not o["created"] > t) or (k == "createdBefore" and not o["created"] < t):
                    return False
            elif k in o and not isinstance(o[k], (dict, list)):
                if not _simple_match([o[k]], v):
                    return False
        return all(_property_match(o, expr) for expr in q.getall("property", []))

    @staticmethod
    def _order(objs: list[dict[str, Any]], spec: str | None) -> list[dict[str, Any]]:
        direction, fields = "asc", ["created"]
        if spec:
            if ":" in spec:
                direction, _, rest = spec.partition(":")
                fields = rest.split(",")
            else:
                fields = spec.split(",")
        return sorted(objs, key=lambda o: tuple(_sort_key(o.get(f)) for f in fields) + (o["id"],),
                      reverse=direction.strip().lower() == "desc")

    @staticmethod
    def _project(o: dict[str, Any], properties: str | None) -> dict[str, Any]:
        if not properties:
            return o
        keep = {p.strip() for p in properties.split(",")}
        return {k: v for k, v in o.items() if k in keep}

    async def h_batch(self, request: web.Request) -> web.Response:
        b = self.model.batches_by_key.get(request.match_info["id"])
        if b is None:
            return problem(404, "NotFoundError", f"Batch {request.match_info['id']} not found")
        return self._catalog_json({b.key: self._project(self._batch_obj(b), request.query.get("properties"))})

    def _dataset_obj(self, ds: Dataset) -> dict[str, Any]:
        last = max(ds.batches, key=lambda b: b.created) if ds.batches else None
        ok = ds.latest_success
        return {
            "id": ds.id, "name": ds.name, "description": "Fake Customer AI output dataset",
            "imsOrg": self.cfg.org_id, "sandboxId": self._sandbox_id(),
            "schemaRef": {"id": f"https://ns.adobe.com/fake/schemas/{ds.id}",
                          "contentType": "application/vnd.adobe.xed+json;version=1"},
            "tags": {"adobe/pqs/table": [f"customer_ai_scores_{ds.index}"]},
            "viewId": ds.view_id, "files": f"@/dataSetFiles?dataSetId={ds.id}",
            "lastBatchId": last.key if last else None, "lastBatchStatus": last.status if last else None,
            "lastSuccessfulBatch": ok.key if ok else None,
            "created": ds.created, "updated": last.created if last else ds.created, "version": "1.0.0",
            "createdClient": ds.spec.created_client,
            "fileDescription": {"persisted": True, "containerFormat": "parquet", "format": "parquet"},
        }

    async def h_dataset(self, request: web.Request) -> web.Response:
        ds = self.model.datasets.get(request.match_info["id"])
        if ds is None:
            return problem(404, "NotFoundError", f"Dataset {request.match_info['id']} not found")
        return self._catalog_json({ds.id: self._project(self._dataset_obj(ds), request.query.get("properties"))})

    async def h_datasets(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 20, 1, 100)
        start = int_param(request, "start", 0, 0, None)
        if limit is None or start is None:
            return problem(400, "BadRequestError", "Invalid limit/start: limit must be between 1 and 100")
        objs = [self._dataset_obj(d) for d in self.model.datasets.values()][start:start + limit]
        return self._catalog_json({o["id"]: self._project(o, request.query.get("properties")) for o in objs})

    async def h_last_batches(self, request: web.Request) -> web.Response:
        out: dict[str, Any] = {}
        for ds_id in filter(None, request.query.get("dataSetId", "").split(",")):
            ds = self.model.datasets.get(ds_id)
            if ds is None or not ds.batches:
                continue
            last = max(ds.batches, key=lambda b: b.created)
            failed = [b for b in ds.batches if b.status == "failed"]
            out[ds.id] = {"lastBatchId": last.key, "lastBatchStatus": last.status,
                          "lastSuccessfulBatchId": ds.latest_success.key if ds.latest_success else None,
                          "lastFailedBatchId": failed[-1].key if failed else None,
                          "imsOrg": self.cfg.org_id, "sandboxId": self._sandbox_id(),
                          "created": ds.created, "updated": last.created}
        return self._catalog_json(out)

    # -- Data Access listings ---------------------------------------------------------

    def _page_size(self, ds: Dataset) -> int:
        return max(1, min(100, ds.spec.page_size or self.cfg.page_size))

    async def h_batch_files(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        b = self.model.batches_by_data_id.get(bid)
        if b is None:
            kb = self.model.batches_by_key.get(bid)
            if kb is not None and kb.dataset.spec.related_miss == "empty":
                return web.json_response({"data": [], "_page": {"limit": 100, "count": 0}})
            return gw_error(404, "404", "The requested batch was not found.")
        limit = int_param(request, "limit", self._page_size(b.dataset), 1, None)
        start = int_param(request, "start", 0, 0, None)
        if limit is None or start is None:
            return gw_error(400, "400", "Invalid start/limit: limit must be a positive integer")
        limit = min(limit, 100)
        base = base_url(request)
        items = [self._dsf_item(base, f, b.dataset) for f in b.files]
        path = f"{EXPORT}/batches/{quote(bid)}/files"
        return web.json_response(_paged(items, start, limit, base + path))

    def _dsf_item(self, base: str, f: DataSetFile, ds: Dataset) -> dict[str, Any]:
        return {"dataSetFileId": f.id, "dataSetViewId": ds.view_id, "version": "1.0.0",
                "created": str(f.created), "updated": str(f.created), "isValid": False,
                "_links": {"self": {"href": f"{base}{EXPORT}/files/{quote(f.id)}"}}}

    def _part_item(self, base: str, f: DataSetFile, p: PartFile, ds: Dataset) -> dict[str, Any]:
        return {"name": p.name, "length": str(p.size) if ds.spec.length_as == "string" else p.size,
                "_links": {"self": {"href": f"{base}{EXPORT}/files/{quote(f.id)}?path={quote(p.name, safe='')}"}}}

    def _dsf_dataset(self, f: DataSetFile) -> Dataset:
        return self.model.file_batch[f.id].dataset

    async def h_files(self, request: web.Request) -> web.StreamResponse:
        f = self.model.files.get(request.match_info["id"])
        if f is None:
            return gw_error(404, "404", "The dataset file was not found.")
        if "path" in request.query:
            return await self._download(request, f, redirected=False)
        if request.method == "HEAD":
            return gw_error(400, "400", "path is required for HEAD")
        return self._listing(request, f)

    def _listing(self, request: web.Request, f: DataSetFile) -> web.Response:
        ds = self._dsf_dataset(f)
        base = base_url(request)
        if f.children:
            items = [(c.id, self._dsf_item(base, c, ds)) for c in f.children]
        else:
            items = [(p.name, self._part_item(base, f, p, ds)) for p in f.parts]
        if ds.spec.listing_shape == "bare_array":
            return web.json_response([it for _, it in items])
        limit = int_param(request, "limit", self._page_size(ds), 1, None)
        if limit is None:
            return gw_error(400, "400", "Invalid limit: must be a positive integer")
        limit = min(limit, 100)
        # name cursor (2021 spec: start=fileName): the page begins at the first name >= start
        cursor = request.query.get("start", "")
        keys = [k for k, _ in items]
        first = next((i for i, k in enumerate(keys) if k >= cursor), len(keys)) if cursor else 0
        page = [it for _, it in items[first:first + limit]]
        url = f"{base}{EXPORT}/files/{quote(f.id)}"
        body: dict[str, Any] = {"data": page, "_page": {"limit": limit, "count": len(page)},
                                "_links": {"page": {"href": f"{url}?start=0&limit={limit}", "templated": True}}}
        if first + limit < len(keys):
            body["_links"]["next"] = {"href": f"{url}?{urlencode({'start': keys[first + limit], 'limit': limit})}"}
        return web.json_response(body)

    # -- downloads ------------------------------------------------------------------

    def _sign(self, fid: str, name: str) -> str:
        return hmac.new(self._sig_key, f"{fid}\x00{name}".encode(), hashlib.sha256).hexdigest()[:32]

    async def h_blob(self, request: web.Request) -> web.StreamResponse:
        """Redirect target: no gateway auth, but a signed URL (like a pre-signed blob URL)."""
        names = sorted(k.lower() for k in request.headers.keys())
        self.stats.redirect_requests += 1
        self.stats.redirect_header_names.append(names)
        if "authorization" in names or "x-api-key" in names:
            self.stats.redirect_saw_auth = True
        f = self.model.files.get(request.match_info["id"])
        name = request.query.get("path", "")
        if f is None or not hmac.compare_digest(request.query.get("sig", ""), self._sign(f.id, name)):
            return gw_error(403, "403", "Signature not valid")
        return await self._download(request, f, redirected=True)

    async def _download(self, request: web.Request, f: DataSetFile, redirected: bool) -> web.StreamResponse:
        name = request.query["path"]
        part = next((p for p in f.parts if p.name == name), None)
        if part is None:
            return gw_error(404, "404", "The requested file was not found.")
        fl = self.cfg.faults
        fs: RequestFaultState = request[FAULTS]
        if fl.redirect and not redirected:
            self.faults_engine.count("redirect")
            loc = f"{self.redirect_url}{EXPORT}/files/{quote(f.id)}?{urlencode({'path': name, 'sig': self._sign(f.id, name)})}"
            return web.Response(status=307, headers={"Location": loc})
        total = part.size
        ctype = content_type_for(name)
        if request.method == "HEAD":
            return web.Response(status=200, headers={"Accept-Ranges": "bytes", "Content-Type": ctype,
                                                     "Content-Length": str(total)})
        if fs.decide("error_body", fl.p_error_body):
            return gw_error(500, "500000", "Internal Server Error: unexpected failure reading file")
        rng = parse_range(request.headers.get("Range"), total)
        if rng is not None and fs.decide("ignore_range", fl.ignore_range):
            rng = None
        if rng == "416":
            return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
        return await self._stream(request, f, part, rng, fs)

    async def _stream(self, request: web.Request, f: DataSetFile, part: PartFile,
                      rng: tuple[int, int] | None, fs: RequestFaultState) -> web.StreamResponse:
        fl = self.cfg.faults
        total = part.size
        if rng is not None:
            start, end = rng
            if end > start and fs.decide("short_range", fl.p_short_range):
                end = start + max(1, (end - start + 1) // 2) - 1
            status = 206
        else:
            start, end, status = 0, total - 1, 200
        length = end - start + 1 if total else 0
        resp = web.StreamResponse(status=status)
        resp.content_type = content_type_for(part.name)
        resp.content_length = length
        resp.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        elif fl.send_digest:
            resp.headers["Repr-Digest"] = "sha-256=:" + base64.b64encode(bytes.fromhex(part.sha256)).decode() + ":"
        # at most one failing body fault per response
        corrupt_at = cut_after = -1
        if length > 1 and fs.decide("reset", fl.p_reset):
            cut_after = int(fs.roll("reset.at") * (length - 1))
        elif status == 200 and length and fs.decide("corrupt", fl.p_corrupt):
            corrupt_at = int(fs.roll("corrupt.at") * length)
        self.stats.statuses[status] += 1
        await resp.prepare(request)
        key = f"{f.id}/{part.name}"
        if length == 0:
            await resp.write_eof()
            return resp
        if corrupt_at < 0 and cut_after < 0 and not fl.bandwidth_bps and not fl.response_limit_s:
            # no body fault for this response: zero-copy fast path
            sent = await self._sendfile(request, resp, part.path, start, length, key)
        else:
            sent = await self._send_chunks(request, resp, part.path, start, length, corrupt_at, cut_after, key)
        if sent < length:
            return resp  # connection already aborted
        await resp.write_eof()
        return resp

    def _account(self, key: str, n: int) -> None:
        # counted before the bytes leave, so a client never sees data the stats do not show
        self.stats.bytes_sent += n
        self.stats.bytes_by_file[key] += n

    async def _sendfile(self, request: web.Request, resp: web.StreamResponse, path: Path,
                        start: int, length: int, key: str) -> int:
        """Fast path: kernel sendfile (the benchmark server must not be the bottleneck)."""
        transport = request.transport
        if transport is None:
            return 0
        with open(path, "rb") as fh:
            self._account(key, length)
            try:
                await asyncio.get_running_loop().sendfile(transport, fh, start, length)
            except NotImplementedError:
                self._account(key, -length)
                return await self._send_chunks(request, resp, path, start, length, -1, -1, key)
            except (ConnectionError, OSError, RuntimeError):
                return 0  # unknown partial count: leave the optimistic total
        return length

    async def _send_chunks(self, request: web.Request, resp: web.StreamResponse, path: Path, start: int,
                           length: int, corrupt_at: int, cut_after: int, key: str) -> int:
        """Slow path: 1 MiB chunks with pacing, response time limit, corruption and resets."""
        fl = self.cfg.faults
        bps = fl.bandwidth_bps
        chunk = min(CHUNK, max(4096, int(bps / 20))) if bps else CHUNK
        deadline = request[T0] + fl.response_limit_s if fl.response_limit_s else None
        t_start, sent = time.monotonic(), 0
        limit = cut_after if cut_after >= 0 else length
        with open(path, "rb") as fh:
            fh.seek(start)
            while sent < limit:
                data = fh.read(min(chunk, limit - sent))
                if not data:
                    break
                if 0 <= corrupt_at - sent < len(data):
                    b = bytearray(data)
                    b[corrupt_at - sent] ^= 0xFF
                    data = bytes(b)
                if bps:  # pace before writing: the client never gets bytes ahead of bps
                    ahead = (sent + len(data)) / bps - (time.monotonic() - t_start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                self._account(key, len(data))
                try:
                    await resp.write(data)
                except (ConnectionError, RuntimeError):
                    return sent
                sent += len(data)
                if deadline is not None and time.monotonic() > deadline and sent < length:
                    self.faults_engine.count("response_limit")
                    self._abort(request)
                    return sent
        if sent < length:
            self._abort(request)
        return sent

    @staticmethod
    def _abort(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()

    # -- Segmentation export jobs ---------------------------------------------------------

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


# ----------------------------------------------------------------------------- pure helpers


def _uuid_from(s: str) -> str:
    h = hashlib.sha256(s.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _paged(items: list[Any], start: int, limit: int, url: str) -> dict[str, Any]:
    """Numeric-offset paging of /export/batches/{id}/files; `next` only when truncated."""
    page = items[start:start + limit]
    body: dict[str, Any] = {"data": page, "_page": {"limit": limit, "count": len(page)},
                            "_links": {"page": {"href": f"{url}?start=0&limit={limit}", "templated": True}}}
    if start + limit < len(items):
        body["_links"]["next"] = {"href": f"{url}?start={start + limit}&limit={limit}"}
    return body


def _simple_match(values: list[Any], spec: str) -> bool:
    """`{prop}=v1,v2` matches any; `{prop}=!v1,v2` matches none."""
    neg = spec.startswith("!")
    wanted = {w.strip() for w in spec.lstrip("!").split(",")}
    hit = any(str(v) in wanted for v in values)
    return not hit if neg else hit


def _int_or_raise(name: str, v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"{name} must be an epoch time in milliseconds") from None


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, (int, float)):
        return (0, v)
    return (1, "" if v is None else str(v))


_PROP_RE = re.compile(r"^(!?)([A-Za-z_][\w]*)\s*(==|!=|>=|<=|>|<|~)?\s*(.*)$")


def _cmp_value(v: Any) -> tuple[Any, ...]:
    s = str(v)
    try:
        return (0, float(s))
    except ValueError:
        pass
    if re.fullmatch(r"\d+(\.\d+)*", s):
        return (1, tuple(int(x) for x in s.split(".")))
    return (2, s)


def _property_match(o: dict[str, Any], expr: str) -> bool:
    """Catalog `property=` syntax (filter-data.md), top-level fields only."""
    m = _PROP_RE.match(expr)
    if not m:
        raise ValueError(f"Invalid property filter: {expr}")
    neg, name, op, val = m.groups()
    if op is None:
        return (name in o) != bool(neg)
    if name not in o:
        return False
    cur = o[name]
    if op == "~":
        return re.search(val, str(cur)) is not None
    if op == "==":
        return str(cur) == val
    if op == "!=":
        return str(cur) != val
    a, b = _cmp_value(cur), _cmp_value(val)
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


# ----------------------------------------------------------------------------- threaded


class ThreadedFakePlatform:
    """A FakePlatform on its own event loop in a daemon thread (for blocking callers)."""

    def __init__(self, platform: FakePlatform, timeout: float = 600.0) -> None:
        self.platform = platform
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-aep", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fake platform did not start in time")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.platform.start())
        except BaseException as exc:  # surface start errors to the caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.platform.stop())
        self._loop.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.platform, name)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ThreadedFakePlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

