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

from ..checks.integrity import expected_record_count
from ..config import ExportSettings
from ..errors import ExportError, NotFound, PlatformError, UnsafeNameError
from ..layout import PLAIN, file_path, folder_id, listed_name
from ..model import BatchRef, FileTask, Listing
from .catalog import related_batches, stated_file_count
from .client import PlatformClient

log = structlog.get_logger("aep_export.discovery")

EXPORT = "/data/foundation/export"
MAX_LISTING_PAGES = ExportSettings.model_fields["max_listing_pages"].default
MAX_DEPTH = 8
# Answers to a Catalog key that is not the data batch id (the old Customer AI form): try the next id.
NOT_THIS_ID = frozenset({400, 404, 422})


class UntrustedListing(ExportError):
    """A listing that contradicts itself or the Catalog: its batch fails, nothing else does."""

    kind = "listing_untrusted"


FileSink = Callable[[FileTask], Awaitable[None]]


@dataclass
class _BatchWalk:
    """One batch's listing in progress."""

    batch: BatchRef
    sink: FileSink
    listing: Listing = field(default_factory=Listing)
    dataset_files: set[str] = field(default_factory=set)  # every dataSetFileId met, nested ones too


class DataAccessApi:
    """Data Access listings through the run's client (Discovery holds one)."""

    def __init__(self, client: PlatformClient, max_listing_pages: int = MAX_LISTING_PAGES, layout: str = PLAIN):
        self.client = client
        self.max_listing_pages = max_listing_pages  # pages of one Data Access listing (export.max_listing_pages)
        self.layout = layout  # export.layout: the folders the batches' files go to

    async def resolve_batch(self, dataset_id: str, key: str, obj: dict[str, Any],
                            source: str = "dataset") -> tuple[BatchRef, list[dict[str, Any]]]:
        """The id the files are really listed under, and that batch's dataSetFiles."""
        candidates = list(dict.fromkeys([key, *related_batches(obj)]))
        last_error: Exception | None = None
        for candidate in candidates:
            try:
                listing = self._pages(f"{EXPORT}/batches/{candidate}/files", f"the dataSetFiles of batch {candidate}")
                files = [item async for item in listing]
            except PlatformError as exc:
                if exc.status not in NOT_THIS_ID:
                    raise
                last_error = exc
                continue
            if files or candidate == candidates[-1]:
                batch_id = folder_id(candidate, "batch id", self.layout)
                return BatchRef(folder_id(dataset_id, "dataset id", self.layout), batch_id, obj, expected_record_count(obj),
                                source, self.layout), files
        raise last_error or NotFound(404, f"batch {key} has no files")

    async def list_files(self, batch: BatchRef, dataset_files: list[dict[str, Any]], sink: FileSink) -> Listing:
        """Walk every dataSetFile (descending into nested ones) and hand each file to `sink`. A
        listing that cannot be trusted stops the walk and says why in `Listing.untrusted`."""
        walk = _BatchWalk(batch, sink)
        try:
            for entry in dataset_files:
                dsf_id = entry.get("dataSetFileId")
                if dsf_id:
                    await self._walk(walk, str(dsf_id), href(entry) or f"{EXPORT}/files/{dsf_id}", 0)
            check_against_catalog(batch, walk.listing)
        except UntrustedListing as exc:
            walk.listing.untrusted = str(exc)
            log.error("listing_untrusted", dataset=batch.dataset_id, batch=batch.batch_id, error=str(exc))
        return walk.listing

    async def _walk(self, walk: _BatchWalk, dsf_id: str, url: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise UntrustedListing(f"dataSetFile {dsf_id}: nested deeper than {MAX_DEPTH} levels")
        if dsf_id in walk.dataset_files:
            raise UntrustedListing(f"dataSetFile {dsf_id} is listed twice in batch {walk.batch.batch_id}")
        walk.dataset_files.add(dsf_id)
        try:
            safe_dsf = folder_id(dsf_id, "dataSetFileId", walk.batch.layout)
        except UnsafeNameError as exc:  # refused alone: the batch fails, the rest is still fetched
            walk.listing.refused.append((dsf_id, str(exc)))
            log.error("unsafe_name_refused", batch=walk.batch.batch_id, dataset_file=repr(dsf_id), error=str(exc))
            return
        # The whole listing first: none of its files is fetched unless all of it holds up.
        items = [item async for item in self._pages(url, f"dataSetFile {dsf_id}")]
        for item in items:
            if "name" in item:
                await self._file(walk, safe_dsf, item)
            elif item.get("dataSetFileId"):  # Case 2: a directory of further dataSetFiles
                child = str(item["dataSetFileId"])
                await self._walk(walk, child, href(item) or f"{EXPORT}/files/{child}", depth + 1)

    async def _file(self, walk: _BatchWalk, dsf_id: str, item: dict[str, Any]) -> None:
        batch, listing = walk.batch, walk.listing
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
        task = FileTask(batch, dsf_id, rel, url, size, file_path(batch.dataset_id, batch.batch_id, dsf_id, rel, batch.layout))
        listing.files += 1
        listing.bytes += size or 0
        await walk.sink(task)

    async def _pages(self, url: str, what: str = "the listing") -> AsyncIterator[dict[str, Any]]:
        """Items of a Data Access listing, following `_links.next`; accepts a bare array too.
        Each page is checked (PageGuard) before any of its items is yielded."""
        guard = PageGuard(what, self.max_listing_pages)
        next_url: str | None = url
        while next_url is not None:
            guard.visit(str(self.client.url(next_url)))
            body = await self.client.get_json(next_url)
            items = listing_items(body)
            guard.admit(items)
            for item in items:
                yield item
            nxt = href(body.get("_links", {}), "next") if isinstance(body, dict) else None
            next_url = nxt if nxt and items else None  # an empty page ends the listing, whatever it links to


class PageGuard:
    """What one listing has shown so far. Refuses a page read before (by URL), a page of entries
    already listed (next links that cycle under new URLs, a cursor that does not advance), an
    entry listed twice (which of the two is right cannot be known), and more than `max_pages`."""

    def __init__(self, what: str, max_pages: int):
        self.what, self.max_pages = what, max_pages
        self.pages = 0
        self.urls: dict[str, int] = {}  # URL -> the page it gave
        self.entries: dict[tuple[str, str], int] = {}  # entry -> the page that listed it

    def visit(self, url: str) -> None:
        """Before a page is requested."""
        if url in self.urls:
            raise UntrustedListing(f"{self.what}: the next link of page {self.pages} points back to page {self.urls[url]}")
        if self.pages >= self.max_pages:
            raise UntrustedListing(f"{self.what}: more than {self.max_pages} pages (export.max_listing_pages), taken for a "
                                   "paging loop; raise the setting if the listing really is that long")
        self.pages += 1
        self.urls[url] = self.pages

    def admit(self, items: list[dict[str, Any]]) -> None:
        """After a page arrived: every entry on it must be new."""
        keys = [key for key in map(entry_key, items) if key is not None]
        if keys and all(key in self.entries for key in keys):
            earlier = ", ".join(str(p) for p in sorted({self.entries[key] for key in keys}))
            raise UntrustedListing(f"{self.what}: page {self.pages} lists only entries of page {earlier} again "
                                   "(its next links go round in a cycle)")
        for key in keys:
            if key in self.entries:
                kind, value = key
                where = f"on page {self.pages}" if self.entries[key] == self.pages else f"on pages {self.entries[key]} and {self.pages}"
                raise UntrustedListing(f"{self.what} lists the {kind} {value!r} twice ({where}): which entry is right "
                                       "cannot be known")
            self.entries[key] = self.pages


def entry_key(item: dict[str, Any]) -> tuple[str, str] | None:
    """What an entry is listed as: a file by its name, a dataSetFile by its id (as the walk reads them)."""
    if "name" in item:
        return "name", str(item["name"])
    if item.get("dataSetFileId"):
        return "dataSetFileId", str(item["dataSetFileId"])
    return None


def check_against_catalog(batch: BatchRef, listing: Listing) -> None:
    """What was listed against what the Catalog's metrics say the batch holds, where it says.

    Only a listing that holds less fails here: whether `outputFileCount` counts marker files or
    dataSetFiles is not documented, so a listing with more is left to the record count the
    parquet files must add up to after download (output/report.py)."""
    records, stated = batch.expected_records, stated_file_count(batch.catalog)
    if records and not listing.files + len(listing.refused):
        raise UntrustedListing(f"the listing of batch {batch.batch_id} holds no data file, but the Catalog counts "
                               f"{records} records in it")
    if stated is not None and listing.named < stated and not listing.refused:  # a refused dataSetFile hides its files
        raise UntrustedListing(f"the listing of batch {batch.batch_id} holds {listing.named} files, but the Catalog "
                               f"counts {stated} (metrics.outputFileCount)")


def listing_items(body: Any) -> list[dict[str, Any]]:
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
