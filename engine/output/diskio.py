"""Writes to the local disk: positional writes of chunks, and the one atomic write (temp + rename)
every small file of ours goes through (control files, batch files, the run report).

No space left (ENOSPC, or EDQUOT for a quota) is the run's DiskFull wherever it happens, and a
failed atomic write never leaves its temp file behind (an empty `*.tmp` beside the data would
trip readers such as pyarrow.dataset).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import DiskFull
from ..layout import write_temp

IOV_MAX = 512  # chunks per pwritev, well below the kernel's IOV_MAX (1024)
PIECES_HELD = 1 << 16  # bytes of a text given in pieces held before they are written (atomic_write)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def pwrite_all(fd: int, chunks: Sequence[bytes | memoryview], offset: int) -> int:
    """Write every chunk at `offset` onwards; returns the bytes written (all of them)."""
    start = offset
    for i in range(0, len(chunks), IOV_MAX):
        batch = chunks[i:i + IOV_MAX]
        total = sum(map(len, batch))
        written = os.pwritev(fd, batch, offset)
        if written < total:  # short write (rare): finish from a joined copy
            data = memoryview(b"".join(batch))
            while written < total:
                written += os.pwrite(fd, data[written:], offset + written)
        offset += total
    return offset - start


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def disk_full(exc: OSError, path: Path | str) -> DiskFull:
    """The run's DiskFull for an ENOSPC/EDQUOT met while writing `path`."""
    return DiskFull(f"{os.strerror(exc.errno or errno.ENOSPC)} writing {path}; "
                    "partial work is kept: free space and rerun to resume")


@contextmanager
def no_space_is_disk_full(path: Path | str) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT inside the block into DiskFull (other errors pass unchanged)."""
    try:
        yield
    except OSError as exc:
        if is_no_space(exc):
            raise disk_full(exc, path) from None
        raise


def atomic_write(path: Path, data: str | bytes | Iterable[str], *, durable: bool = True, sync_folder: bool = False) -> None:
    """Replace `path` with `data` whole or not at all: written to `<name>.tmp`, fsynced when
    `durable`, renamed over it (and the folder fsynced with `sync_folder`, so the new name survives
    a crash). On any failure the temp file is removed; no space raises DiskFull. A text given in
    pieces (the run report of thousands of datasets) is written as they come, never held whole."""
    tmp = write_temp(path)
    with no_space_is_disk_full(path):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                _write_from_start(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
        if sync_folder:
            fsync_folder(path.parent)


def _write_from_start(fd: int, data: str | bytes | Iterable[str]) -> None:
    if isinstance(data, str | bytes):
        pwrite_all(fd, [data.encode("utf-8") if isinstance(data, str) else data], 0)
        return
    offset, pending, held = 0, [], 0
    for piece in data:
        pending.append(raw := piece.encode("utf-8"))
        held += len(raw)
        if held >= PIECES_HELD:
            offset += pwrite_all(fd, pending, offset)
            pending, held = [], 0
    pwrite_all(fd, pending, offset)


def rewrite_in_place(path: Path, data: str) -> bool:
    """Overwrite an existing file's bytes without allocating: the new text, padded with spaces to
    the old length (JSON ignores trailing whitespace). For the run report when the disk is full:
    its start-of-run version reserved the room. False when it does not fit or cannot be written."""
    raw = data.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        room = os.fstat(fd).st_size
        if len(raw) > room:
            return False
        pwrite_all(fd, [raw + b" " * (room - len(raw))], 0)
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def make_folders(folder: Path) -> list[Path]:
    """`mkdir -p`: returns the folders this call created, outermost first (their entries in their
    parents are not durable until those parents are fsynced)."""
    try:
        os.mkdir(folder)
    except FileNotFoundError:
        created = make_folders(folder.parent)
        return [*created, *make_folders(folder)]  # [] when another thread made it meanwhile
    except FileExistsError:
        if not folder.is_dir():
            raise
        return []
    return [folder]


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # the write's own error is the one to report
        path.unlink(missing_ok=True)
