"""The one small interface every source of files implements, and the Data Access one.

A source turns a `[[datasets]]` entry into what to export (Selection: the dataset and its
batches or runs), then each of those into its files: FileTasks carrying what the transfer checks
them against (size, digests, a URL signer), handed to a sink, and a Listing that says whether
the listing can be trusted. The coordinator (exporter.py, plan.py) talks to sources only through
this; nothing in transfer/ or output/ knows which source a file came from.

data-access   Catalog batches, listed through the Data Access API (catalog.py, dataaccess.py)
dlz           a dataset export run, written by Adobe into the Data Landing Zone (dlz.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import DatasetSettings
from ..model import BatchRef, Listing
from .dataaccess import DataAccessApi, FileSink
from .selection import Selection, Selector


@dataclass
class Resolved:
    """A batch (or run) ready to list: its reference, and what the source needs to list it."""

    batch: BatchRef
    detail: list[Any] = field(default_factory=list)  # Data Access: the dataSetFiles; the DLZ: its folder


@dataclass
class Preview:
    """What `check` says of an entry: what a run would export, and what it would create or start first."""

    selection: Selection | None  # None: nothing to export is known until the run has done `actions`
    actions: list[str] = field(default_factory=list)


class Source(Protocol):
    """Entries -> batches/runs -> files with their validators and expected sizes and counts."""

    name: str

    async def select(self, entry: DatasetSettings) -> Selection:
        """The dataset an entry names and the batches (runs) of it to export."""
        ...

    async def preview(self, entry: DatasetSettings) -> Preview:
        """As `select`, creating and starting nothing (check, --dry-run)."""
        ...

    async def resolve(self, dataset_id: str, key: str, obj: dict[str, Any], source: str = "dataset") -> Resolved:
        """One chosen batch (run) resolved to what its files are listed under."""
        ...

    async def list_files(self, resolved: Resolved, sink: FileSink) -> Listing:
        """Every file handed to `sink`; a listing that cannot be trusted says why (Listing.untrusted)."""
        ...


class DataAccessSource:
    """Catalog batches and their Data Access listings: the source of every export until issue #23."""

    name = "data-access"

    def __init__(self, selector: Selector, data_access: DataAccessApi):
        self.selector = selector
        self.data_access = data_access

    async def select(self, entry: DatasetSettings) -> Selection:
        return await self.selector.select(entry)

    async def preview(self, entry: DatasetSettings) -> Preview:
        return Preview(await self.selector.select(entry))

    async def resolve(self, dataset_id: str, key: str, obj: dict[str, Any], source: str = "dataset") -> Resolved:
        batch, dataset_files = await self.data_access.resolve_batch(dataset_id, key, obj, source)
        return Resolved(batch, dataset_files)

    async def list_files(self, resolved: Resolved, sink: FileSink) -> Listing:
        return await self.data_access.list_files(resolved.batch, resolved.detail, sink)


class Sources:
    """The run's sources by the name an entry gives in `via`."""

    def __init__(self, *sources: Source):
        self.by_name: dict[str, Source] = {s.name: s for s in sources}

    def of(self, entry: DatasetSettings | None) -> Source:
        """The entry's source (audiences and entries without `via`: Data Access)."""
        return self.by_name[entry.via if entry is not None else DataAccessSource.name]
