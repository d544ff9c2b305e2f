"""Data Access (aep-api.md §4): a batch's dataSetFiles, then the files inside, page by page.

Accepts every variant the reference lists: `length` as string or number, bare-array listings,
nested dataSetFiles (directories of directories), and a Catalog key that is not the data batch
id (then `relatedObjects[type=batch].id` is tried, whether the key gave 404, 400, 422 or an empty
list). Paging always follows `_links.next` until it is absent; `start` is never built by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from .catalog import related_batches
from ..checks.integrity import expected_record_count
from ..errors import ExportError, NotFound, PlatformError, UnsafeNameError
from ..model import BatchRef, FileTask
from ..output.paths import folder_id, listed_name

log = structlog.get_logger("aep_export.discovery")

EXPORT = "/data/foundation/export"
MAX_PAGES = 100_000
MAX_DEPTH = 8
# Answers to a Catalog key that is not the data batch id (the old Customer AI form): try the next id.
NOT_THIS_ID = frozenset({400, 404, 422})


@dataclass
class Listing:
    """What one batch's listing produced besides downloadable files."""

    skipped: list[str] = field(default_factory=list)  # marker files such as _SUCCESS
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, why) unsafe names
    files: int = 0
    bytes: int = 0  # sum of the listed lengths (where given)


FileSink = Callable[[FileTask], Awaitable[None]]


class DataAccessApi:
    """Data Access listings (a mixin of Discovery: uses self.client)."""

    async def resolve_batch(self, dataset_id: str, key: str, obj: dict[str, Any], source: str = "dataset") -> tuple[BatchRef, list[dict]]:
        """The id the files are really listed under, and that batch's dataSetFiles."""
        candidates = list(dict.fromkeys([key, *related_batches(obj)]))
        last_error: Exception | None = None
        for candidate in candidates:
            try:
                files = [item async for item in self._pages(f"{EXPORT}/batches/{candidate}/files")]
            except PlatformError as exc:
                if exc.status not in NOT_THIS_ID:
                    raise
                last_error = exc
                continue
            if files or candidate == candidates[-1]:
                batch_id = folder_id(candidate, "batch id")
                return BatchRef(folder_id(dataset_id, "dataset id"), batch_id, obj, expected_record_count(obj), source), files
        raise last_error or NotFound(404, f"batch {key} has no files")

    async def list_files(self, batch: BatchRef, dataset_files: list[dict], sink: FileSink) -> Listing:
        """Walk every dataSetFile (descending into nested ones) and hand each file to `sink`."""
        listing = Listing()
        for entry in dataset_files:
            dsf_id = entry.get("dataSetFileId")
            if not dsf_id:
                continue
            await self._walk(batch, str(dsf_id), href(entry) or f"{EXPORT}/files/{dsf_id}", sink, listing, 0)
        return listing

    async def _walk(self, batch: BatchRef, dsf_id: str, url: str, sink: FileSink, listing: Listing, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ExportError(f"dataSetFile {dsf_id}: nested deeper than {MAX_DEPTH} levels")
        try:
            safe_dsf = folder_id(dsf_id, "dataSetFileId")
        except UnsafeNameError as exc:  # refused alone: the batch fails, the rest is still fetched
            listing.refused.append((dsf_id, str(exc)))
            log.error("unsafe_name_refused", batch=batch.batch_id, dataset_file=repr(dsf_id), error=str(exc))
            return
        async for item in self._pages(url):
            if "name" in item:
                await self._file(batch, safe_dsf, item, sink, listing)
            elif item.get("dataSetFileId"):  # Case 2: a directory of further dataSetFiles
                child = str(item["dataSetFileId"])
                await self._walk(batch, child, href(item) or f"{EXPORT}/files/{child}", sink, listing, depth + 1)

    async def _file(self, batch: BatchRef, dsf_id: str, item: dict, sink: FileSink, listing: Listing) -> None:
        name = str(item["name"])
        try:
            rel = listed_name(name)
        except UnsafeNameError as exc:
            listing.refused.append((f"{dsf_id}/{name}", str(exc)))
            log.error("unsafe_name_refused", batch=batch.batch_id, name=repr(name))
            return
        if rel.rsplit("/", 1)[-1].startswith(("_", ".")):
            listing.skipped.append(f"{dsf_id}/{rel}")  # Spark/Hadoop markers such as _SUCCESS
            return
        url = href(item) or str(self.client.url(f"{EXPORT}/files/{dsf_id}").with_query(path=name))
        size = length(item.get("length"))
        task = FileTask(batch, dsf_id, rel, url, size, f"{batch.dataset_id}/{batch.batch_id}/{dsf_id}/{rel}")
        listing.files += 1
        listing.bytes += size or 0
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
            items = listing_items(body)
            for item in items:
                yield item
            nxt = href(body.get("_links", {}), "next") if isinstance(body, dict) else None
            next_url = nxt if nxt and nxt not in seen and items else None
        raise ExportError(f"listing {url} did not end after {MAX_PAGES} pages")


def listing_items(body: Any) -> list[dict]:
    """`data[]` of a listing, or the bare array one ETL-guide example shows."""
    items = body if isinstance(body, list) else body.get("data", []) if isinstance(body, dict) else []
    return [item for item in items if isinstance(item, dict)]


def href(obj: Any, rel: str = "self") -> str | None:
    links = obj.get("_links", obj) if isinstance(obj, dict) else {}
    link = links.get(rel) if isinstance(links, dict) else None
    value = link.get("href") if isinstance(link, dict) else None
    return value if isinstance(value, str) and value else None


def length(value: Any) -> int | None:
    """`length` is a string of bytes in the API docs and a number in one ETL-guide example."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
