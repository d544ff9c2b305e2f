"""Discovery: Catalog batches -> Data Access dataSetFiles -> files, page by page.

Accepts every variant the API reference lists: `length` as string or number, bare-array
listings, nested dataSetFiles (directories of directories), either batch-metrics form, and a
Catalog key that is not the data batch id (then `relatedObjects[type=batch].id` is tried).
Paging always follows `_links.next` until it is absent; `start` is never built by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from .client import PlatformClient
from ..errors import ExportError, NotFound, UnsafeNameError
from ..checks.integrity import expected_record_count
from ..model import BatchRef, FileTask
from ..output.paths import safe_component, safe_relative

log = structlog.get_logger("aep_export.discovery")

CATALOG = "/data/foundation/catalog"
EXPORT = "/data/foundation/export"
SEGMENTATION = "/data/core/ups"
DOWNLOADABLE = frozenset({"success", "active"})  # "Active and Success are used interchangeably"
FAILED_JOB = frozenset({"FAILED", "CANCELLED", "CANCELLING"})
MAX_PAGES = 100_000
MAX_DEPTH = 8
CATALOG_GROUP = 25  # datasets per grouped Catalog query: 25 ids keep the URL near 1 KB
CATALOG_MAX_LIMIT = 100  # the Catalog's largest page


class NoBatch(ExportError):
    """The dataset exists but has no successful batch to export."""


@dataclass
class Listing:
    """What one batch's listing produced besides downloadable files."""

    skipped: list[str] = field(default_factory=list)  # marker files such as _SUCCESS
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, why) unsafe names
    files: int = 0


FileSink = Callable[[FileTask], Awaitable[None]]


class Discovery:
    def __init__(self, client: PlatformClient, created_client: str | None = None):
        self.client = client
        self.created_client = created_client

    # -- Catalog ---------------------------------------------------------------------------

    async def latest_successful_batch(self, dataset_id: str) -> tuple[str, dict[str, Any]]:
        """The newest batch whose status is success/active: (Catalog key, batch object)."""
        params = self._newest_downloadable_query(dataset_id, limit=1)
        found = _downloadable(await self.client.get_json(f"{CATALOG}/batches", params))
        if not found:
            # Some servers may not OR a comma list: look at recent batches and filter here.
            params = {k: v for k, v in params.items() if k != "status"} | {"limit": "100"}
            found = _downloadable(await self.client.get_json(f"{CATALOG}/batches", params))
        if found:
            return found[0]
        await self._dataset_must_exist(dataset_id)
        raise NoBatch(f"dataset {dataset_id} has no successful batch")

    async def latest_successful_batches(self, dataset_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """One Catalog query for several datasets: `dataSet=a,b,…` matches any listed value.

        The answer holds the newest 100 downloadable batches of the whole group, so a dataset that
        appears in it has its newest batch there. Datasets that do not appear (older batches, none
        at all, or a server that does not OR the list) are left out: the caller asks for them one
        by one with `latest_successful_batch`.
        """
        params = self._newest_downloadable_query(",".join(dataset_ids), limit=CATALOG_MAX_LIMIT)
        wanted = set(dataset_ids)
        newest: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, obj in _downloadable(await self.client.get_json(f"{CATALOG}/batches", params)):
            for ds in _related_datasets(obj):
                if ds in wanted and ds not in newest:
                    newest[ds] = (key, obj)
        return newest

    def _newest_downloadable_query(self, datasets: str, limit: int) -> dict[str, str]:
        params = {"dataSet": datasets, "status": "success,active", "orderBy": "desc:created", "limit": str(limit)}
        if self.created_client:
            params["createdClient"] = self.created_client
        return params

    async def batch(self, batch_id: str) -> dict[str, Any]:
        body = await self.client.get_json(f"{CATALOG}/batches/{batch_id}")
        obj = body.get(batch_id) if isinstance(body, dict) else None
        if obj is None and isinstance(body, dict) and len(body) == 1:
            obj = next(iter(body.values()))
        if not isinstance(obj, dict):
            raise NotFound(404, f"batch {batch_id} not found in the Catalog")
        return obj

    async def _dataset_must_exist(self, dataset_id: str) -> None:
        try:
            await self.client.get_json(f"{CATALOG}/dataSets/{dataset_id}")
        except NotFound:
            raise NotFound(404, f"dataset {dataset_id} not found") from None

    # -- Data Access -----------------------------------------------------------------------

    async def resolve_batch(self, dataset_id: str, key: str, obj: dict[str, Any], source: str = "dataset") -> tuple[BatchRef, list[dict]]:
        """The id the files are really listed under, and that batch's dataSetFiles."""
        candidates = [key] + [r["id"] for r in obj.get("relatedObjects", []) if isinstance(r, dict) and r.get("type") == "batch" and r.get("id")]
        last_error: Exception | None = None
        for candidate in dict.fromkeys(candidates):
            try:
                files = [item async for item in self._pages(f"{EXPORT}/batches/{candidate}/files")]
            except NotFound as exc:
                last_error = exc
                continue
            if files or candidate == candidates[-1]:
                batch_id = safe_component(candidate, "batch id")
                return BatchRef(dataset_id, batch_id, obj, expected_record_count(obj), source), files
        raise last_error or NotFound(404, f"batch {key} has no files")

    async def list_files(self, batch: BatchRef, dataset_files: list[dict], sink: FileSink) -> Listing:
        """Walk every dataSetFile (descending into nested ones) and hand each file to `sink`."""
        listing = Listing()
        for entry in dataset_files:
            dsf_id = entry.get("dataSetFileId")
            if not dsf_id:
                continue
            await self._walk(batch, str(dsf_id), _href(entry) or f"{EXPORT}/files/{dsf_id}", sink, listing, 0)
        return listing

    async def _walk(self, batch: BatchRef, dsf_id: str, url: str, sink: FileSink, listing: Listing, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ExportError(f"dataSetFile {dsf_id}: nested deeper than {MAX_DEPTH} levels")
        safe_dsf = safe_component(dsf_id, "dataSetFileId")
        async for item in self._pages(url):
            if "name" in item:
                await self._file(batch, safe_dsf, item, sink, listing)
            elif item.get("dataSetFileId"):  # Case 2: a directory of further dataSetFiles
                child = str(item["dataSetFileId"])
                await self._walk(batch, child, _href(item) or f"{EXPORT}/files/{child}", sink, listing, depth + 1)

    async def _file(self, batch: BatchRef, dsf_id: str, item: dict, sink: FileSink, listing: Listing) -> None:
        name = str(item["name"])
        try:
            rel = safe_relative(name)
        except UnsafeNameError as exc:
            listing.refused.append((f"{dsf_id}/{name}", str(exc)))
            log.error("unsafe_name_refused", batch=batch.batch_id, name=repr(name))
            return
        if rel.rsplit("/", 1)[-1].startswith(("_", ".")):
            listing.skipped.append(f"{dsf_id}/{rel}")  # Spark/Hadoop markers such as _SUCCESS
            return
        url = _href(item) or str(self.client.url(f"{EXPORT}/files/{dsf_id}").with_query(path=name))
        task = FileTask(batch, dsf_id, rel, url, _length(item.get("length")), f"{batch.dataset_id}/{batch.batch_id}/{dsf_id}/{rel}")
        listing.files += 1
        await sink(task)

    async def _pages(self, url: str) -> AsyncIterator[dict]:
        """Items of a Data Access listing, following `_links.next`; accepts a bare array too."""
        seen: set[str] = set()
        next_url: str | None = url
        for _ in range(MAX_PAGES):
            if next_url is None:
                return
            seen.add(next_url)
            body = await self.client.get_json(next_url)
            items = body if isinstance(body, list) else body.get("data", []) if isinstance(body, dict) else []
            for item in items:
                if isinstance(item, dict):
                    yield item
            nxt = _href(body.get("_links", {}), "next") if isinstance(body, dict) else None
            next_url = nxt if nxt and nxt not in seen and items else None
        raise ExportError(f"listing {url} did not end after {MAX_PAGES} pages")

    # -- Segmentation export jobs (audiences) ----------------------------------------------

    async def audience_batches(self, job_id: str, wait_timeout: float) -> list[tuple[str, str]]:
        """Wait for an export job to succeed; its (dataset id, batch id) pairs."""
        deadline = time.monotonic() + wait_timeout
        delay = 0.5
        while True:
            job = await self.client.get_json(f"{SEGMENTATION}/export/jobs/{job_id}")
            status = str(job.get("status", "")).upper()
            if status == "SUCCEEDED":
                return _job_batches(job)
            if status in FAILED_JOB:
                raise ExportError(f"audience export job {job_id} ended {status}")
            if time.monotonic() + delay > deadline:
                raise ExportError(f"audience export job {job_id} still {status} after {wait_timeout:.0f}s")
            log.info("waiting_for_export_job", job=job_id, status=status, next_poll_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)


class LatestBatches:
    """The latest successful batch of each configured dataset, with one Catalog query per group.

    Hundreds of datasets would otherwise cost hundreds of Catalog calls against the gateway's rate
    limit before the first byte. The first producer of a group asks for the whole group; the others
    wait for that answer. Whatever the group query leaves out (or if it fails) is asked one by one,
    so the outcome is the same as with per-dataset queries.
    """

    def __init__(self, discovery: Discovery, dataset_ids: Iterable[str], group: int = CATALOG_GROUP):
        ids = list(dict.fromkeys(dataset_ids))
        self.discovery = discovery
        self._groups = [ids[i:i + group] for i in range(0, len(ids), group)]
        self._group_of = {ds: n for n, members in enumerate(self._groups) for ds in members}
        self._locks = [asyncio.Lock() for _ in self._groups]
        self._answers: dict[int, dict[str, tuple[str, dict[str, Any]]]] = {}

    async def latest(self, dataset_id: str) -> tuple[str, dict[str, Any]]:
        n = self._group_of.get(dataset_id)
        if n is not None and len(self._groups[n]) > 1:
            found = (await self._group_answer(n)).get(dataset_id)
            if found is not None:
                return found
        return await self.discovery.latest_successful_batch(dataset_id)

    async def _group_answer(self, n: int) -> dict[str, tuple[str, dict[str, Any]]]:
        async with self._locks[n]:
            if n not in self._answers:
                try:
                    self._answers[n] = await self.discovery.latest_successful_batches(self._groups[n])
                except ExportError as exc:  # each dataset's own query will meet (and report) it
                    log.warning("grouped_catalog_query_failed", datasets=len(self._groups[n]), error=str(exc))
                    self._answers[n] = {}
            return self._answers[n]


def _downloadable(body: Any) -> list[tuple[str, dict]]:
    if not isinstance(body, dict):
        return []
    found = [(key, obj) for key, obj in body.items() if isinstance(obj, dict) and str(obj.get("status", "")).lower() in DOWNLOADABLE]
    # Newest first even if the server ignored orderBy.
    return sorted(found, key=lambda kv: kv[1].get("created") or 0, reverse=True)


def _related_datasets(obj: dict) -> list[str]:
    return [str(r["id"]) for r in obj.get("relatedObjects") or []
            if isinstance(r, dict) and r.get("type") == "dataSet" and r.get("id")]


def _job_batches(job: dict) -> list[tuple[str, str]]:
    dest = job.get("destination") or {}
    dataset = dest.get("datasetId") or dest.get("dataSetId")
    if not dataset:
        raise ExportError(f"export job {job.get('id')} names no destination dataset")
    ids = [dest.get("batchId")] + [b.get("batchId") for b in dest.get("batches") or [] if isinstance(b, dict)]
    batches = [(str(dataset), str(b)) for b in ids if b]
    if not batches:
        raise ExportError(f"export job {job.get('id')} succeeded but names no batch")
    return batches


def _href(obj: Any, rel: str = "self") -> str | None:
    links = obj.get("_links", obj) if isinstance(obj, dict) else {}
    link = links.get(rel) if isinstance(links, dict) else None
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) and href else None


def _length(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None



