"""Local disk for the parts of files in flight to object storage, within a byte budget.

A part (a `Piece`) is one file under a fresh temporary folder, filled by positional writes, with
its own SHA-256 fed while its bytes arrive in order (the store checks every part against it). It
leaves the disk once uploaded and passed by the whole file's in-order hash. When the budget is
reached, uploaded parts still waiting for that hash are dropped first (the file's hash is then
finished from the bucket at commit); then writers wait for uploads to free space. Parts being
filled are never dropped, so the budget holds unless the streams' own parts exceed it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from ..checks.integrity import hash_from_disk
from ..ranges import RangeSet
from .diskio import pwrite_all

log = structlog.get_logger("aep_export.output")



class Piece:
    """Bytes [start, end) of one file on local disk: one multipart part."""

    def __init__(self, path: Path, index: int, start: int, end: int):
        self.path, self.index, self.start, self.end = path, index, start, end
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.have = RangeSet()
        self.hasher: Any = hashlib.sha256()
        self.hashed = start  # the part's own hash covers [start, hashed)
        self.stored = 0  # bytes on disk, counted in the spool's budget
        self.upload_started = False
        self.uploaded = False
        self.scope: anyio.CancelScope | None = None  # the upload in progress
        self.lock = threading.Lock()  # the fd is closed only when no thread uses it

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def complete(self) -> bool:
        return self.have.covers(self.start, self.end)

    def write(self, offset: int, chunks: list[memoryview]) -> int:
        """Write at a file offset inside this piece (worker thread); returns the bytes written."""
        with self.lock:
            n = pwrite_all(self.fd, chunks, offset - self.start)
            if offset == self.hashed and self.hasher is not None:
                for chunk in chunks:
                    self.hasher.update(chunk)
                self.hashed += n
            elif offset < self.hashed:
                self.hasher = None  # bytes written twice: hash the part from disk before uploading
            self.have.add(offset, offset + n)
        return n

    def sha256(self) -> bytes:
        """The part's SHA-256: from memory when its bytes came in order, else read back (worker thread)."""
        with self.lock:
            if self.hasher is not None and self.hashed == self.end:
                return bytes(self.hasher.digest())
            h = hashlib.sha256()
            hash_from_disk(self.fd, h, 0, self.length)
            return h.digest()

    def read_into(self, start: int, end: int, hasher: Any) -> int:
        """Feed file bytes [start, end) held here to the hasher; returns where they stopped."""
        with self.lock:
            if self.fd < 0:
                return start
            stop = min(end, self.have.end_of_run(start))
            if stop <= start:
                return start
            return self.start + hash_from_disk(self.fd, hasher, start - self.start, stop - self.start)

    def read_at(self, offset: int, n: int) -> bytes:
        with self.lock:  # a dropped piece reads as nothing (a cancelled upload may still ask)
            return os.pread(self.fd, n, offset - self.start) if self.fd >= 0 else b""

    def drop(self) -> None:
        """Close and delete the file (worker thread); later calls do nothing."""
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
                self.path.unlink(missing_ok=True)


class PieceView:
    """A one-part file's bytes on local disk, for the checks before its PutObject."""

    path = None

    def __init__(self, piece: Piece | None, size: int):
        self._piece, self.size = piece, size

    def read_at(self, offset: int, n: int) -> bytes:
        return self._piece.read_at(offset, n) if self._piece is not None else b""

    def digest(self, algorithm: str) -> bytes:
        h = hashlib.new(algorithm)
        if self._piece is not None:
            self._piece.read_into(0, self.size, h)
        return h.digest()


class Spool:
    """The folder and the byte budget shared by every file being uploaded."""

    def __init__(self, parent: Path | None, limit: int):
        self.dir = Path(tempfile.mkdtemp(prefix="aep-export-spool-", dir=parent))
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.uploads_pending = 0  # complete parts waiting for or being uploaded: they will free space
        self.evictable: dict[Piece, Callable[[Piece], None]] = {}  # uploaded parts kept for a file's hash
        self._changed = anyio.Event()
        self._names = itertools.count()  # pieces are created in worker threads
        self._warned = False

    def new_piece(self, index: int, start: int, end: int) -> Piece:
        return Piece(self.dir / f"{next(self._names)}.part", index, start, end)

    async def reserve(self, n: int, disk: anyio.CapacityLimiter) -> None:
        """Wait until n more bytes fit (dropping kept parts first); never wait for nothing."""
        while self.used + n > self.limit:
            if self.evictable:
                piece, on_drop = next(iter(self.evictable.items()))
                await anyio.to_thread.run_sync(piece.drop, limiter=disk)
                self.release(piece)
                on_drop(piece)
                continue
            if not self.uploads_pending:
                if not self._warned:
                    self._warned = True
                    log.warning("spool_over_limit", limit=self.limit, used=self.used,
                                note="the parts being filled exceed store.spool_limit; raise it or lower concurrency")
                break
            await self._changed.wait()
        self.used += n
        self.peak = max(self.peak, self.used)

    def unreserve(self, n: int) -> None:
        self.used -= n
        self.notify()

    def release(self, piece: Piece) -> None:
        """A piece left the disk (after `drop`; event loop)."""
        self.evictable.pop(piece, None)
        self.used -= piece.stored
        piece.stored = 0
        self.notify()

    async def changed(self) -> None:
        """Until the next upload ends or space is freed."""
        await self._changed.wait()

    def notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
