"""One file being exported into object storage (any `store.Store`): a multipart upload (Azure:
staged blocks) fed through the local spool.

Bytes land in local parts (`spool.py`); each complete part is uploaded with its SHA-256 (the
store checks it), to a staging key under `{prefix}/.aep-export/uploads/`. The uploaded parts are
the progress: a fresh pod lists them and fetches only the rest. At commit the upload is completed
into the staging object; when the in-order SHA-256 could not be fed from local parts (parts
uploaded by an earlier pod, or dropped under the spool limit) the rest is read back from that
object. The checks run on it, and only then is it copied server-side to its final key, carrying
its digest and row count as metadata; the store's own SHA-256 of the copy must match ours.
A file that fits in one part skips all that: one PutObject after the checks, whose
x-amz-checksum-sha256 is the whole file's digest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from ..errors import IntegrityError, StoreError
from ..pieces import Download
from ..ranges import RangeSet
from ..validators import Validator
from .destination import Check, ViewFile
from .spool import Piece, PieceView, Spool
from .store import ObjectView, Part, Store, b64

log = structlog.get_logger("aep_export.output")

UPLOAD_GRACE = 10.0  # seconds an interrupted file waits for its parts already being uploaded
SHA256_META, ROWS_META = "aep-export-sha256", "aep-export-rows"


@dataclass
class Uplink:
    """What every file being uploaded shares."""

    bucket: Store  # an S3 bucket or an Azure container
    spool: Spool
    tg: TaskGroup  # runs the part uploads
    slots: anyio.Semaphore  # parts uploaded at once
    disk: anyio.CapacityLimiter


@dataclass
class Resumed:
    """What an earlier run left for this file in the bucket."""

    upload_id: str | None = None
    parts: dict[int, Part] = field(default_factory=dict)
    staged: bool = False  # the upload was completed into the staging object, not yet copied


class LocalParts:
    """The file's bytes on local disk until uploaded: one spool `Piece` per part, written from
    worker threads (the pieces dict is shared with the event loop under a lock)."""

    def __init__(self, spool: Spool, disk: anyio.CapacityLimiter, rel: str, size: int | None, part_size: int):
        self.spool, self.disk, self.rel, self.size, self.part_size = spool, disk, rel, size, part_size
        self.pieces: dict[int, Piece] = {}
        self._lock = threading.Lock()

    def write(self, offset: int, chunks: list[bytes]) -> dict[Piece, int]:
        """Worker thread: the chunks into their parts; the bytes each part took."""
        shares: dict[Piece, int] = {}
        for piece, at, part in self._split(offset, chunks):
            shares[piece] = shares.get(piece, 0) + piece.write(at, part)
        return shares

    def _split(self, offset: int, chunks: list[bytes]) -> Iterator[tuple[Piece, int, list[memoryview]]]:
        """The chunks cut at part boundaries (views, no copies)."""
        pos, start, batch, piece = offset, offset, [], self._piece_for(offset)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                if pos == piece.end:  # the next part starts here (a chunk may end right on the boundary)
                    piece = self._piece_for(pos)
                room = piece.end - pos
                if room <= 0:
                    raise IntegrityError(f"{self.rel}: bytes past the end of a {self.size}-byte file")
                take, view = view[:room], view[room:]
                batch.append(take)
                pos += len(take)
                if pos == piece.end:
                    yield piece, start, batch
                    batch, start = [], pos
        if batch:
            yield piece, start, batch

    def _piece_for(self, offset: int) -> Piece:
        index = offset // self.part_size
        with self._lock:
            piece = self.pieces.get(index)
            if piece is None:
                start = index * self.part_size
                end = start + self.part_size if self.size is None else min(start + self.part_size, self.size)
                piece = self.pieces[index] = self.spool.new_piece(index, start, end)
            return piece

    def read_into(self, start: int, end: int, hasher: Any) -> int:
        """Feed [start, end) to the hasher from local parts; stops at the first byte not held here."""
        pos = start
        while pos < end:
            piece = self.pieces.get(pos // self.part_size)
            stop = piece.read_into(pos, end, hasher) if piece is not None else pos
            if stop == pos:
                break
            pos = stop
        return pos

    def next_held_after(self, pos: int, end: int) -> int:
        """Where the next local part still on disk starts after pos (end if none does)."""
        return min([p.start for p in list(self.pieces.values()) if p.start > pos and p.fd >= 0] + [end])

    def learn_size(self, size: int) -> None:
        """The file's size once the server said it (a listing may not): fixes the last part's end."""
        self.size = size
        with self._lock:
            for piece in self.pieces.values():
                piece.end = min(piece.end, size)

    def forget(self, piece: Piece) -> None:
        with self._lock:
            if self.pieces.get(piece.index) is piece:
                del self.pieces[piece.index]

    async def drop(self, piece: Piece) -> None:
        """A part's local file removed and its room in the spool given back (even when cancelled)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(piece.drop, limiter=self.disk)
        self.spool.release(piece)
        self.forget(piece)

    async def drop_all(self) -> None:
        """Every local part, its upload in flight stopped first."""
        for piece in list(self.pieces.values()):
            if piece.scope is not None:
                piece.scope.cancel()
            self.spool.evictable.pop(piece, None)
            await self.drop(piece)


class PartUploads:
    """The file's multipart upload to its staging key: the parts in it (an earlier pod's too),
    created with the first part, completed into the staging object, or abandoned."""

    def __init__(self, link: Uplink, rel: str, staging: str, resumed: Resumed):
        self.link, self.rel, self.staging = link, rel, staging
        self.upload_id = resumed.upload_id
        self.parts: dict[int, Part] = dict(resumed.parts)
        self.staged = resumed.staged  # completed into the staging object, not yet copied
        self.failure: BaseException | None = None  # the first part that failed (raised at the file's next step)
        self._creating = anyio.Lock()

    @property
    def begun(self) -> bool:
        return self.upload_id is not None or bool(self.parts)

    async def send(self, piece: Piece) -> None:
        """One part, with its SHA-256 (the store checks it); slots bound the parts in flight."""
        async with self.link.slots:
            upload_id = await self._upload_id()
            digest = await anyio.to_thread.run_sync(piece.sha256, limiter=self.link.disk)
            body = ViewFile(piece.read_at, piece.length, piece.start)  # rewound on the client's retries
            part = await self.link.bucket.multipart.upload_part(self.staging, upload_id, piece.number, body, piece.length, digest,
                                                                offset=piece.start)
        self.parts[piece.number] = part

    async def _upload_id(self) -> str:
        async with self._creating:
            if self.upload_id is None:
                self.upload_id = await self.link.bucket.multipart.create(self.staging)
            return self.upload_id

    async def complete(self, size: int, part_size: int) -> None:
        count = max(1, -(-size // part_size))
        missing = [n for n in range(1, count + 1) if n not in self.parts]
        if missing or self.upload_id is None:
            raise StoreError(f"{self.rel}: parts {missing[:5]} were never uploaded")
        await self.link.bucket.multipart.complete(self.staging, self.upload_id, [self.parts[n] for n in range(1, count + 1)])
        self.upload_id, self.staged = None, True

    async def abandon(self) -> None:
        if self.upload_id is not None:
            await self.link.bucket.multipart.abort(self.staging, self.upload_id)
        if self.staged:
            await self.link.bucket.delete(self.staging)
        self.upload_id, self.staged, self.parts, self.failure = None, False, {}, None


class StoreTarget:
    """A `Target` (see destination.py) in a bucket: bytes in through `LocalParts`, out through
    `PartUploads`; this class decides when each part goes, and the commit."""

    rereads_held = False  # parts of an unfinished multipart upload cannot be read back
    validator: Validator | None = None  # not kept across pods: the parts an earlier pod uploaded are trusted as before

    def __init__(self, link: Uplink, rel: str, staging: str, size: int | None, part_size: int, resumed: Resumed):
        self.link, self.rel, self.staging = link, rel, staging
        self.piece_size = part_size
        self.local = LocalParts(link.spool, link.disk, rel, size, part_size)
        self.uploads = PartUploads(link, rel, staging, resumed)
        self.held = RangeSet(((n - 1) * part_size, (n - 1) * part_size + p.size) for n, p in self.uploads.parts.items())
        if self.uploads.staged and size is not None:
            self.held.add(0, size)
        self._download: Download | None = None

    @property
    def size(self) -> int | None:
        return self.local.size

    @property
    def pieces(self) -> dict[int, Piece]:
        return self.local.pieces

    # -- bytes in ---------------------------------------------------------------------------

    async def flush(self, offset: int, chunks: list[bytes], download: Download) -> None:
        if self.uploads.failure is not None:
            raise self.uploads.failure
        self._learn(download)
        n = sum(map(len, chunks))
        if not n:  # a stream that stopped right at its range's end
            return
        spool = self.link.spool
        await spool.reserve(n, self.link.disk)
        try:
            shares = await anyio.to_thread.run_sync(self._flush_sync, offset, chunks, download, limiter=self.link.disk)
        except BaseException:
            spool.unreserve(n)
            raise
        for piece, k in shares.items():
            piece.stored += k
        await self._advance()

    def _flush_sync(self, offset: int, chunks: list[bytes], download: Download) -> dict[Piece, int]:
        shares = self.local.write(offset, chunks)
        download.written(offset, chunks, self.read_into)
        return shares

    def read_into(self, start: int, end: int, hasher: Any) -> int:
        return self.local.read_into(start, end, hasher)

    def _learn(self, download: Download) -> None:
        self._download = download
        if self.local.size is None and download.size is not None:
            self.local.learn_size(download.size)

    # -- parts out --------------------------------------------------------------------------

    async def _advance(self) -> None:
        """Upload the parts just completed; let go of uploaded parts the file's hash has passed."""
        for piece in list(self.pieces.values()):
            if piece.complete and not piece.upload_started and not self._single_part():
                piece.upload_started = True
                self.link.spool.uploads_pending += 1
                self.link.tg.start_soon(self._upload, piece)
            elif piece.uploaded and self._hashed_past(piece):
                await self.local.drop(piece)

    def _single_part(self) -> bool:
        """One part in all: no multipart upload, one PutObject at commit."""
        return (self.size is not None and self.size <= self.piece_size and not self.uploads.begun
                and not any(p.upload_started for p in self.pieces.values()))

    def _hashed_past(self, piece: Piece) -> bool:
        return self._download is not None and self._download.hashed >= piece.end

    async def _upload(self, piece: Piece) -> None:
        spool = self.link.spool
        try:
            with anyio.CancelScope() as piece.scope:
                await self.uploads.send(piece)
                piece.uploaded = True
        except Exception as exc:  # noqa: BLE001 - kept and raised at the file's next flush or commit; the file fails at its next flush or at commit; parts uploaded stay
            self.uploads.failure = self.uploads.failure or exc
        finally:
            spool.uploads_pending -= 1
            spool.notify()
        if piece.uploaded:
            if self._hashed_past(piece):
                await self.local.drop(piece)
            else:  # keep it for the file's hash while the spool has room
                spool.evictable[piece] = self.local.forget

    async def _uploads_settled(self) -> None:
        """Wait until no part of this file is waiting for or in its upload."""
        while any(p.upload_started and not p.uploaded for p in self.pieces.values()) and self.uploads.failure is None:
            await self.link.spool.changed()

    async def checkpoint(self, download: Download, *, stopping: bool = False) -> None:
        """Uploaded parts are the progress; an interrupted file lets the parts in flight land first."""
        if stopping:
            with anyio.move_on_after(UPLOAD_GRACE):
                await self._uploads_settled()

    # -- the end ----------------------------------------------------------------------------

    async def commit(self, download: Download, check: Check) -> int | None:
        self._learn(download)
        size = download.size
        assert size is not None
        if self._single_part() and not self.uploads.staged:
            return await self._put_whole(download, check, size)
        await self._advance()
        await self._uploads_settled()
        if self.uploads.failure is not None:
            raise self.uploads.failure
        if not self.uploads.staged:
            await self.uploads.complete(size, self.piece_size)
        if download.hashed < size:  # bytes this pod never held, or dropped: read them back
            log.info("hash_read_back", file=self.rel, bytes=size - download.hashed)
            await anyio.to_thread.run_sync(download.hash_held_prefix, self._read_back, limiter=self.link.disk)
        view = ObjectView(self.link.bucket, self.staging, size)
        rows = await anyio.to_thread.run_sync(check, view, limiter=self.link.disk)
        sha = download.digest()
        copied = await self.link.bucket.copy(self.staging, self.rel, size, metadata(sha, rows))
        if copied is not None and copied != b64(bytes.fromhex(sha)):
            await self.link.bucket.delete(self.rel)
            raise IntegrityError(f"{self.rel}: the store's SHA-256 of the copy differs from the verified bytes")
        await self.link.bucket.delete(self.staging)
        self.uploads.staged = False
        await self.local.drop_all()
        return rows

    async def _put_whole(self, download: Download, check: Check, size: int) -> int | None:
        """A file of one part: checked on local disk, then one PutObject the store checks against
        the whole file's SHA-256."""
        piece = self.pieces.get(0) if size else None
        view = PieceView(piece, size)
        rows = await anyio.to_thread.run_sync(check, view, limiter=self.link.disk)
        sha = download.digest()
        body = ViewFile(piece.read_at, piece.length, piece.start) if piece is not None else b""
        await self.link.bucket.put(self.rel, body, size, bytes.fromhex(sha), metadata(sha, rows))
        await self.local.drop_all()
        return rows

    def _read_back(self, start: int, end: int, hasher: Any) -> int:
        """Worker thread: local parts where held, the staging object for the rest."""
        pos = start
        while pos < end:
            pos = self.read_into(pos, end, hasher)
            if pos >= end:
                break
            stop = self.local.next_held_after(pos, end)
            for chunk in ObjectView(self.link.bucket, self.staging, end).chunks(pos, stop):
                hasher.update(chunk)
            pos = stop
        return pos

    async def restart(self) -> None:
        """The server's file changed: nothing uploaded belongs to it any more."""
        await self._abandon()
        self.held, self.validator = RangeSet(), None

    async def discard(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._abandon()

    async def _abandon(self) -> None:
        await self.local.drop_all()
        await self.uploads.abandon()

    async def close(self) -> None:
        """Keep what is uploaded for a later run; stop what is not."""
        with anyio.CancelScope(shield=True):
            await self.local.drop_all()


def metadata(sha256_hex: str, rows: int | None) -> dict[str, str]:
    return {SHA256_META: sha256_hex, ROWS_META: "" if rows is None else str(rows)}
