"""aiohttp fake of IMS, Catalog, Data Access and Segmentation export jobs (see aep-api.md).

One main server (IMS + gateway routes) plus a second "blob" server on another loopback
address that receives 307 redirects in `Faults.redirect` mode and records the headers
it is sent (a correct client must not forward Authorization/x-api-key there).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .blob import BlobStore, FakeBlobs
from .catalog import CatalogApi, CreatedDataset
from .config import FakeConfig
from .data import Batch, ExpectedFile, Model, default_data_dir
from .dataaccess import DataAccessApi
from .faults import FaultEngine, RequestFaultState
from .flowservice import FlowServiceApi
from .http import CATALOG, EXPORT, FAULTS, T0, UPS, gw_error, loopback_alt_host, range_start_of
from .ims import ImsApi
from .segmentation import ExportJob, SegmentationApi, _uuid_from  # noqa: F401 - re-exported
from .stats import FakeStats

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ----------------------------------------------------------------------------- platform


class FakePlatform(ImsApi, CatalogApi, DataAccessApi, SegmentationApi, FlowServiceApi):
    """Real TCP fake of the AEP APIs. Use as `async with FakePlatform(cfg) as fp:`."""

    def __init__(self, cfg: FakeConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 redirect_host: str | None = None, blobs: BlobStore | None = None) -> None:
        self.cfg = cfg or FakeConfig.demo()
        self.dlz = self.cfg.dlz
        self.blobs: BlobStore = blobs if blobs is not None else FakeBlobs(self.cfg.seed)
        self._init_flowservice()
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
        self._created: dict[str, CreatedDataset] = {}  # POST /dataSets
        self._attached: dict[str, str] = {}  # batch key -> dataset an export job wrote it into
        self._batch_polls: Counter[str] = Counter()  # GET /batches/{id} of attached batches
        self.hidden_batches: set[str] = set()  # Catalog keys not yet visible (tests: created while paging)
        self._sig_key = hashlib.sha256(f"sig{self.cfg.seed}".encode()).digest()
        self._runners: list[web.AppRunner] = []
        self.url = ""
        self.redirect_url = ""
        self._preconfigure_jobs()

    # -- public API -------------------------------------------------------------------

    @property
    def faults(self):
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
        """Datasets visible in the Catalog (a segment's export data is not, until exported)."""
        return [ds.id for ds in self.model.datasets.values() if not ds.spec.segment_id]

    @property
    def created_dataset_ids(self) -> list[str]:
        return list(self._created)

    @property
    def export_job_ids(self) -> list[int]:
        return sorted(self._jobs)

    def expected_files(self, all_batches: bool = False) -> list[ExpectedFile]:
        """Parts of each dataset's latest successful batch (all batches if asked); a segment's
        batch only once an export job wrote it into a dataset, and under that dataset."""
        out = []
        for e in self.model.expected_files(all_batches=all_batches):
            ds = self.model.datasets[e.dataset_id]
            if ds.spec.segment_id:
                if e.catalog_batch_key not in self._attached:
                    continue
                e.dataset_id = self._attached[e.catalog_batch_key]
            out.append(e)
        return out

    def latest_batch(self, dataset_id: str) -> Batch | None:
        return self.model.datasets[dataset_id].latest_success

    def reset_stats(self) -> None:
        self.faults_engine.reset()
        s = self.stats
        s.requests.clear()
        s.statuses.clear()
        s.bytes_by_file.clear()
        s.bodies.clear()
        s.sent_log.clear()
        s.request_log.clear()
        s.in_flight_at_start.clear()
        s.bytes_sent = s.tokens_issued = s.redirect_requests = 0
        s.redirect_header_names.clear()
        s.redirect_saw_auth = False

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "ims_url": self.ims_url, "client_id": self.client_id,
                "client_secret": self.client_secret, "org_id": self.org_id, "sandbox": self.sandbox,
                "static_token": self.static_token, "datasets": self.dataset_ids,
                "export_job_ids": self.export_job_ids, "redirect_url": self.redirect_url,
                "dlz_container_url": self.blobs.container_url(),
                "data_dir": str(self.model.data_dir)}

    # -- lifecycle --------------------------------------------------------------------

    def link_base(self, request: web.Request, rel: str = "self") -> str:
        """Scheme, host and port as the links of this response spell them (FakeConfig.links)."""
        style = self.cfg.links
        if style == "request":
            return f"{request.scheme}://{request.host}"
        host = self.cfg.link_host or self.host
        with_port = style == "port" or (style == "documented" and rel == "self")
        return f"{request.scheme}://{host}:{self._port}" if with_port else f"{request.scheme}://{host}"

    async def start(self) -> FakePlatform:
        await asyncio.to_thread(self.model.materialize)
        main = self._main_app()
        self.url = await self._serve(main, self.host, self.port)
        self._port = int(self.url.rsplit(":", 1)[1])
        rhost = self._redirect_host_req or loopback_alt_host(self.host)
        self.redirect_url = await self._serve(self._redirect_app(), rhost, 0)
        if isinstance(self.blobs, FakeBlobs):  # its own origin: gateway credentials must never go there
            self.blobs.url = await self._serve(self.blobs.app(), self.host, 0)
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
        r.add_post(f"{CATALOG}/dataSets", self.h_create_dataset, name="catalog.createDataSet")
        r.add_get(f"{CATALOG}/dataSets/{{id}}", self.h_dataset, name="catalog.dataSet")
        r.add_get(f"{CATALOG}/lastBatches", self.h_last_batches, name="catalog.lastBatches")
        r.add_get(f"{EXPORT}/batches/{{id}}/files", self.h_batch_files, name="export.batchFiles")
        r.add_route("GET", f"{EXPORT}/files/{{id}}", self.h_files, name="export.files")
        r.add_route("HEAD", f"{EXPORT}/files/{{id}}", self.h_files, name="export.files.head")
        r.add_post(f"{UPS}/export/jobs", self.h_job_create, name="ups.jobs.create")
        r.add_get(f"{UPS}/export/jobs", self.h_job_list, name="ups.jobs.list")
        r.add_get(f"{UPS}/export/jobs/{{id}}", self.h_job_get, name="ups.jobs.get")
        r.add_delete(f"{UPS}/export/jobs/{{id}}", self.h_job_delete, name="ups.jobs.delete")
        self.flowservice_routes(r)
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
        self.stats.received(self._route_name(request))
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
            self.note_sas(request)
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
        if fs.decide("429", f.p_429) or self._in_throttle_burst(request):
            return self._resp_429(fs)
        if fs.decide("5xx", f.p_5xx):
            status = (500, 502, 503, 504)[int(fs.roll("5xx.status") * 4)]
            return gw_error(status, f"{status}000", "Internal Server Error" if status == 500 else "Service Unavailable")
        return await handler(request)

    def _in_throttle_burst(self, request: web.Request) -> bool:
        """Faults.throttle_downloads: the download requests numbered first..last (in the order they
        arrive, from 1) answer 429, whatever they ask for."""
        burst = self.cfg.faults.throttle_downloads
        if burst is None or self._route_name(request) != "export.download":
            return False
        first, last = burst
        if not first <= self.stats.requests["export.download"] <= last:
            return False
        self.faults_engine.count("429")
        return True

    def _resp_429(self, fs: RequestFaultState) -> web.Response:
        f = self.cfg.faults
        secs = max(0, math.ceil(f.retry_after_s))
        if f.p_retry_after_date and fs.roll("429.date") < f.p_retry_after_date:
            # HTTP-date has 1 s resolution: round up so the client never retries too early
            retry = email.utils.formatdate(math.ceil(time.time()) + secs + 1, usegmt=True)
        else:
            retry = str(secs)
        return gw_error(429, "429050", "Too many requests", headers={"Retry-After": retry})


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
        except BaseException as exc:  # noqa: BLE001 - surfaced to the caller in start(); surface start errors to the caller
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

