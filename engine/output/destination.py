"""Where verified files go: the small interface the transfer code writes through.

The transfer code knows a file only as a `Target` (bytes at offsets, progress to persist, a view
for the checks, a commit that makes it visible); a `Destination` opens targets, says which files
an earlier run already verified, and records new ones. The local folder is one implementation
(`output/local.py`); object storage is another, without touching `engine/transfer/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import FileTask
from ..transfer.pieces import Download
from ..transfer.ranges import RangeSet


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


Check = Callable[[FileView], "int | None"]  # raises IntegrityError; returns the parquet row count


class Target(Protocol):
    """One file being filled. `held` is what an earlier run left (already sanity-checked)."""

    held: RangeSet
    piece_size: int

    async def flush(self, offset: int, chunks: list[bytes], download: Download) -> None:
        """Write the bytes at `offset`, tell the model (`download.written`), and persist what is
        held when that is due (about twice a second: a kill loses no more than that)."""

    async def checkpoint(self, download: Download) -> None:
        """Persist what is held now: before a second stream may write past the held prefix, and
        whenever the file stops (then durably: another machine may resume it)."""

    def read_into(self, start: int, end: int, hasher: Any) -> int:
        """Feed bytes [start, end) to the hasher (worker thread); returns where they ended."""

    async def restart(self) -> None:
        """Throw every byte away: the file starts over."""

    async def commit(self, download: Download, check: Check) -> int | None:
        """Run the checks on the complete bytes, then make the file visible under its final name."""

    async def discard(self) -> None:
        """Bad bytes: remove them and their progress (the next attempt starts from nothing)."""

    async def close(self) -> None:
        """Keep bytes and progress for a later attempt or run."""


class Destination(Protocol):
    async def existing(self, task: FileTask) -> Existing | None: ...

    async def open(self, task: FileTask) -> Target: ...

    def record(self, task: FileTask, size: int, sha256: str, rows: int | None) -> None: ...
