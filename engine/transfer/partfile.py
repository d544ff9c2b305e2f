"""The file being filled on disk: `<final>.part`, its coalescing write buffer and running hash,
positional writes for parallel ranges, and how an earlier run's .part is resumed.

Invariant resume relies on: the .part's length is a contiguous, hashable prefix of the file,
except while a `.part.split` marker says how long that prefix is (parallel ranges beyond it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import aiofiles
import anyio

from ..errors import DiskFull
from ..checks.integrity import PARQUET_MAGIC, hash_from_disk
from ..model import FileTask

_IOV_MAX = 512  # stay well below the kernel's IOV_MAX (1024) per pwritev


class PartFile:
    """The .part file being filled: offset, running hash, and the coalescing write buffer."""

    def __init__(self, fd: int, offset: int, hasher: hashlib._Hash | None, buffer_limit: int, limiter: anyio.CapacityLimiter):
        self.fd = fd
        self.offset = offset  # bytes accepted (buffered or on disk)
        self.hasher = hasher
        self.unhashed_from: int | None = None  # bytes from here on were written by parallel ranges
        self.stop: int | None = None  # where this stream ends early: an idle connection took the rest
        self._limit = buffer_limit
        self._limiter = limiter
        self._chunks: list[bytes] = []
        self._pending = 0
        self._disk_offset = offset

    def add(self, chunk: bytes) -> bool:
        """Accept a chunk; True when the buffer should be flushed."""
        self._chunks.append(chunk)
        self._pending += len(chunk)
        self.offset += len(chunk)
        return self._pending >= self._limit or len(self._chunks) >= _IOV_MAX

    async def flush(self) -> None:
        if self._chunks:
            # Not cancellable: the thread must finish with the fd before anyone closes it.
            await anyio.to_thread.run_sync(self.flush_sync, limiter=self._limiter)

    def flush_sync(self) -> None:
        """Hash and write what is buffered (in a worker thread; the loop is not touching it)."""
        if not self._chunks:
            return
        chunks, at = self._chunks, self._disk_offset
        self._chunks, self._pending = [], 0
        self._disk_offset = self.offset
        _hash_and_write(self.fd, self.hasher, chunks, at)

    def close(self) -> None:
        """Close the fd once; later calls do nothing (its number may belong to another file by then)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    async def restart(self) -> None:
        """Throw away everything: the server's file is not the one we started."""
        self._chunks, self._pending = [], 0
        await anyio.to_thread.run_sync(os.ftruncate, self.fd, 0, limiter=self._limiter)
        self.offset = self._disk_offset = 0
        self.hasher = hashlib.sha256()
        self.unhashed_from = None


class RangeSink(PartFile):
    """One of several ranges of a file fetched in parallel: positional writes, no running hash
    (the finish step hashes these bytes from disk, in order)."""

    def __init__(self, fd: int, start: int, stop: int, buffer_limit: int, limiter: anyio.CapacityLimiter):
        super().__init__(fd, start, None, buffer_limit, limiter)
        self.stop = stop  # exclusive end of this range


def _hash_and_write(fd: int, hasher: hashlib._Hash | None, chunks: list[bytes], offset: int) -> None:
    if hasher is not None:
        for chunk in chunks:
            hasher.update(chunk)  # releases the GIL for large buffers
    total = sum(map(len, chunks))
    written = os.pwritev(fd, chunks, offset)
    if written < total:  # short write (rare): finish from a joined copy
        data = memoryview(b"".join(chunks))
        while written < total:
            written += os.pwrite(fd, data[written:], offset + written)


class AiofilesPartFile(PartFile):
    """The alternative write strategy: one aiofiles call per received chunk, hashed on the loop.

    Kept for the write-strategy benchmark (bench/write_strategy.py); 'coalesced' is the default.
    """

    def __init__(self, *args, path: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = path
        self._fh = None

    def add(self, chunk: bytes) -> bool:
        self._chunks.append(chunk)
        self.offset += len(chunk)
        return True

    async def flush(self) -> None:
        if self._fh is None:
            self._fh = await aiofiles.open(self._path, "r+b")
        await self._fh.seek(self._disk_offset)
        for chunk in self._chunks:
            self.hasher.update(chunk)
            await self._fh.write(chunk)
        self._chunks = []
        self._disk_offset = self.offset
        await self._fh.flush()

    async def aclose(self) -> None:
        if self._fh is not None:
            await self._fh.close()
            self._fh = None


def ensure_space(final: Path, task: FileTask) -> None:
    """Refuse to start a file that cannot fit, instead of failing half-way."""
    if task.size is None:
        return
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    folder = final.parent
    free = shutil.disk_usage(folder).free
    if free < task.size - have:
        raise DiskFull(f"{task.rel_path} needs {task.size - have} more bytes but {free} are free in {folder}; "
                       "free space and rerun to resume")


def split_marker(part_path: Path) -> Path:
    """Present while parallel ranges fill a .part: holds the length of its contiguous prefix."""
    return part_path.with_name(part_path.name + ".split")


def resume_prefix(fd: int, task: FileTask, part_path: Path) -> tuple[int, hashlib._Hash]:
    """Bytes already in the .part and their hash (the hash state is never saved, so re-hash)."""
    hasher = hashlib.sha256()
    length = os.fstat(fd).st_size
    marker = split_marker(part_path)
    if marker.exists():  # a parallel phase was interrupted: only its prefix is contiguous
        try:
            length = min(length, int(marker.read_text() or 0))
        except ValueError:
            length = 0
        os.ftruncate(fd, length)
        marker.unlink()
    if length and task.size is not None and length > task.size:
        length = 0
    if length and task.is_parquet and os.pread(fd, 4, 0) != PARQUET_MAGIC:
        length = 0  # not the start of a parquet file: do not build on it
    if length == 0:
        os.ftruncate(fd, 0)
        return 0, hasher
    offset = hash_from_disk(fd, hasher, 0, length)
    os.ftruncate(fd, offset)
    return offset, hasher
