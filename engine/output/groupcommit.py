"""Group commit: names that change hands together share their syncs.

Files of a local export become visible by a rename, and the promises after a crash or a power loss
(README, "Resume", "A full disk") need each file's bytes durable before its name, its journal line
written before its name, and every name durable before a `_SUCCESS` vouches for it. Paid one file
at a time that is an fsync per file, an fsync per batch list and one per folder, each waiting for
the filesystem's own journal commit. Here one thread takes every request that arrived while it was
busy (files finishing together, lists of batches finishing together) and, for the whole group:

1. fsyncs the new contents that are not durable yet (batch lists: parallel threads, so the
   filesystem commits them together; data files arrive already fsynced by their own thread hop);
2. appends the group's journal lines in one write, then renames (under the destination's lock);
3. answers the files (an event loop's future): renamed, their journal lines written;
4. fsyncs each folder that gained a name once (and the parent of each folder created since the
   last group: a new batch folder's own entry), and the journal once, in parallel threads;
5. answers the lists (a thread's blocking wait), which a batch's `_SUCCESS` waits for: since one
   thread commits every group in turn, that `_SUCCESS` comes after its files' folder syncs.

A request fails alone (its temporary files removed); no space is the run's DiskFull.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .diskio import disk_full, fsync_folder, is_no_space
from .journal import Journal, Verified

SYNC_THREADS = 8  # parallel fsyncs of one group's new contents


@dataclass
class Rename:
    """`src` becomes `dst`. `entry` is journaled first; `sync_src`: fsync `src` first (a list
    written without a sync); `remove_first`: a file that must be gone before (a control file)."""

    src: Path
    dst: Path
    entry: Verified | None = None
    sync_src: bool = False
    remove_first: Path | None = None


@dataclass
class Request:
    renames: list[Rename]
    after: Callable[[], None] | None = None  # in the committer's thread, once renamed
    durable: bool = False  # answered only once the new names are durable (else: once renamed)
    done: Future[None] = field(default_factory=Future)


class GroupCommit:
    """One committer thread per local destination; started at the first request."""

    def __init__(self, journal: Journal, names: threading.Lock, durable: bool):
        self._journal = journal
        self._names = names  # the destination's: held while names change hands
        self._durable = durable
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._unsynced: BaseException | None = None  # a folder sync that failed: no later list may vouch for it
        self._new_entries: dict[Path, None] = {}  # parents of folders created since the last group's syncs
        self.groups = 0  # groups committed (tests and benchmarks read it)

    def submit(self, renames: list[Rename], after: Callable[[], None] | None = None, *,
               durable: bool = False) -> Future[None]:
        request = Request(renames, after, durable)
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aep-group-commit", daemon=True)
                self._thread.start()
        self._queue.put(request)
        return request.done

    def created(self, folders: list[Path]) -> None:
        """New folders (made by the caller before any name in them is committed): their entries
        in their parents become durable with the next group's folder syncs, before any list that
        group answers (so a `_SUCCESS` never outlives the folder it is in)."""
        if self._durable and folders:
            with self._start:
                self._new_entries.update(dict.fromkeys(f.parent for f in folders))

    def commit(self, renames: list[Rename]) -> None:
        """Blocking (from a worker thread): returns once every rename is durable, and so is every
        name a group committed before (a batch's lists: its files' names come first)."""
        self.submit(renames, durable=True).result()

    def close(self) -> None:
        with self._start:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        if self._pool is not None:
            self._pool.shutdown()

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while True:  # everything that arrived while the last group was being committed
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # a close: after this group
                    closing = True
                    break
                group.append(more)
            self._commit(group)
            self.groups += 1

    def _commit(self, group: list[Request]) -> None:
        """A file's request is answered once renamed: its folder's sync is only needed before its
        batch's `_SUCCESS`, whose lists come in a later request, answered after this group's syncs
        (one thread, in order). A sync that failed fails every later request that waits for one."""
        failed: dict[int, BaseException] = {}
        self._sync_sources(group, failed)
        live = [r for r in group if id(r) not in failed]
        folders: dict[Path, None] = {}
        try:
            with self._names:
                self._journal.record_many([rn.entry for r in live for rn in r.renames if rn.entry is not None])
                for request in live:
                    self._rename(request, failed, folders)
        except OSError as exc:  # the journal: every request of the group shares it
            shared = disk_full(exc, self._journal.path) if is_no_space(exc) else exc
            for request in live:
                failed.setdefault(id(request), shared)
        for request in (r for r in group if not r.durable):
            self._answer(request, failed.get(id(request)))
        with self._start:
            folders.update(self._new_entries)
            self._new_entries = {}
        if self._durable and folders:
            self._sync_folders(list(folders))
        for request in (r for r in group if r.durable):
            self._answer(request, failed.get(id(request)) or self._unsynced)

    def _sync_folders(self, folders: list[Path]) -> None:
        """In parallel: the filesystem commits them together (and the journal's lines with them)."""
        for folder, error in zip(folders, self._map(_sync_folder, folders), strict=True):
            if error is not None and self._unsynced is None:
                self._unsynced = disk_full(error, folder) if is_no_space(error) else error
        try:
            self._sync_journal()
        except OSError as exc:
            self._unsynced = self._unsynced or exc

    def _sync_journal(self) -> None:
        """The journal only saves re-hashing (README, Resume): a sync that finds no space (NFS may
        say so only there) leaves every commit as it is, as at the journal's last sync."""
        try:
            self._journal.sync()
        except OSError as exc:
            if not is_no_space(exc):
                raise

    def _sync_sources(self, group: list[Request], failed: dict[int, BaseException]) -> None:
        """fsync every new content of the group, in parallel threads (one commit of the filesystem)."""
        todo = [(r, rn.src) for r in group for rn in r.renames if rn.sync_src and self._durable]
        if not todo:
            return
        results = self._map(_sync_path, [path for _, path in todo])
        for (request, path), error in zip(todo, results, strict=True):
            if error is not None and id(request) not in failed:
                failed[id(request)] = disk_full(error, path) if is_no_space(error) else error

    def _map(self, sync: Callable[[Path], OSError | None], paths: list[Path]) -> list[OSError | None]:
        if len(paths) <= 1:
            return [sync(p) for p in paths]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="aep-sync")
        return list(self._pool.map(sync, paths))

    def _rename(self, request: Request, failed: dict[int, BaseException], folders: dict[Path, None]) -> None:
        try:
            for rn in request.renames:
                if rn.remove_first is not None:
                    rn.remove_first.unlink(missing_ok=True)
                os.replace(rn.src, rn.dst)
                folders[rn.dst.parent] = None
        except OSError as exc:
            failed[id(request)] = exc

    def _answer(self, request: Request, error: BaseException | None) -> None:
        if error is not None:
            for rn in request.renames:
                if rn.sync_src:  # a temporary file of ours: never left beside the data
                    with contextlib.suppress(OSError):
                        rn.src.unlink(missing_ok=True)
        try:
            if request.after is not None:
                request.after()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter, never lost in this thread
            error = error or exc
        if error is None:
            request.done.set_result(None)
        else:
            request.done.set_exception(error)


def _sync_folder(folder: Path) -> OSError | None:
    try:
        fsync_folder(folder)
    except OSError as exc:
        return exc
    return None


def _sync_path(path: Path) -> OSError | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc
    return None
