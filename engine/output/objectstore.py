"""Object storage as a destination (`out_dir = "s3://bucket/prefix"`, `"az://container/prefix"`),
resumable across pods, through the `store.Store` interface (S3 and Azure alike).

The layout under the prefix is the one on disk. Everything a rerun needs lives in the bucket:

- a final object carries its verified SHA-256 and row count as metadata (x-amz-meta-aep-export-*,
  Azure's aep_export_*): that is the journal, written in the same step that makes the object visible;
- `{prefix}/.aep-export/uploads/{path}/{size}-{part size}` is the multipart upload (Azure: the
  uncommitted blocks) of a file in flight, whose listed parts are its progress (and, between
  completion and the copy to the final key, the staging object).

A fresh pod lists both once per batch, keeps what is verified, continues the uploads it finds and
cleans up what no longer belongs to a file (another version's upload, a leftover staging object).
Batch files (manifest, checksum list, _SUCCESS, report) are single PutObjects, written in the
same order as on disk.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import structlog

from .. import sizing
from ..checks.integrity import footer_rows
from ..config import ExportSettings, StoreSettings, StoreURL
from ..errors import IntegrityError
from ..layout import SUCCESS, SUMS_NAMES, UPLOADS, batch_folder, parse_sums, safe_relative
from ..model import BatchRef, FileTask
from .destination import Existing
from .spool import Spool
from .store import ObjectView, Part, Store, Upload
from .stores import connect_store
from .upload import ROWS_META, SHA256_META, Resumed, StoreTarget, Uplink

log = structlog.get_logger("aep_export.output")

MAX_PARTS = 10_000
_UPLOAD_NAME = re.compile(r"(\d+|unknown)-(\d+)")


def part_size_for(size: int | None, configured: int) -> int:
    """The configured part size, raised (to whole MiB) for a file that would need over 10,000 parts."""
    if size is None or -(-size // configured) <= MAX_PARTS:
        return configured
    need = -(-size // MAX_PARTS)
    return -(-need // (1 << 20)) * (1 << 20)


def staging_key(rel: str, size: int | None, part_size: int) -> str:
    return f"{UPLOADS}/{rel}/{'unknown' if size is None else size}-{part_size}"


def upload_owner(key: str) -> str | None:
    """The file a staging key belongs to, or None if it is not one of ours."""
    if not key.startswith(UPLOADS + "/"):
        return None
    owner, _, name = key[len(UPLOADS) + 1:].rpartition("/")
    return owner if owner and _UPLOAD_NAME.fullmatch(name) else None


@dataclass
class BatchState:
    """What the bucket held for one batch when this run first looked."""

    objects: dict[str, int] = field(default_factory=dict)  # final rel -> size
    staged: dict[str, dict[str, int]] = field(default_factory=dict)  # final rel -> {staging rel: size}
    uploads: dict[str, list[Upload]] = field(default_factory=dict)  # final rel -> uploads in progress
    sums: dict[str, str] | None = None  # the batch's checksum list, read when first needed


class ObjectStoreDestination:
    def __init__(self, export: ExportSettings, store: StoreSettings, link: Uplink):
        self.export, self.store, self.link = export, store, link
        self.bucket = link.bucket
        self._batches: dict[tuple[str, str], BatchState] = {}
        self._loading: dict[tuple[str, str], anyio.Lock] = {}

    @classmethod
    @asynccontextmanager
    async def connect(cls, export: ExportSettings, store: StoreSettings,
                      disk: anyio.CapacityLimiter) -> AsyncIterator[ObjectStoreDestination]:
        assert isinstance(export.out_dir, StoreURL)
        async with connect_store(export.out_dir, store, connections=sizing.store_pool(export, store),
                                 attempts=export.max_attempts) as bucket:
            spool = Spool(store.spool_dir, store.spool_limit)
            try:
                async with anyio.create_task_group() as tg:
                    yield cls(export, store, Uplink(bucket, spool, tg, anyio.Semaphore(store.uploads), disk))
                    tg.cancel_scope.cancel()
            finally:
                log.info("spool_done", peak_bytes=spool.peak, limit=spool.limit)
                spool.close()

    # -- files ----------------------------------------------------------------------------------

    async def existing(self, task: FileTask) -> Existing | None:
        """A final object this or an earlier run verified (its metadata), else one that matches the
        batch's checksum list when read back; None means fetch it (the commit replaces it)."""
        rel = safe_relative(task.rel_path)
        state = await self._batch(task.batch)
        size = state.objects.get(rel)
        if size is None or (task.size is not None and size != task.size):
            return None
        meta = await self.bucket.metadata(rel)
        if meta is None:
            return None
        if meta.get(SHA256_META):
            rows = meta.get(ROWS_META) or ""
            found: Existing | None = Existing(size, meta[SHA256_META], int(rows) if rows.isdigit() else None)
        else:
            found = await self._check_unrecorded(task, rel, size, state)
        if found is not None:
            await self._clean(rel, state)
        return found

    async def _first_text(self, rels: Iterable[str]) -> str:
        """The first of these objects that exists, as text ("" when none does)."""
        for rel in rels:
            text = await self.bucket.read_text(rel)
            if text:
                return text
        return ""

    async def _check_unrecorded(self, task: FileTask, rel: str, size: int, state: BatchState) -> Existing | None:
        if state.sums is None:
            folder = batch_folder(task.batch.dataset_id, task.batch.batch_id, task.batch.layout)
            text = await self._first_text(f"{folder}/{name}" for name in SUMS_NAMES)
            state.sums = parse_sums(text)
        recorded = state.sums.get(task.rel_in_batch)
        if recorded is None:
            return None
        view = ObjectView(self.bucket, rel, size)
        try:
            sha, rows = await anyio.to_thread.run_sync(self._read_checks, view, task, limiter=self.link.disk)
        except IntegrityError as exc:
            log.warning("existing_file_invalid", file=task.rel_path, error=str(exc))
            return None
        if sha != recorded:
            log.warning("existing_file_invalid", file=task.rel_path, error="SHA-256 differs from the checksum list")
            return None
        return Existing(size, sha, rows)

    def _read_checks(self, view: ObjectView, task: FileTask) -> tuple[str, int | None]:
        sha = view.digest("sha256").hex()
        rows = footer_rows(view.read_at, view.size, task.name) if task.is_parquet and self.export.verify_parquet else None
        return sha, rows

    async def open(self, task: FileTask) -> StoreTarget:
        rel = safe_relative(task.rel_path)
        state = await self._batch(task.batch)
        part_size = part_size_for(task.size, self.store.part_size)
        staging = staging_key(rel, task.size, part_size)
        resumed = Resumed()
        for staged, size in state.staged.pop(rel, {}).items():
            if staged == staging and size == task.size:
                resumed.staged = True  # completed by an earlier run, never copied: check it, copy it
            else:
                await self.bucket.delete(staged)
        for upload in state.uploads.pop(rel, []):
            if upload.rel == staging and task.size is not None and not resumed.staged and resumed.upload_id is None:
                parts = await self.bucket.multipart.list_parts(upload.rel, upload.upload_id)
                if parts is not None:
                    resumed.upload_id = upload.upload_id
                    resumed.parts = _usable_parts(parts, task.size, part_size)
                    continue
            await self.bucket.multipart.abort(upload.rel, upload.upload_id)  # another version of the file, or a duplicate
        if resumed.parts or resumed.staged:
            log.info("upload_resumed", file=task.rel_path, parts=len(resumed.parts), staged=resumed.staged)
        return StoreTarget(self.link, rel, staging, task.size, part_size, resumed)

    def record(self, task: FileTask, size: int, sha256: str, rows: int | None) -> None:
        """Nothing to do: the commit wrote the record as the object's metadata."""

    async def _clean(self, rel: str, state: BatchState) -> None:
        """A verified file's leftovers from a crash (an upload, a staging object): not needed any more."""
        for upload in state.uploads.pop(rel, []):
            await self.bucket.multipart.abort(upload.rel, upload.upload_id)
        for staged in state.staged.pop(rel, {}):
            await self.bucket.delete(staged)

    async def _batch(self, batch: BatchRef) -> BatchState:
        key = batch.key
        lock = self._loading.setdefault(key, anyio.Lock())
        async with lock:
            if key not in self._batches:
                self._batches[key] = await self._load(batch)
            return self._batches[key]

    async def _load(self, batch: BatchRef) -> BatchState:
        folder = safe_relative(batch_folder(batch.dataset_id, batch.batch_id, batch.layout)) + "/"
        state = BatchState()
        async for rel, size in self.bucket.list(folder):
            state.objects[rel] = size
        async for rel, size in self.bucket.list(f"{UPLOADS}/{folder}"):
            if owner := upload_owner(rel):
                state.staged.setdefault(owner, {})[rel] = size
        for upload in await self.bucket.multipart.in_progress(f"{UPLOADS}/{folder}"):
            if owner := upload_owner(upload.rel):
                state.uploads.setdefault(owner, []).append(upload)
        return state

    # -- batch files (blocking: called from worker threads, like the report code) ---------------

    def write_text(self, rel: str, text: str, *, durable: bool = True) -> None:
        data = text.encode("utf-8")
        self.bucket.call(self.bucket.put, safe_relative(rel), data, len(data), hashlib.sha256(data).digest())

    def read_text(self, rel: str) -> str | None:
        return self.bucket.call(self.bucket.read_text, safe_relative(rel))

    def exists(self, rel: str) -> bool:
        return self.bucket.call(self.bucket.metadata, safe_relative(rel)) is not None

    def delete(self, rel: str) -> None:
        self.bucket.call(self.bucket.delete, safe_relative(rel))

    def complete_batches(self, dataset_folder: str) -> list[str]:
        """Names of the batch folders in a dataset's folder that hold a `_SUCCESS`."""
        async def listed() -> list[str]:
            folder = safe_relative(dataset_folder) + "/"
            keys = [rel[len(folder):] async for rel, _ in self.bucket.list(folder)]
            return sorted(k.split("/")[0] for k in keys if k.count("/") == 1 and k.endswith(f"/{SUCCESS}"))

        return self.bucket.call(listed)


async def held_in_bucket(bucket: Store, size: int | None, staged: dict[str, int], uploads: list[Upload]) -> int:
    """Bytes a rerun would keep of one file's unfinished upload (read only, for `check`): a staging
    object of the listed size, else the usable parts of an upload named for that size."""
    if size is None:
        return 0  # the run starts such a file over
    for rel, got in staged.items():
        sizes = _upload_sizes(rel)
        if sizes is not None and sizes[0] == size == got:
            return size
    for upload in uploads:
        sizes = _upload_sizes(upload.rel)
        if sizes is None or sizes[0] != size:
            continue
        parts = await bucket.multipart.list_parts(upload.rel, upload.upload_id)
        if parts:
            return sum(p.size for p in _usable_parts(parts, size, sizes[1]).values())
    return 0


def _upload_sizes(rel: str) -> tuple[int, int] | None:
    """(file size, part size) from a staging key's name; None when the size was unknown."""
    m = _UPLOAD_NAME.fullmatch(rel.rpartition("/")[2])
    return (int(m.group(1)), int(m.group(2))) if m and m.group(1).isdigit() else None


def _usable_parts(parts: list[Part], size: int, part_size: int) -> dict[int, Part]:
    """Parts of the expected length for their place in the file (anything else is uploaded again)."""
    count = max(1, -(-size // part_size))
    usable = {}
    for part in parts:
        if 1 <= part.number <= count:
            expected = part_size if part.number < count else size - (count - 1) * part_size
            if part.size == expected:
                usable[part.number] = part
    return usable
