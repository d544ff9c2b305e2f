"""The coordinator: config -> discovery producers -> bounded worker pool -> disk -> report.

Discovery of many datasets runs concurrently and feeds a bounded stream, so downloads start while
listings are still paging. A fixed number of workers drain the stream (every such number is the
Scheduler's: engine/transfer/scheduler.py); each batch is finalized as soon as its listing is
complete and its last file is in.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .config import AudienceSettings, DatasetSettings, Settings
from .early import take_early_signal
from .errors import DiskFull, Failure, PlatformUnreachable, RunFatal, kind_of
from .layout import report_name
from .masking import register_secret
from .model import BatchRef, Counters, FileResult, FileStatus, FileTask
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_SIGNAL
from .output.opener import open_destination
from .output.report import BatchOutcome, DatasetOutcome, RunOutcome, finalize_batch, report_path, summary_event, write_report
from .output.runlock import hold_destination
from .platform.auth import TokenProvider
from .platform.client import PlatformClient, make_session
from .platform.discovery import Discovery
from .platform.listing import DatasetNames
from .platform.selection import Selector
from .progress import show_progress
from .retry import RetryPolicy, describe, failure
from .shard import Shard, entry_key, share_of
from .transfer.download import Downloader
from .transfer.fetcher import FileJob
from .transfer.scheduler import Scheduler

log = structlog.get_logger("aep_export")



@dataclass
class Exporter:
    settings: Settings
    counters: Counters = field(default_factory=Counters)
    run: RunOutcome = field(default_factory=RunOutcome)
    handle_signals: bool = True
    live_progress: bool = False  # a live line on a terminal; periodic log events otherwise
    progress_interval: float = 10.0
    shard: Shard | None = None  # `run --shard I/N`: export only this shard's entries

    def __post_init__(self) -> None:
        self.out_dir = self.settings.export.out_dir
        self._batches: dict[tuple[str, str], BatchOutcome] = {}
        self._fatal: BaseException | None = None
        self._disk_full: DiskFull | None = None  # the first no-space error, fatal or met while concluding
        self._interrupted: signal.Signals | None = None
        self._scope: anyio.CancelScope | None = None
        register_secret(self.settings.auth.client_secret.get_secret_value())
        register_secret(self.settings.auth.access_token.get_secret_value())
        self._take_share()

    def _take_share(self) -> None:
        """Sharding, applied here only: the entries this shard exports (all when unsharded)."""
        self.share = share_of(self.settings.datasets, self.settings.audiences, self.shard)
        self.run.shard = str(self.shard) if self.shard else None
        self.run.entries = [entry_key(e) for e in (*self.share.datasets, *self.share.audiences)]
        if self.shard:
            log.info("shard", shard=self.run.shard, entries=len(self.run.entries),
                     of=len(self.settings.datasets) + len(self.settings.audiences))
            log.debug("shard_entries", shard=self.run.shard, mine=self.run.entries)

    async def execute(self) -> RunOutcome:
        """Run the whole export; always writes report.json, even when interrupted. A destination
        that cannot be opened (a missing bucket, refused credentials) raises before anything is
        attempted, and so does one another run holds (DestinationBusy: exit 5)."""
        ex = self.settings.export
        self.policy = RetryPolicy.for_export(ex)
        self.scheduler: Scheduler[FileJob] = Scheduler(ex)
        with hold_destination(ex.out_dir, self.run.shard, self.run.started_at):
            async with open_destination(ex, self.settings.store, self.scheduler.disk, self.run.shard) as self.destination:
                try:
                    with anyio.CancelScope() as self._scope:
                        async with anyio.create_task_group() as tg:
                            if self.handle_signals:  # first: a signal during start-up stops the run like any other
                                await tg.start(self._watch_signals, self._scope)
                            await self._export()
                            tg.cancel_scope.cancel()  # done: stop the signal watcher
                finally:
                    with anyio.CancelScope(shield=True):  # in a thread: the batch files may go to a bucket
                        await anyio.to_thread.run_sync(self._conclude)
        return self.run

    async def _export(self) -> None:
        try:
            await anyio.to_thread.run_sync(write_report, self.destination, self.run)  # "running" until the run concludes
            async with make_session(self.settings) as session:
                tokens = TokenProvider(self.settings.auth, session, self.policy)
                self.client = PlatformClient(self.settings, session, tokens, self.policy)
                self.discovery = Discovery(self.client, self.settings.export.created_client, self.settings.export.max_listing_pages)
                self.selector = Selector(self.discovery, self.settings.datasets)
                self.names = DatasetNames(self.discovery)
                self.downloader = Downloader(self.client, self.settings.export, self.destination, self.policy, self.counters,
                                             self.scheduler)
                await tokens.token()  # bad credentials: fail before anything is attempted
                await self._pool()
        except RunFatal as exc:
            self._abort(exc)

    async def _pool(self) -> None:
        send, receive = anyio.create_memory_object_stream[FileTask](max_buffer_size=self.scheduler.queue_size)
        limiter = self.scheduler.discovery
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(show_progress, self.counters, live=self.live_progress, interval=self.progress_interval))
            async with send:
                outcomes = [DatasetOutcome(ds.label) for ds in self.share.datasets]
                self.run.datasets.extend(outcomes)  # in config order, before any audience's
                tg.start_soon(self._produce_datasets, outcomes, send.clone(), limiter, tg)
                for aud in self.share.audiences:
                    tg.start_soon(self._produce_audience, aud, send.clone(), limiter)
            def queue_idle() -> bool:
                stats = receive.statistics()
                return stats.current_buffer_used == 0 and stats.open_send_streams == 0

            self.scheduler.queue_idle = queue_idle
            async with anyio.create_task_group() as workers:
                for _ in range(self.scheduler.workers):
                    workers.start_soon(self._work, receive.clone())
                receive.close()
            tg.cancel_scope.cancel()  # all work done: stop progress

    async def _watch_signals(self, scope: anyio.CancelScope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            early = take_early_signal()  # one that came before this receiver (engine/early.py)
            signum = early if early is not None else await anext(aiter(signals))
            self._interrupted = signal.Signals(signum)
            log.warning("interrupted", signal=self._interrupted.name, during_start_up=early is not None,
                        note="stopping; partial files are kept for resume")
            scope.cancel()

    # -- producers -------------------------------------------------------------------------

    async def _produce_datasets(self, outcomes: list[DatasetOutcome], send: MemoryObjectSendStream[FileTask],
                                limiter: anyio.CapacityLimiter, tg: TaskGroup) -> None:
        """A dataset's producer task is made once it holds a discovery slot: thousands of datasets
        cost a few tasks at a time, not one waiting task each (memory flat in the number of files)."""
        async with send:
            for ds, outcome in zip(self.share.datasets, outcomes, strict=True):
                slot = object()
                await limiter.acquire_on_behalf_of(slot)
                tg.start_soon(self._produce_dataset, ds, outcome, send.clone(), partial(limiter.release_on_behalf_of, slot))

    async def _produce_dataset(self, ds: DatasetSettings, outcome: DatasetOutcome, send: MemoryObjectSendStream[FileTask],
                               release: Callable[[], None]) -> None:
        async with send:
            try:
                selection = await self.selector.select(ds)
                outcome.dataset_id = selection.dataset_id
                outcome.name = ds.name or await self._dataset_name(selection.dataset_id)
                for key, obj in selection.batches:
                    await self._export_batch(outcome, selection.dataset_id, key, obj, "dataset", send, alone=len(selection.batches) == 1)
                for r in selection.replaced:  # reported, not exported: a newer chosen batch replaces it
                    outcome.batches.append(BatchOutcome(BatchRef(selection.dataset_id, r.key, r.obj), status="replaced",
                                                        errors=[Failure("replaced", r.note)]))
            except Exception as exc:  # noqa: BLE001 - one dataset's failure is reported and the others go on
                self._dataset_failed(outcome, exc)
            finally:
                release()

    async def _produce_audience(self, aud: AudienceSettings, send: MemoryObjectSendStream[FileTask],
                                limiter: anyio.CapacityLimiter) -> None:
        outcome = DatasetOutcome(aud.label, source=aud.label)

        def on_job(job_id: str) -> None:
            outcome.source = f"audience:{job_id}"

        self.run.datasets.append(outcome)
        async with send:
            try:
                found = await self.discovery.audiences.audience_batches(aud, on_job)
                async with limiter:
                    for dataset_id, key, obj in found:
                        if outcome.dataset_id != dataset_id:
                            outcome.dataset_id, outcome.name = dataset_id, await self._dataset_name(dataset_id)
                        if await self._exported_by_other_shard(outcome, dataset_id, key):
                            continue
                        await self._export_batch(outcome, dataset_id, key, obj, outcome.source, send)
            except Exception as exc:  # noqa: BLE001 - one dataset's failure is reported and the others go on
                self._dataset_failed(outcome, exc)

    async def _dataset_name(self, dataset_id: str) -> str | None:
        """The dataset's Catalog name for the summary, the report and the manifests (None when unknown)."""
        return await self.names.name_of(dataset_id)

    async def _exported_by_other_shard(self, outcome: DatasetOutcome, dataset_id: str, key: str) -> bool:
        """An audience job's batch that another shard exports for its own dataset entry is left to
        that shard, so no two shards ever write one batch folder."""
        if dataset_id not in self.share.elsewhere:
            return False
        shard, entry = self.share.elsewhere[dataset_id]
        try:
            theirs = {k for k, _ in (await self.selector.select(entry)).batches}
        except RunFatal:
            raise
        except Exception:  # noqa: BLE001 - any other failure: this shard takes the batch
            return False  # that shard exports nothing of it: this one does
        if key not in theirs:
            return False
        log.info("batch_left_to_shard", dataset=dataset_id, batch=key, shard=shard, source=outcome.source)
        outcome.delegated.append((dataset_id, key, shard))
        return True

    async def _export_batch(self, outcome: DatasetOutcome, dataset_id: str, key: str, obj: dict[str, Any], source: str,
                            send: MemoryObjectSendStream[FileTask], alone: bool = True) -> None:
        try:
            batch, dataset_files = await self.discovery.data_access.resolve_batch(dataset_id, key, obj, source)
        except RunFatal:
            raise
        except Exception as exc:
            if alone:
                raise
            # One of several chosen batches: it fails alone, the others are still exported.
            outcome.batches.append(BatchOutcome(BatchRef(dataset_id, key, obj), status="failed", errors=[failure(exc)]))
            log.error("batch_failed", dataset=dataset_id, batch=key, error=describe(exc))
            return
        if batch.key in self._batches:
            # Another source already exports this batch (e.g. an audience job's target dataset).
            log.info("batch_already_exporting", dataset=dataset_id, batch=batch.batch_id, source=source)
            outcome.batches.append(self._batches[batch.key])
            return
        bo = BatchOutcome(batch, dataset_name=outcome.name)
        self._batches[batch.key] = bo
        outcome.batches.append(bo)
        log.info("batch_found", dataset=dataset_id, batch=batch.batch_id, source=source, dataset_files=len(dataset_files),
                 records=batch.expected_records)

        async def sink(task: FileTask) -> None:
            self.counters.files_total += 1
            self.counters.bytes_total += task.size or 0
            await send.send(task)

        bo.listing = await self.discovery.data_access.list_files(batch, dataset_files, sink)
        await self._maybe_finalize(bo)
        outcome.status = "listed"

    def _dataset_failed(self, outcome: DatasetOutcome, exc: Exception) -> None:
        outcome.status = "failed"
        outcome.error = failure(exc)
        if isinstance(exc, RunFatal):
            self._abort(exc)
            if isinstance(exc, PlatformUnreachable):
                return  # said once for the run, not once per dataset
        log.error("dataset_failed", dataset=outcome.dataset_id, error=outcome.error)

    def _abort(self, exc: BaseException) -> None:
        """Credentials stopped working or the disk is full: nothing else can succeed."""
        if self._fatal is None:  # the first cause is the one to report
            self._fatal = exc
            if isinstance(exc, DiskFull):
                self._disk_full = exc
                log.error("disk_full", error=str(exc))
        if self._scope is not None:
            self._scope.cancel()

    # -- workers ---------------------------------------------------------------------------

    async def _work(self, receive: MemoryObjectReceiveStream[FileTask]) -> None:
        async with receive:
            async for task in receive:
                bo = self._batches[task.batch.key]
                try:
                    result = await self.downloader.fetch(task)
                except anyio.get_cancelled_exc_class():
                    bo.add(FileResult(task, FileStatus.CANCELLED, error=Failure("interrupted", "interrupted")))
                    raise
                except RunFatal as exc:
                    bo.add(FileResult(task, FileStatus.FAILED, error=failure(exc)))
                    self._abort(exc)
                    return
                except Exception as exc:  # a bug must cost one file, never the pool
                    log.exception("unexpected_error", file=task.rel_path)
                    result = FileResult(task, FileStatus.FAILED, error=failure(exc))
                bo.add(result)
                await self._maybe_finalize(bo)

    async def _maybe_finalize(self, bo: BatchOutcome) -> None:
        if bo.all_in and bo.status == "running":
            bo.status = "finalizing"
            try:
                await anyio.to_thread.run_sync(partial(finalize_batch, self.destination, bo, durable=self.settings.export.fsync))
            except DiskFull as exc:  # the batch is marked failed; nothing else can be written either
                self._abort(exc)
            # Counted in bo.tally, the Catalog object written to the manifest: state ends with its
            # batch, but for the files that failed (few; what a caller may want to look at).
            bo.results, bo.batch = [r for r in bo.results if not r.ok], replace(bo.batch, catalog={})
            log.info("batch_done", dataset=bo.batch.dataset_id, batch=bo.batch.batch_id, status=bo.status,
                     files=bo.tally.seen, records=bo.records_found, errors=bo.errors[:3])

    # -- conclusion ------------------------------------------------------------------------

    def _conclude(self) -> None:
        run = self.run
        for bo in self._batches.values():
            if bo.status == "running":
                if bo.listing is None:
                    bo.errors.append(Failure("listing_incomplete", "listing incomplete"))
                    bo.status = "cancelled" if self._interrupted else "failed"
                else:
                    try:  # writes what is verified; no _SUCCESS if incomplete
                        finalize_batch(self.destination, bo, durable=self.settings.export.fsync)
                    except DiskFull as exc:
                        self._disk_full_at_end(exc)
                    if self._interrupted and bo.status == "failed":
                        bo.status = "cancelled"
        for d in run.datasets:
            if d.status not in ("failed",):
                done = (d.batches or d.delegated) and all(b.status in ("ok", "replaced") for b in d.batches)
                d.status = "ok" if done else ("cancelled" if self._interrupted else "failed")
        if isinstance(self._fatal, RunFatal):
            run.errors.append(Failure(kind_of(self._fatal), str(self._fatal)))  # as `check` says it
            run.exit_code, run.status = self._fatal.exit_code, self._fatal.status
        elif self._interrupted is not None:
            run.exit_code, run.status = EXIT_SIGNAL[self._interrupted], "interrupted"
        elif all(d.status == "ok" for d in run.datasets) and run.datasets:
            run.exit_code, run.status = EXIT_OK, "ok"
        else:
            run.exit_code, run.status = EXIT_FAILED, "failed"
        c = self.counters
        tallies = [b.tally for b in run.batches()]
        run.totals = {
            "datasets": len(run.datasets),
            "batches": len(run.batches()),
            "files": sum(t.ok for t in tallies),
            "files_downloaded": sum(t.downloaded for t in tallies),
            "files_reused": sum(t.reused for t in tallies),
            "files_failed": sum(t.failed for t in tallies) + sum(len(b.listing.refused) for b in run.batches() if b.listing),
            "bytes": sum(t.bytes for t in tallies),
            "bytes_fetched": c.bytes_fetched,
            "requests": c.requests,
            "retries": self.policy.retries,
            "throttled": self.policy.pacer.throttled_count,
            "restarts": c.restarts,
            "continuations": self.policy.continuations,
            "split_files": c.split_files,
            "tail_splits": c.tail_splits,
            "ignored_ranges": c.ignored_ranges,
        }
        self._write_report()
        log.info("run_summary", **summary_event(run, report_path(self.out_dir, run)))

    def _disk_full_at_end(self, exc: DiskFull) -> None:
        """No space to finish a batch while concluding: the run ends disk_full, unless it was
        interrupted (then the exit code stays the signal's and the report says both)."""
        if self._disk_full is not None:
            return  # said once; each batch's own error says what it could not write
        self._disk_full = exc
        log.error("disk_full", error=str(exc))
        if self._fatal is None and self._interrupted is None:
            self._fatal = exc
        else:
            self.run.errors.append(str(exc))

    def _write_report(self) -> None:
        """The final report; when even that finds no space, the stale "running" one goes (it would
        claim a run that is over) and the CLI says so in one line."""
        try:
            write_report(self.destination, self.run)
        except DiskFull as exc:
            self.run.report_error = str(exc)
            log.error("report_not_written", error=str(exc))
            with contextlib.suppress(OSError):
                self.destination.delete(report_name(self.run.shard))

