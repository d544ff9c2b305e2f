"""The local folder as a destination: a `.part` filled in place, with its control file
(output/control.py), both in the hidden folder beside the final name (engine/layout.py), renamed
to its final name once verified. A `.part` an earlier version left beside the final name is moved
there first and resumed.

With `export.fsync`, the .part is fdatasync'ed every few seconds and whenever a file stops, and
the control file says which ranges that covered (what a node crash cannot take back).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

import aiofiles
import anyio
import structlog

from ..checks.integrity import file_digest, hash_from_disk, parquet_rows
from ..config import ExportSettings
from ..errors import FileWontFit, IntegrityError
from ..layout import control_path, legacy_part, part_path, split_marker, temp_folder, write_temp
from ..model import FileTask
from ..pieces import Download
from ..ranges import RangeSet
from ..units import human_bytes
from ..validators import Validator
from .control import held_ranges, write_control
from .destination import Check, Existing
from .diskio import no_space_is_disk_full, pwrite_all
from .diskthreads import DiskThreads
from .groupcommit import GroupCommit, Rename
from .journal import Journal, Verified
from .localfiles import FOLDERS_KEPT, LocalFiles
from .paths import contained

log = structlog.get_logger("aep_export.output")

CONTROL_INTERVAL = 0.5  # seconds between control writes of one file (plus one at every close)
SYNC_INTERVAL = 5.0  # seconds between fdatasyncs of one .part (plus one at every close)
PIECE = 1 << 20  # splits between streams land on multiples of this
WHOLE_IN_COMMIT = 256 << 10  # a fresh file up to this size that arrives in one flush is written by its commit's hop


class LocalDestination(LocalFiles):
    def __init__(self, export: ExportSettings, journal: Journal, disk: anyio.CapacityLimiter):
        assert isinstance(export.out_dir, Path)  # output/opener.py opens a bucket otherwise
        super().__init__(export.out_dir)
        self.export = export
        self.out_dir = export.out_dir
        self.journal = journal
        self.disk = disk
        self._listed: set[int] = set()  # hashes of the rel paths this run was given (a collision only keeps a .part where it is)
        self._in_flight: dict[Path, int] = {}  # folder -> its files open now (their hidden folder exists)
        # folders this run made lately (nothing of an earlier run is in them); a cache, at most
        # FOLDERS_KEPT: a folder forgotten is only checked on disk again (memory flat in batches, #20)
        self._made: set[Path] = set()
        # Held while a name beside the data changes hands: a commit (journal, then rename) and the
        # move of an earlier version's `.part`, which must never take a file just committed there.
        self._names = threading.Lock()
        self.group = GroupCommit(journal, self._names, durable=export.fsync)
        self.threads = DiskThreads(int(disk.total_tokens))  # the per-file hops

    def created(self, folders: list[Path]) -> None:
        """A new folder's entry in its parent is durable before a `_SUCCESS` may vouch for what is
        in it (the group commit syncs the parent once, with the next group's folders)."""
        if len(self._made) >= FOLDERS_KEPT:
            self._made.clear()
        self._made.update(folders)
        self.group.created(folders)

    def close(self) -> None:
        """Every commit asked for is answered (the run's end)."""
        self.group.close()
        self.threads.close()

    def write_texts(self, texts: list[tuple[str, str]], *, durable: bool = True) -> None:
        """Several small files whole or not at all, sharing their syncs with everything committed at
        the same time (a batch's lists): written to `<name>.tmp`, then fsynced in parallel, renamed
        and their folders fsynced by the group commit. Returns once all of them are durable."""
        if not durable:
            for rel, text in texts:
                self.write_text(rel, text, durable=False)
            return
        renames = []
        try:
            for rel, text in texts:
                path = self.path(rel)
                self.make_folder(path.parent)
                tmp = write_temp(path)
                renames.append(Rename(tmp, path, sync_src=True))
                with no_space_is_disk_full(path):
                    tmp.write_bytes(text.encode("utf-8"))
        except BaseException:
            for rn in renames:
                rn.src.unlink(missing_ok=True)
            raise
        with no_space_is_disk_full(renames[-1].dst):
            self.group.commit(renames)

    async def existing(self, task: FileTask) -> Existing | None:
        """A file verified by an earlier run is kept; without a journal entry it is re-checked."""
        self._listed.add(hash(task.rel_path))
        final = contained(self.out_dir, task.rel_path)
        if final.parent in self._made and self.journal.entry(task.rel_path) is None:
            return None  # a folder of this run: a file there was committed by it, journal line first
        if not final.exists():
            return None
        if (entry := self.journal.lookup(task.rel_path, final)) and task.size in (None, entry.size):
            return Existing(entry.size, entry.sha256, entry.rows)
        try:
            found = await anyio.to_thread.run_sync(self._verify_existing, task, final, limiter=self.disk)
        except IntegrityError as exc:
            log.warning("existing_file_invalid", file=task.rel_path, error=str(exc))
            return None  # fetch it again; the commit replaces it only once verified
        self.record(task, found.size, found.sha256, found.rows)
        return found

    def _verify_existing(self, task: FileTask, final: Path) -> Existing:
        """Keep a file from an earlier run only if it still has the digest that run verified."""
        size = final.stat().st_size
        if task.size is not None and size != task.size:
            raise IntegrityError(f"size {size} on disk, {task.size} listed")
        recorded = self.journal.recorded_sha256(task.rel_path)  # the journals, else the batch's checksum list
        if recorded is None:
            raise IntegrityError("no digest recorded by an earlier run to check it against")
        sha = file_digest(final).hex()
        if sha != recorded:
            raise IntegrityError("SHA-256 differs from the one recorded when it was verified")
        rows = parquet_rows(final) if task.is_parquet and self.export.verify_parquet else None
        return Existing(size, sha, rows)

    async def open(self, task: FileTask) -> LocalTarget:
        final = contained(self.out_dir, task.rel_path)
        fd, held, validator, has_control = await self.threads.run(self._open_sync, task, final)
        target = LocalTarget(final, fd, held, self.export, self.disk, task.rel_path, self.group,
                             partial(self._leave, final.parent), self.threads, has_control)
        target.validator = validator
        return target

    def _enter(self, folder: Path) -> None:
        """A file of `folder` opens: its hidden folder must exist until the last one there closes."""
        self.make_folder(folder)
        with self._names:
            if not self._in_flight.get(folder):  # hidden: its own entry need not be durable
                temp_folder(folder).mkdir(exist_ok=True)
            self._in_flight[folder] = self._in_flight.get(folder, 0) + 1

    def _leave(self, folder: Path) -> None:
        """The last file of `folder` in flight closed: its hidden folder goes, unless a .part it
        keeps for a later run is in it (nothing is left beside the data of a finished run)."""
        with self._names:
            self._in_flight[folder] -= 1
            if self._in_flight[folder]:
                return
            del self._in_flight[folder]
            with contextlib.suppress(OSError):  # not empty: progress kept for the rerun
                temp_folder(folder).rmdir()

    def _open_sync(self, task: FileTask, final: Path) -> tuple[int, RangeSet, Validator | None, bool]:
        """Create the folders, open the .part, read what it holds, check free space for the rest;
        and whether it has a control file."""
        self._enter(final.parent)
        try:
            return self._open_part(task, final)
        except BaseException:
            self._leave(final.parent)
            raise

    def _open_part(self, task: FileTask, final: Path) -> tuple[int, RangeSet, Validator | None, bool]:
        part = part_path(final)
        if final.parent not in self._made:  # a folder this run made holds nothing an earlier version left
            self._adopt_legacy_part(task, final)
        try:  # most files start fresh: one syscall tells, and there is nothing to read
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            held, validator = RangeSet(), None
            control_path(final).unlink(missing_ok=True)  # a stale one would describe another .part
        except FileExistsError:
            fd = os.open(part, os.O_RDWR | os.O_NOFOLLOW)
            held = None
        created = held is not None
        try:
            if held is None:
                held, validator = held_ranges(fd, final, task)
            _ensure_space(final, task, held.total)
            has_control = not created and control_path(final).exists()
        except BaseException:
            os.close(fd)
            if created:  # an empty .part of ours: nothing to resume from
                part.unlink(missing_ok=True)
            raise
        return fd, held, validator, has_control

    def _adopt_legacy_part(self, task: FileTask, final: Path) -> None:
        """Move a `.part` (and its control file or split marker) that a version before this layout
        left beside the final name into its place now, so that it resumes. A name there that is a
        listed file of this run or a file an earlier run verified (`x.parquet.part` beside
        `x.parquet`) is that file, never taken for a `.part`. One lstat when there is none."""
        old_part, old_control, old_split = legacy_part(final)
        if not os.path.lexists(old_part) or os.path.lexists(part_path(final)):
            return
        with self._names:
            beside = [p for p in (old_control, old_split) if os.path.lexists(p)]
            if not all(self._legacy(task, p) for p in (old_part, *beside)):
                return  # a name there is a file of the export: no .part of an earlier version
            for old, new in ((old_control, control_path(final)), (old_split, split_marker(final))):
                if old in beside:  # the control file first: a .part must never arrive without it
                    os.replace(old, new)
            os.replace(old_part, part_path(final))
        log.info("legacy_part_moved", file=task.rel_path, to=part_path(final).name)

    def _legacy(self, task: FileTask, path: Path) -> bool:
        """A temporary file of an earlier version, not a file of the export that happens to be named so."""
        rel = f"{task.rel_path.rpartition('/')[0]}/{path.name}"
        return (os.path.isfile(path) and not os.path.islink(path) and hash(rel) not in self._listed
                and self.journal.recorded_sha256(rel) is None)

    def record(self, task: FileTask, size: int, sha256: str, rows: int | None) -> None:
        final = contained(self.out_dir, task.rel_path)
        self._record_at(task, size, sha256, rows, final.stat().st_mtime_ns)

    def _record_at(self, task: FileTask, size: int, sha256: str, rows: int | None, mtime_ns: int) -> None:
        self.journal.record(Verified(task.rel_path, size, sha256, rows, mtime_ns))


class LocalTarget:
    """A .part filled by positional writes, one thread hop per flush (write + hash together)."""

    piece_size = PIECE
    rereads_held = True  # held bytes can be compared with the server's (engine/validators.py)
    validator: Validator | None = None  # of the version the held bytes belong to, kept in the control file

    def __init__(self, final: Path, fd: int, held: RangeSet, export: ExportSettings, disk: anyio.CapacityLimiter,
                 rel_path: str, group: GroupCommit, leave: Callable[[], None], threads: DiskThreads,
                 has_control: bool):
        self.final = final
        self._rel_path = rel_path  # its journal key
        self._group = group  # the destination's: the rename, journal line and folder sync are shared
        self._leave: Callable[[], None] | None = leave  # called once, when this target is done with its folder
        self.fd = fd
        self.held = held
        self._durable = export.fsync
        self._disk = disk
        self._threads = threads
        self._saved_at = self._synced_at = time.monotonic()
        self._synced: list[list[int]] = held.as_list() if held.total else []  # as of the last fdatasync
        self._has_control = has_control
        self._whole: list[bytes] | None = None  # the whole file, when one flush wrote it: checked from memory
        self._unwritten: list[bytes] | None = None  # the whole file, held for the commit's hop (_whole_in_commit)
        self._save_lock = threading.Lock()
        self._aio: Any = None  # the aiofiles handle, for write_strategy = "aiofiles"
        self._aio_lock = anyio.Lock()
        self._use_aiofiles = export.write_strategy == "aiofiles"

    async def flush(self, offset: int, chunks: list[bytes], download: Download) -> None:
        if self._use_aiofiles:
            await self._flush_aiofiles(offset, chunks)
            await anyio.to_thread.run_sync(self._after_write, offset, chunks, download, limiter=self._disk)
            return
        if self._whole_in_commit(offset, chunks, download):
            download.written(offset, chunks, self.read_into)  # hashed from memory: a small file costs less than a hop
            self._whole = self._unwritten = chunks
            return
        # Not cancellable: the thread must be done with the fd before anyone closes it.
        await self._threads.run(self._flush_sync, offset, chunks, download)

    def _whole_in_commit(self, offset: int, chunks: list[bytes], download: Download) -> bool:
        """A small fresh file came whole in one response: its bytes are written in the commit's
        thread hop (write, checks from memory, fsync, rename: one hop), or by whatever stops the
        file first (a checkpoint); a kill -9 in between loses at most these bytes."""
        return (offset == 0 and download.hashed == 0 and not self._has_control and not self.held.total
                and download.size is not None and sum(map(len, chunks)) == download.size <= WHOLE_IN_COMMIT)

    def _write_unwritten(self) -> None:
        """The bytes a flush left for the commit's hop, before anything reads or vouches for the .part."""
        if self._unwritten is not None:
            chunks, self._unwritten = self._unwritten, None
            pwrite_all(self.fd, chunks, 0)

    def _flush_sync(self, offset: int, chunks: list[bytes], download: Download) -> None:
        n = pwrite_all(self.fd, chunks, offset)
        self._whole = chunks if offset == 0 and n == download.size else None
        self._after_write(offset, chunks, download)

    def _after_write(self, offset: int, chunks: list[bytes], download: Download) -> None:
        """Extend the hash, and persist progress when it is due (in the same thread hop)."""
        download.written(offset, chunks, self.read_into)
        if self._has_control and time.monotonic() - self._saved_at >= CONTROL_INTERVAL:
            self._save_sync(download, force=False)

    async def _flush_aiofiles(self, offset: int, chunks: list[bytes]) -> None:
        """The alternative write strategy: one aiofiles call per chunk (bench/write_strategy.py).
        The streams of a file share one handle: its seek and writes must not interleave."""
        async with self._aio_lock:
            if self._aio is None:
                self._aio = await aiofiles.open(part_path(self.final), "r+b")
            await self._aio.seek(offset)
            for chunk in chunks:
                await self._aio.write(chunk)
            await self._aio.flush()

    async def checkpoint(self, download: Download, *, stopping: bool = False) -> None:
        """Persist progress now (durably when the file stops: another machine may resume it). A
        .part one stream appends to in order needs no control file (see control.py), so flushes
        keep one only once a checkpoint has created it: before a second stream may write past the
        prefix, and whenever a file stops."""
        await anyio.to_thread.run_sync(self._save_sync, download, True, stopping, limiter=self._disk)

    def _save_sync(self, download: Download, force: bool, durable_now: bool = False) -> None:
        with self._save_lock:  # the later snapshot is always the one written last
            if self.fd < 0 or (not force and time.monotonic() - self._saved_at < CONTROL_INTERVAL):
                return
            self._write_unwritten()  # the control file must not claim bytes the .part lacks
            done = download.snapshot()
            synced_now = self._durable and (durable_now or time.monotonic() - self._synced_at >= SYNC_INTERVAL)
            if synced_now:
                os.fdatasync(self.fd)
                self._synced, self._synced_at = done, time.monotonic()
            # Durable when new (no write past the prefix may reach the disk before it does) and
            # after every fdatasync (the synced list it carries is what another boot trusts).
            durable = self._durable and (synced_now or not self._has_control)
            write_control(self.final, download.size, done, self._synced, durable=durable, validator=self.validator)
            self._saved_at, self._has_control = time.monotonic(), True

    def read_into(self, start: int, end: int, hasher: Any) -> int:
        self._write_unwritten()
        return hash_from_disk(self.fd, hasher, start, end)

    async def restart(self) -> None:
        await anyio.to_thread.run_sync(self._restart_sync, limiter=self._disk)

    def _restart_sync(self) -> None:
        with self._save_lock:
            os.ftruncate(self.fd, 0)
            self._synced, self._whole, self._unwritten = [], None, None
            self.validator = None  # the next response's, once it comes
            write_control(self.final, None, [], [])
        self.held = RangeSet()

    async def commit(self, download: Download, check: Check) -> int | None:
        await self._close_aiofiles()
        rows, renamed = await self._threads.run(self._commit_sync, download, check)
        with anyio.CancelScope(shield=True):  # the rename is under way: it is the file's outcome
            await asyncio.wrap_future(renamed)
        return rows

    def _commit_sync(self, download: Download, check: Check) -> tuple[int | None, Future[None]]:
        """The checks and this file's fsync (in parallel with the other files' threads), then the
        rest handed to the group commit: journal line, then the rename (which keeps the mtime), then
        one fsync of the folder for every file renamed into it at the same time. A kill before the
        rename leaves a .part the rerun commits again; a journal line is never written before the
        bytes it vouches for are durable."""
        self._write_unwritten()
        view = _LocalView(self.fd, part_path(self.final), self._whole)
        self._whole = None
        rows = check(view)
        if self._durable:
            os.fsync(self.fd)
        entry = Verified(self._rel_path, view.size, download.digest(), rows, view.mtime_ns)
        self._close_fd()
        # The control file goes first: a kill between the two leaves a whole .part, which a rerun
        # takes as a prefix and commits; the other order would leave a control file behind.
        rename = Rename(part_path(self.final), self.final, entry, remove_first=control_path(self.final))
        return rows, self._group.submit([rename], after=self._done)

    async def discard(self) -> None:
        await self._close_aiofiles()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._discard_sync, limiter=self._disk)

    def _discard_sync(self) -> None:
        with self._save_lock:
            self._close_fd()
        part_path(self.final).unlink(missing_ok=True)
        control_path(self.final).unlink(missing_ok=True)
        self._done()

    async def close(self) -> None:
        await self._close_aiofiles()
        with self._save_lock:
            self._close_fd()
        self._done()

    def _done(self) -> None:
        leave, self._leave = self._leave, None
        if leave is not None:
            leave()

    async def _close_aiofiles(self) -> None:
        if self._aio is not None:
            aio, self._aio = self._aio, None
            await aio.close()

    def _close_fd(self) -> None:
        """Close once; later calls do nothing (the number may belong to another file by then)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class _LocalView:
    """The .part as the checks read it: from disk, or from the bytes its one write just put there
    (a small file: the checks make no syscall and no thread waits for the GIL after each)."""

    def __init__(self, fd: int, path: Path, whole: list[bytes] | None = None):
        self._fd = fd
        self.path = path
        st = os.fstat(fd)  # after the last write: its mtime is the one the rename keeps
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        self._data = b"".join(whole) if whole is not None else None
        if self._data is not None and len(self._data) != self.size:
            self._data = None  # not what the disk holds: read the disk

    def read_at(self, offset: int, n: int) -> bytes:
        if self._data is not None:
            return self._data[offset:offset + n]
        return os.pread(self._fd, n, offset)

    def digest(self, algorithm: str) -> bytes:
        return file_digest(self.path, algorithm)


def _ensure_space(final: Path, task: FileTask, have: int) -> None:
    """Refuse to start a file that cannot fit, instead of failing half-way. It fails alone: a
    listing may say anything (a petabyte), and the files that do fit are still exported. A disk
    that fills up while files are written is the run's DiskFull (transfer/download.py)."""
    if task.size is None:
        return
    free = shutil.disk_usage(final.parent).free
    if free < task.size - have:
        raise FileWontFit(f"cannot fit on the disk: listed at {task.size} bytes ({human_bytes(task.size)}), "
                          f"{task.size - have} still to write, {free} free ({human_bytes(free)})")
