"""Opening the destination out_dir names: the one place that knows every kind (a folder, a bucket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ..config import ExportSettings, StoreSettings, StoreURL
from .destination import Destination
from .diskio import is_no_space
from .journal import Journal
from .local import LocalDestination


@asynccontextmanager
async def open_destination(export: ExportSettings, store: StoreSettings, disk: anyio.CapacityLimiter,
                           shard: str | None = None) -> AsyncIterator[Destination]:
    """The destination out_dir names, ready (a bucket is checked before anything is attempted).
    A shard keeps its own journal in a folder; in a bucket each object's metadata is its entry."""
    if isinstance(export.out_dir, StoreURL):
        # deliberate import here (start-up time, issue #20): the bucket's modules only for s3://
        from .objectstore import ObjectStoreDestination

        async with ObjectStoreDestination.connect(export, store, disk) as bucket:
            yield bucket
        return
    export.out_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(export.out_dir, shard)
    journal.load()
    destination = LocalDestination(export, journal, disk)
    try:
        yield destination
    finally:
        try:
            destination.close()  # the group commit's last answers, before the journal closes
            journal.close()
        except OSError as exc:
            # Its last fsync found no space (NFS reports it there, after the report is written):
            # the run's outcome stands, the journal only saves re-hashing (README, Resume).
            if not is_no_space(exc):
                raise
