"""Downloading one file: keep what an earlier run verified, else fill it through the download
model (resume, parallel ranges, tail sharing), check it, and commit it under its final name.

Only a fully verified file is committed, so a final name never holds partial or wrong bytes.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

import anyio
import structlog

from ..checks.integrity import DigestClaim, check_digests, footer_rows, parquet_rows
from ..config import ExportSettings
from ..errors import DiskFull, FileChanged, IntegrityError, RunFatal, TransferError
from ..model import Counters, FileResult, FileStatus, FileTask
from ..output.diskio import is_no_space
from ..pieces import Download
from ..platform.client import PlatformClient
from ..retry import INTEGRITY_REFETCHES, MAX_RESTARTS, Budget, RetryPolicy, failure
from .fetcher import Fetcher, FileJob
from .scheduler import Scheduler

if TYPE_CHECKING:
    from ..output.destination import Destination, FileView

log = structlog.get_logger("aep_export.transfer")



class Downloader:
    """Fetches and verifies files; one instance serves the whole pool."""

    def __init__(self, client: PlatformClient, export: ExportSettings, destination: Destination,
                 policy: RetryPolicy, counters: Counters, scheduler: Scheduler[FileJob]):
        self.export = export
        self.destination = destination
        self.counters = counters
        self.scheduler = scheduler
        self.fetcher = Fetcher(client, export, policy, counters, scheduler)

    async def fetch(self, task: FileTask) -> FileResult:
        started = time.monotonic()
        self.scheduler.files_in_flight += 1
        try:
            result = await self._reuse(task) or await self._download_verified(task)
        except RunFatal:
            raise  # fatal for the whole run, not for this file
        except Exception as exc:  # noqa: BLE001 - one file's failure is recorded; the run goes on
            if is_no_space(exc):
                raise DiskFull(f"no space left in {self.export.out_dir} while writing {task.rel_path}; "
                               "partial files are kept: free space and rerun to resume") from None
            result = FileResult(task, FileStatus.FAILED, error=failure(exc))
            log.warning("file_failed", file=task.rel_path, error=result.error)
        finally:
            self.scheduler.files_in_flight -= 1
        result.seconds = time.monotonic() - started
        if result.ok:
            self.counters.files_done += 1
            self.counters.bytes_done += result.size
            if result.status is FileStatus.REUSED:
                self.counters.files_reused += 1
                self.counters.bytes_reused += result.size
        else:
            self.counters.files_failed += 1
            self.counters.bytes_failed += task.size or 0
        return result

    async def _reuse(self, task: FileTask) -> FileResult | None:
        found = await self.destination.existing(task)
        if found is None:
            return None
        return FileResult(task, FileStatus.REUSED, size=found.size, sha256=found.sha256, rows=found.rows)

    async def _download_verified(self, task: FileTask) -> FileResult:
        """Download; bytes that fail verification (corrupted in transit) are fetched afresh."""
        for attempt in range(INTEGRITY_REFETCHES + 1):
            try:
                return await self._download(task)
            except IntegrityError as exc:
                if attempt == INTEGRITY_REFETCHES:
                    raise
                self.counters.restarts += 1
                log.warning("refetching_after_integrity_failure", file=task.rel_path, error=str(exc))
        raise AssertionError("unreachable")

    async def _download(self, task: FileTask) -> FileResult:
        target = await self.destination.open(task)
        download = Download(task.size, target.held, align=target.piece_size)
        if target.rereads_held and not (target.validator is not None and target.validator.strong):
            download.distrust_held()  # confirmed by windows of bytes asked again (engine/validators.py)
        job = FileJob(task, download, target, Budget(self.export.max_file_attempts))
        job.digests += [DigestClaim(algorithm, digest, "the listing's digest") for algorithm, digest in task.listed_digests]
        try:
            if target.held.total:
                log.info("resuming", file=task.rel_path, held=target.held.total, ranges=len(target.held))
                self.counters.bytes_resumed += target.held.total  # progress credits them: the ETA is for the rest
                await anyio.to_thread.run_sync(download.hash_held_prefix, target.read_into, limiter=self.scheduler.disk)
            await self._fill(job)
            rows = await target.commit(download, partial(self._check, job))
        except IntegrityError:
            await target.discard()  # bad bytes are not worth resuming from
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):  # keep every byte held: the next attempt or run resumes
                await target.checkpoint(download, stopping=True)
                await target.close()
            if held := download.done.total:  # what an interrupted run's summary says it kept
                self.counters.files_unfinished += 1
                self.counters.bytes_unfinished += held
            raise
        assert download.size is not None
        return FileResult(task, FileStatus.DOWNLOADED, size=download.size, sha256=download.digest(), rows=rows,
                          bytes_fetched=job.fetched, requests=job.requests)

    async def _fill(self, job: FileJob) -> None:
        """Streams until every byte is held; a file that changed on the server starts over."""
        for restart in range(MAX_RESTARTS + 1):
            try:
                await self.fetcher.confirm_tail(job)
                try:
                    async with anyio.create_task_group() as tg:  # helper streams join it
                        job.tg = tg
                        self.scheduler.jobs.add(job)
                        await self.fetcher.run_stream(job, job.download.next_claim())  # the first, in this task
                finally:  # before any await: a job without a live task group must not be lent to
                    self.scheduler.jobs.discard(job)
                    self._return_handed(job)
            except BaseException as exc:
                error = _first_error(exc)
                if not isinstance(error, FileChanged) or restart == MAX_RESTARTS:
                    if error is exc:
                        raise
                    raise error from None
                log.warning("restarting_file", file=job.task.rel_path, reason=str(error))
                self.counters.restarts += 1
                await job.target.restart()
                job.download.restart(job.task.size)
                continue
            if job.download.complete:
                return
            raise TransferError(f"{job.task.rel_path}: streams ended with bytes still missing")

    def _return_handed(self, job: FileJob) -> None:
        """Connections given to helper streams that were cancelled before they ever ran."""
        for _ in range(job.handed):
            self.scheduler.connections.release()
        job.handed = 0

    def _check(self, job: FileJob, view: FileView) -> int | None:
        """Everything that must hold before the commit (in a worker thread); raises IntegrityError."""
        download, task = job.download, job.task
        if download.hashed != download.size or view.size != download.size:
            raise IntegrityError(f"{task.name}: {view.size} bytes held, {download.hashed} hashed, {download.size} expected")
        if task.size is not None and view.size != task.size:
            raise IntegrityError(f"{task.name}: {view.size} bytes, the listing said {task.size}")
        if download.unconfirmed:  # held bytes of an earlier run that no response was compared with
            start, end = download.unconfirmed[0]
            raise IntegrityError(f"{task.name}: held bytes {start}-{end - 1} were never confirmed against the server's")
        check_digests(download.digest(), job.digests, view.digest)
        if not (task.is_parquet and self.export.verify_parquet):
            return None
        rows = footer_rows(view.read_at, view.size, task.name, pages=view.path is not None)  # a read per page: local only
        if self.export.deep_verify and view.path is not None:
            parquet_rows(view.path, deep=True)
        return rows


def _first_error(exc: BaseException) -> BaseException:
    """The error that ended a file's streams: the first that is not a cancellation it caused."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = exc.exceptions
        else:
            leaves.append(exc)
    cancelled = anyio.get_cancelled_exc_class()
    return next((e for e in leaves if not isinstance(e, cancelled)), leaves[0])
