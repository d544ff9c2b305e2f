"""The Data Landing Zone source (issue #23, aep-dataset-export.md §1, §2, §4): a dataset exported
by a Flow Service dataflow run into the DLZ's Azure Blob container, then downloaded by the same
transfer as every other file (ranged, parallel, resumable; the blob's ETag as resume validator,
its Content-MD5 checked when the listing states one).

Per `via = "dlz"` entry: eligibility; the dataset's DLZ dataflow (found, else created "once");
its newest successful run when younger than `reuse_run_within`, else an ad hoc run waited for;
the SAS from the credentials endpoint (refreshed before its `se` expiry); the run's
`exportTime=` folder listed with List Blobs; every file checked against the run's
outputFileCount and outputBytes here, and outputRecordCount after download (the report's row
count). Output: `{out}/{dataset}/{run id}/exportTime=…/{part}`, like a batch (`dataset=…/batch=…/`
with `export.layout = "hive"`); a file in a subfolder of the run's folder keeps that subfolder.

The SAS is a credential: registered for masking, sent only to the Blob origin (in the query
the signer adds at request time, never in a FileTask's URL), never to the gateway; gateway
credentials never go to the Blob origin (PlatformClient sends them to the gateway's origin only).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import structlog
from yarl import URL

from ..config import DatasetSettings
from ..errors import ExportError, PlatformError, UnsafeNameError
from ..layout import PLAIN, file_path, folder_id, listed_name
from ..masking import register_secret
from ..model import BatchRef, FileTask, Listing
from .blobs import Blob, list_blobs
from .catalog import CatalogApi
from .client import PlatformClient
from .dataaccess import FileSink, UntrustedListing
from .flowservice import CREDENTIALS, Flow, FlowService, run_metric
from .selection import Selection
from .sources import Preview, Resolved
from .traffic import count_as_blob

log = structlog.get_logger("aep_export.dlz")

REFRESH_BEFORE_S = 300.0  # a SAS is fetched again this long before its `se`, or at half its life when shorter
EXPORT_TIME = "exportTime="


class SasExpired(ExportError):
    """The DLZ credentials gave a SAS that is expired or about to, or the Blob service refused it."""

    kind = "sas_expired"


class DlzSas:
    """The DLZ container's URL and its SAS, fetched from the credentials endpoint (§2) and fetched
    again before it expires. Signs blob URLs at request time."""

    def __init__(self, client: PlatformClient):
        self.client = client
        self._container: str | None = None
        self._token = ""
        self._expires = 0.0  # epoch seconds (`se`)
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()  # one credentials call when many files need a fresh SAS at once

    async def container(self) -> str:
        await self._fresh()
        assert self._container is not None
        return self._container

    async def sign(self, url: str) -> str:
        await self._fresh()
        return f"{url}?{self._token}"

    async def _fresh(self) -> None:
        if self._container is not None and time.time() < self._refresh_at:
            return
        async with self._lock:
            if self._container is None or time.time() >= self._refresh_at:
                await self._fetch()

    async def _fetch(self) -> None:
        body = await self.client.get_json(CREDENTIALS, {"type": "dlz_destination"})
        if not isinstance(body, dict):
            raise ExportError("the DLZ credentials endpoint answered no object")
        if body.get("dlzProvider") and "azure" not in str(body["dlzProvider"]).lower():
            raise ExportError(f"this org's Data Landing Zone is hosted on {body['dlzProvider']}: only the Azure Blob DLZ "
                              "is supported (use via = \"data-access\")")
        uri, token = str(body.get("SASUri") or ""), str(body.get("SASToken") or "")
        base = URL(uri).with_query(None) if uri else None
        token = token or (URL(uri).raw_query_string if uri else "")
        if base is None or not token or not base.is_absolute():
            raise ExportError("the DLZ credentials endpoint answered without SASUri and SASToken")
        _register(token)
        expires = sas_expiry(token)
        now = time.time()
        if expires is not None and expires <= now + 1:
            raise SasExpired(f"the DLZ credentials endpoint gave a SAS that expired at {_iso(expires)} (se); "
                             "nothing can be read from the Data Landing Zone with it: rerun later, or ask Adobe "
                             "support if it persists")
        self._container, self._token = str(base).rstrip("/"), token.lstrip("?")
        lifetime = (expires - now) if expires is not None else 3600.0
        self._expires = now + lifetime
        self._refresh_at = now + max(lifetime - REFRESH_BEFORE_S, lifetime / 2)
        log.info("dlz_sas", container=self._container, expires=_iso(self._expires))


class DlzSource:
    """`via = "dlz"`: one dataset export run per entry, its files from the Data Landing Zone."""

    name = "dlz"

    def __init__(self, client: PlatformClient, catalog: CatalogApi, layout: str = PLAIN):
        self.client = client
        self.catalog = catalog
        self.layout = layout  # export.layout: the folders the runs' files go to
        self.flows = FlowService(client)
        self.sas = DlzSas(client)
        self._folders: dict[str, str] = {}  # run id -> its flow's folder

    async def _dataset(self, entry: DatasetSettings) -> str:
        if entry.id:
            return entry.id
        if entry.name is None:
            raise ExportError(f"dataset {entry.label}: neither id nor name is set")
        return await self.catalog.dataset_id_by_name(entry.name)

    async def select(self, entry: DatasetSettings) -> Selection:
        dataset_id = await self._dataset(entry)
        deadline = time.monotonic() + entry.wait_timeout
        await self.flows.check_eligible(dataset_id)
        flow = await self.flows.find_flow(dataset_id)
        if flow is None:
            flow = await self.flows.create_flow(dataset_id, entry.name or (await self.flows.eligible()).get(dataset_id))
        run = await self.flows.newest_success(flow.id, entry.reuse_run_within)
        if run is not None:
            log.info("dlz_run_reused", dataset=dataset_id, flow=flow.id, run=run.get("id"),
                     note=f"younger than reuse_run_within ({entry.reuse_run_within:g} s)")
        else:
            run = await self.flows.run_now(flow.id, dataset_id, deadline)
        return Selection(entry.label, dataset_id, [self._chosen(flow, run)])

    def _chosen(self, flow: Flow, run: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        run_id = folder_id(str(run.get("id") or ""), "run id", self.layout)
        self._folders[run_id] = flow.folder
        created = run.get("createdAt")
        return run_id, {**run, "created": created} if isinstance(created, int) else run  # `created` orders _LATEST

    async def preview(self, entry: DatasetSettings) -> Preview:
        """What a run would do, creating and starting nothing."""
        dataset_id = await self._dataset(entry)
        await self.flows.check_eligible(dataset_id)
        flow = await self.flows.find_flow(dataset_id)
        if flow is None:
            return Preview(Selection(entry.label, dataset_id, []),
                           [f"create source, DLZ base and target connections and a \"once\" dataflow for dataset {dataset_id}",
                            f"start an ad hoc export run, wait up to {entry.wait_timeout:.0f} s for it, and export its files"])
        run = await self.flows.newest_success(flow.id, entry.reuse_run_within)
        if run is None:
            return Preview(Selection(entry.label, dataset_id, []),
                           [f"start an ad hoc run of dataflow {flow.id}, wait up to {entry.wait_timeout:.0f} s for it, "
                            "and export its files"])
        return Preview(Selection(entry.label, dataset_id, [self._chosen(flow, run)]))

    async def resolve(self, dataset_id: str, key: str, obj: dict[str, Any], source: str = "dataset") -> Resolved:
        batch = BatchRef(folder_id(dataset_id, "dataset id", self.layout), key, obj, run_metric(obj, "recordSummary", "outputRecordCount"),
                         source, self.layout)
        container = await self._container()
        prefix = self._prefix(batch)
        try:
            blobs = await list_blobs(self.client, container, prefix, self.sas.sign)
        except PlatformError as exc:
            if exc.status in (401, 403):
                raise SasExpired(f"the Data Landing Zone refused the SAS while listing {prefix}: {exc}; "
                                 "the credentials endpoint's SAS may have expired or been revoked: rerun") from None
            raise
        return Resolved(batch, run_folder(blobs, obj, prefix))

    async def _container(self) -> str:
        """The DLZ container's URL; its origin told to the session's metrics (counted as "blob")."""
        container = await self.sas.container()
        count_as_blob(self.client.session, URL(container))
        return container

    def _prefix(self, batch: BatchRef) -> str:
        """Where the run's `exportTime=` folders are: `{flow folder}/{dataset}/exportTime=`."""
        return f"{self._folders.get(batch.batch_id, '')}/{batch.dataset_id}/{EXPORT_TIME}".lstrip("/")

    async def list_files(self, resolved: Resolved, sink: FileSink) -> Listing:
        """The run folder's files, each checked before any is handed on: a listing that cannot be
        trusted (a target named twice, counts that differ from the run's) downloads nothing."""
        batch, listing = resolved.batch, Listing()
        container = await self._container()
        tasks: dict[str, FileTask] = {}  # target -> its task
        try:
            for blob in resolved.detail:
                task = self._task(batch, listing, blob, container)
                if task is not None and tasks.setdefault(task.rel_path, task) is not task:
                    raise UntrustedListing(f"the folder of run {batch.batch_id} lists {blob.name!r} twice: which entry "
                                           "is right cannot be known")
            listing.files, listing.bytes = len(tasks), sum(t.size or 0 for t in tasks.values())
            check_against_run(batch, listing, resolved.detail)
        except UntrustedListing as exc:
            listing.untrusted = str(exc)
            listing.files = listing.bytes = 0  # none handed on: none is missing
            log.error("listing_untrusted", dataset=batch.dataset_id, batch=batch.batch_id, error=str(exc))
            return listing
        for task in tasks.values():
            await sink(task)
        return listing

    def _task(self, batch: BatchRef, listing: Listing, blob: Blob, container: str) -> FileTask | None:
        """The blob as a file of the batch: `exportTime=…/{path below that folder}`, every part of it a
        safe name; None when it is refused (unsafe) or skipped (a `_`/`.` marker)."""
        stamp, _, below = blob.name[len(self._prefix(batch)):].partition("/")
        export_time = EXPORT_TIME + stamp
        try:
            folder_id(export_time, "exportTime folder")
            rel = listed_name(below)
        except UnsafeNameError as exc:
            listing.refused.append((blob.name, str(exc)))
            log.error("unsafe_name_refused", batch=batch.batch_id, name=repr(blob.name))
            return None
        if rel.rsplit("/", 1)[-1].startswith(("_", ".")):
            listing.skipped.append(f"{export_time}/{rel}")
            return None
        digests = (("md5", blob.md5),) if blob.md5 else ()
        return FileTask(batch, export_time, rel, f"{container}/{quote(blob.name)}", blob.size,
                        file_path(batch.dataset_id, batch.batch_id, export_time, rel, batch.layout),
                        listed_digests=digests, signer=self.sas.sign)


def run_folder(blobs: list[Blob], run: dict[str, Any], prefix: str) -> list[Blob]:
    """The blobs of this run's `exportTime=YYYYMMDDHHMM` folder. [I] The reference does not say
    which folder a run writes: the one of the minute the run started, else the first folder
    after it (no later than its completion)."""
    folders: dict[str, list[Blob]] = {}
    for blob in blobs:
        if not blob.name.startswith(prefix):
            raise UntrustedListing(f"the listing of {prefix} holds the blob {blob.name!r}, outside it")
        stamp = blob.name[len(prefix):].split("/", 1)[0]
        folders.setdefault(stamp, []).append(blob)
    started = _run_time(run, "startedAtUTC") or _ms(run.get("createdAt"))
    if started is None:
        raise UntrustedListing(f"run {run.get('id')} states no start time: its exportTime folder cannot be told apart")
    first = datetime.fromtimestamp(started / 1000, UTC).strftime("%Y%m%d%H%M")
    completed = _run_time(run, "completedAtUTC")
    last = datetime.fromtimestamp(completed / 1000 + 60, UTC).strftime("%Y%m%d%H%M") if completed else "9" * 12
    for stamp in sorted(folders):
        if first <= stamp <= last:
            return folders[stamp]
    raise UntrustedListing(f"no exportTime folder under {prefix[:-len(EXPORT_TIME)]} for run {run.get('id')} "
                           f"(started {first}; folders: {', '.join(sorted(folders)[-3:]) or 'none'})")


def check_against_run(batch: BatchRef, listing: Listing, blobs: list[Blob]) -> None:
    """The folder against the run's own counts: every file and byte it says it wrote, no more."""
    files, size = run_metric(batch.catalog, "fileSummary", "outputFileCount"), run_metric(batch.catalog, "sizeSummary", "outputBytes")
    listed = listing.files + len(listing.refused)
    if files is not None and listed != files:
        raise UntrustedListing(f"the folder of run {batch.batch_id} holds {listed} files, the run says it wrote {files} "
                               "(metrics.fileSummary.outputFileCount)")
    total = sum(b.size or 0 for b in blobs if not b.name.rpartition("/")[2].startswith(("_", ".")))
    if size is not None and total != size:
        raise UntrustedListing(f"the folder of run {batch.batch_id} holds {total} bytes, the run says it wrote {size} "
                               "(metrics.sizeSummary.outputBytes)")


def sas_expiry(token: str) -> float | None:
    """The SAS's `se` as epoch seconds (None when it has none or it cannot be read)."""
    values = parse_qs(token.lstrip("?")).get("se")
    if not values:
        return None
    try:
        return datetime.fromisoformat(unquote(values[0]).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _register(token: str) -> None:
    """The SAS and its signature, in every spelling that may be printed, for masking."""
    register_secret(token)
    for sig in parse_qs(token.lstrip("?")).get("sig", []):
        register_secret(sig)
        register_secret(quote(sig, safe=""))


def _run_time(run: dict[str, Any], key: str) -> int | None:
    return _ms(((run.get("metrics") or {}).get("durationSummary") or {}).get(key))


def _ms(value: Any) -> int | None:
    """Epoch ms from a number (ms) or an ISO time."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
