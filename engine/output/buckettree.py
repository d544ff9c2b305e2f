"""A bucket (or container) prefix as `verify` and status read it (the same questions `localfiles.LocalTree` answers).

`on_bucket(url, fn)` opens the bucket on an event loop and runs the blocking `fn(tree)` in a
worker thread; the tree lists the prefix once and reads objects through ranged GETs.
`inventory(tree)` says what an export holds (a folder or a prefix alike): for a status command.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from ..checks.integrity import footer_rows, read_every_page
from ..config import StoreURL
from ..config_store import store_from_env
from ..errors import ConfigError
from ..layout import MANIFEST, STATE_DIR, SUCCESS, UPLOADS
from .destination import ViewFile
from .objectstore import held_in_bucket, upload_owner
from .store import ObjectView, Store, Upload
from .stores import connect_store
from .verify import ExportTree

T = TypeVar("T")


def on_bucket(url: str, fn: Callable[[BucketTree], T]) -> T:
    try:
        parsed = StoreURL.parse(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    async def main() -> T:
        async with connect_store(parsed, store_from_env(os.environ)) as bucket:
            tree = BucketTree(bucket)
            await tree.load()
            return await anyio.to_thread.run_sync(fn, tree)

    return anyio.run(main)


class BucketTree:
    def __init__(self, bucket: Store):
        self.bucket = bucket
        self.objects: dict[str, int] = {}  # the export's objects (not the state folder): rel -> size
        self.in_flight: set[str] = set()  # files with an upload in progress or a staging object
        self.staged: dict[str, dict[str, int]] = {}  # file -> its staging objects (rel -> size)
        self.uploads: dict[str, list[Upload]] = {}  # file -> its uploads in progress

    def where(self) -> str:
        return str(self.bucket.url)

    async def load(self) -> None:
        async for rel, size in self.bucket.list(""):
            if rel.startswith(STATE_DIR + "/"):
                if owner := upload_owner(rel):
                    self.in_flight.add(owner)
                    self.staged.setdefault(owner, {})[rel] = size
            else:
                self.objects[rel] = size
        for upload in await self.bucket.multipart.in_progress(UPLOADS + "/"):
            if owner := upload_owner(upload.rel):
                self.in_flight.add(owner)
                self.uploads.setdefault(owner, []).append(upload)

    def batch_folders(self, manifest: str) -> list[str]:
        return sorted(rel.rpartition("/")[0] for rel in self.objects if rel.endswith("/" + manifest))

    def read_text(self, rel: str) -> str | None:
        return self.bucket.call(self.bucket.read_text, rel)

    def exists(self, rel: str) -> bool:
        return rel in self.objects

    def size(self, rel: str) -> int | None:
        return self.objects.get(rel)

    def sha256(self, rel: str) -> str:
        return ObjectView(self.bucket, rel, self.objects[rel]).digest("sha256").hex()

    def rows(self, rel: str, *, deep: bool) -> int:
        view = ObjectView(self.bucket, rel, self.objects[rel])
        rows = footer_rows(view.read_at, view.size, rel.rpartition("/")[2])
        if deep:
            read_every_page(io.BufferedReader(ViewFile(view.read_at, view.size), 8 << 20), rel)
        return rows

    def recorded(self, rel: str) -> bool:
        """A final object is only ever written verified, with its digest (objectstore.py)."""
        return rel in self.objects

    def held(self, rel: str, size: int | None) -> int:
        """Bytes of an unfinished upload of this file that a rerun would keep (staged, or its parts)."""
        if rel not in self.in_flight:
            return 0
        return self.bucket.call(held_in_bucket, self.bucket, size, self.staged.get(rel, {}), self.uploads.get(rel, []))

    def top_level_names(self) -> list[str]:
        """Objects directly under the prefix (the run reports)."""
        return sorted(rel for rel in self.objects if "/" not in rel)

    def incomplete(self, folder: str) -> list[str]:
        """Files of a batch folder ("" for all) still being uploaded: rerun the export to finish them."""
        base = folder + "/" if folder else ""
        return sorted(f for f in self.in_flight if f.startswith(base))


# -- what an export holds (for a status command) -------------------------------------------------


@dataclass
class BatchSummary:
    folder: str  # {dataset}/{batch}
    status: str | None  # as its manifest says
    success: bool  # _SUCCESS present
    files: int
    bytes: int
    records: int | None


@dataclass
class Inventory:
    where: str
    batches: list[BatchSummary] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)  # files being downloaded or uploaded


def inventory(tree: ExportTree) -> Inventory:
    """Every batch an export holds (from its manifests) and the files still in flight; reads no data."""
    found = Inventory(getattr(tree, "where", lambda: "")())
    for folder in tree.batch_folders(MANIFEST):
        try:
            manifest = json.loads(tree.read_text(f"{folder}/{MANIFEST}") or "")
            files = manifest.get("files") or []
        except (ValueError, AttributeError):
            manifest, files = {}, []
        found.batches.append(BatchSummary(folder, manifest.get("status"), tree.exists(f"{folder}/{SUCCESS}"), len(files),
                                          sum(f.get("size") or 0 for f in files), manifest.get("records_found")))
    found.in_flight = tree.incomplete("")
    return found
