"""The one model of a download that discovery, the pool, resume, verification and the report share."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# Gives the URL to request a file at now (a credential in its query refreshed before it expires).
UrlSigner = Callable[[str], Awaitable[str]]


@dataclass(frozen=True, slots=True)  # slots: one per batch for the whole run (memory flat in files)
class BatchRef:
    """A batch to export: the id its files are listed under, and what the Catalog says of it."""

    dataset_id: str
    batch_id: str
    catalog: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    expected_records: int | None = None
    source: str = "dataset"  # or "audience:<export job id>"
    layout: str = field(default="plain", compare=False)  # export.layout: where its folder is (layout.batch_folder)

    @property
    def key(self) -> tuple[str, str]:
        return self.dataset_id, self.batch_id


@dataclass(frozen=True)
class FileTask:
    """One file of a batch: where to get it, what size to expect, and where it goes on disk."""

    batch: BatchRef
    dataset_file_id: str
    name: str
    url: str
    size: int | None
    rel_path: str  # relative to out_dir, already checked to stay inside it
    # Digests the listing states for the whole file, (hashlib name, raw digest): checked at commit.
    listed_digests: tuple[tuple[str, bytes], ...] = field(default=(), compare=False)
    signer: UrlSigner | None = field(default=None, compare=False, hash=False)

    async def current_url(self) -> str:
        """The URL to request now: `url` as listed, or signed afresh by the source."""
        return await self.signer(self.url) if self.signer is not None else self.url

    @property
    def rel_in_batch(self) -> str:
        """Path relative to the batch folder (what SHA256SUMS and the manifest list)."""
        return f"{self.dataset_file_id}/{self.name}"

    @property
    def is_parquet(self) -> bool:
        return self.name.endswith(".parquet")


class FileStatus(str, Enum):  # noqa: UP042 - StrEnum would change str() and format() of a status (reports, logs)
    DOWNLOADED = "downloaded"
    REUSED = "reused"  # verified by an earlier run, not fetched again
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class FileResult:
    task: FileTask
    status: FileStatus
    size: int = 0
    sha256: str | None = None
    rows: int | None = None
    bytes_fetched: int = 0
    requests: int = 0
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in (FileStatus.DOWNLOADED, FileStatus.REUSED)


@dataclass
class Counters:
    """Run-wide live counters (read by the progress display; only ever added to)."""

    files_total: int = 0  # discovered so far
    bytes_total: int = 0  # known sizes of the files discovered so far
    bytes_fetched: int = 0
    bytes_done: int = 0  # bytes of files finished (downloaded or reused)
    files_done: int = 0
    files_failed: int = 0
    files_reused: int = 0  # of files_done: verified by an earlier run, not fetched again
    bytes_reused: int = 0  # of bytes_done
    bytes_failed: int = 0  # listed sizes of the files that failed
    requests: int = 0
    restarts: int = 0  # files started over (changed on the server, corrupted in transit)
    split_files: int = 0  # files that got a second stream at least once (connections were idle)
    tail_splits: int = 0  # streams added to running files: a free connection took half of a range
    ignored_ranges: int = 0  # 200 answers to a ranged request: skipped to our offset
    bytes_resumed: int = 0  # bytes earlier runs left that files resumed from (done without fetching)
    files_unfinished: int = 0  # files stopped with bytes held for a later attempt or run
    bytes_unfinished: int = 0  # the bytes they hold (kept: the rerun resumes from them)


@dataclass
class Timer:
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(slots=True)
class Listing:
    """What one batch's listing produced besides downloadable files."""

    skipped: list[str] = field(default_factory=list)  # marker files such as _SUCCESS
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, why) unsafe names
    files: int = 0
    bytes: int = 0  # sum of the listed lengths (where given)
    untrusted: str | None = None  # why the listing cannot be trusted: the batch fails, without _SUCCESS

    @property
    def named(self) -> int:
        """Every file the listing named: handed on, refused, or skipped as a marker."""
        return self.files + len(self.refused) + len(self.skipped)


def catalog_created(obj: Any) -> int | None:
    """A Catalog object's `created` (ms since the epoch), the one reader of it; None when missing or not a number."""
    value = obj.get("created") if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
