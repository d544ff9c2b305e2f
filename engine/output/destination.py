"""Where verified files go: the small interface the transfer code writes through.

The transfer code knows a file only as a `Target` (bytes at offsets, progress to persist, a view
for the checks, a commit that makes it visible); a `Destination` opens targets, says which files
an earlier run already verified, and records new ones; it also holds the batch files (`Files`).
The local folder is one implementation (`output/local.py`); object storage is another
(`output/objectstore.py`), without touching `engine/transfer/`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import FileTask
from ..pieces import Download
from ..ranges import RangeSet
from ..validators import Validator


@dataclass(frozen=True)
class Existing:
    """A file an earlier run verified and the destination still holds unchanged."""

    size: int
    sha256: str
    rows: int | None


class FileView(Protocol):
    """Read access to a file's complete bytes, for the checks before it is committed."""

    size: int
    path: Any  # a local path when there is one (the deep parquet check needs it), else None

    def read_at(self, offset: int, n: int) -> bytes: ...

    def digest(self, algorithm: str) -> bytes: ...


class ViewFile(io.RawIOBase):
    """Bytes [start, start + size) of a `read_at(offset, n)` as a seekable read-only file: pyarrow's
    input over an object in a bucket, or a part's request body the client can rewind to retry."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int, start: int = 0):
        super().__init__()
        self._read_at, self._size, self._start, self._pos = read_at, size, start, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        n = left if n is None or n < 0 else min(n, left)
        data = self._read_at(self._start + self._pos, n) if n > 0 else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


Check = Callable[[FileView], "int | None"]  # raises IntegrityError; returns the parquet row count


class Target(Protocol):
    """One file being filled. `held` is what an earlier run left (already sanity-checked)."""

    held: RangeSet
    piece_size: int
    rereads_held: bool  # `read_into` can read what an earlier run left (to compare it with the server's)
    validator: Validator | None  # the version of the file the held bytes belong to (ETag, Last-Modified)

    async def flush(self, offset: int, chunks: list[bytes], download: Download) -> None:
        """Write the bytes at `offset`, tell the model (`download.written`), and persist what is
        held when that is due (about twice a second: a kill loses no more than that)."""

    async def checkpoint(self, download: Download, *, stopping: bool = False) -> None:
        """Persist what is held now: before a second stream may write past the held prefix, and
        when the file stops (`stopping`: durably, another machine may resume it)."""

    def read_into(self, start: int, end: int, hasher: Any) -> int:
        """Feed bytes [start, end) to the hasher (worker thread); returns where they ended."""

    async def restart(self) -> None:
        """Throw every byte away, and the validator they came with: the file starts over."""

    async def commit(self, download: Download, check: Check) -> int | None:
        """Run the checks on the complete bytes, then make the file visible under its final name."""

    async def discard(self) -> None:
        """Bad bytes: remove them and their progress (the next attempt starts from nothing)."""

    async def close(self) -> None:
        """Keep bytes and progress for a later attempt or run."""


class Files(Protocol):
    """The batch files (manifest, checksum list, _SUCCESS, report) by path relative to out_dir.
    Blocking calls, made from worker threads like the report code; a write is whole or invisible."""

    def write_text(self, rel: str, text: str, *, durable: bool = True) -> None: ...

    def read_text(self, rel: str) -> str | None: ...

    def exists(self, rel: str) -> bool: ...

    def delete(self, rel: str) -> None: ...

    def complete_batches(self, dataset_folder: str) -> list[str]: ...


class Destination(Files, Protocol):
    async def existing(self, task: FileTask) -> Existing | None: ...

    async def open(self, task: FileTask) -> Target: ...

    def record(self, task: FileTask, size: int, sha256: str, rows: int | None) -> None: ...
