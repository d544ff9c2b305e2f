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
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .config import AudienceSettings, DatasetSettings, Settings
from .early import take_early_signal
from .errors import ConfigError, DiskFull, Failure, PlatformUnreachable, RunFatal, kind_of
from .hooks import Hooks
from .layout import report_name
from .masking import register_secret
from .model import BatchRef, Counters, FileResult, FileStatus, FileTask
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_SIGNAL
from .output.opener import open_destination
from .output.report import BatchOutcome, DatasetOutcome, RunOutcome, finalize_batch, layout_switch, report_path, summary_event, write_report
from .output.runlock import hold_destination
from .platform.auth import TokenProvider
from .platform.client import PlatformClient, make_session
from .platform.discovery import Discovery
from .platform.listing import DatasetNames
from .platform.selection import Selector
from .platform.sources import Source
from .platform.sourcing import run_sources
from .platform.traffic import code_class, traced
from .progress import InFlight, show_progress
from .retry import RetryPolicy, describe, failure
from .shard import Shard, entry_key, share_of
from .transfer.download import Downloader
from .transfer.fetcher import FileJob
from .transfer.scheduler import Scheduler

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from anyio.abc import TaskGroup

    from .metrics import RunMetrics
    from .platform.early_token import EarlyToken

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
    early_token: EarlyToken | None = None  # the token request the CLI sent first thing (platform/early_token.py)

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
        self.metrics = self._metrics()
        hooks = Hooks(self.settings.hooks)
        self.hooks = hooks if hooks.any else None
        self._announced: set[int] = set()  # batches whose end was told (their hook started), by id()

    def _take_share(self) -> None:
        """Sharding, applied here only: the entries this shard exports (all when unsharded)."""
        self.share = share_of(self.settings.datasets, self.settings.audiences, self.shard)
        self.run.shard = str(self.shard) if self.shard else None
        self.run.entries = [entry_key(e) for e in (*self.share.datasets, *self.share.audiences)]
        if self.shard:
            log.info("shard", shard=self.run.shard, entries=len(self.run.entries),
                     of=len(self.settings.datasets) + len(self.settings.audiences))
            log.debug("shard_entries", shard=self.run.shard, mine=self.run.entries)

    def _metrics(self) -> RunMetrics | None:
        """The run's Prometheus metrics, when asked for (prometheus_client is imported only then)."""
        if not self.settings.metrics.enabled:
            return None
        from .metrics import RunMetrics, Sources

        return RunMetrics(self.settings.metrics, Sources(self.counters, self.run))

    async def execute(self) -> RunOutcome:
        """Run the whole export; always writes _report.json, even when interrupted. A destination
        that cannot be opened (a missing bucket, refused credentials) raises before anything is
        attempted, and so does one another run holds (DestinationBusy: exit 5), or one that holds
        an export of the other layout (ConfigError: exit 2)."""
        ex = self.settings.export
        self.policy = RetryPolicy.for_export(ex)
        self.scheduler: Scheduler[FileJob] = Scheduler(ex)
        if self.metrics is not None:
            self.metrics.sources.scheduler, self.metrics.sources.policy = self.scheduler, self.policy
            self.metrics.start()
        refused: str | None = None
        try:
            with hold_destination(ex.out_dir, self.run.shard, self.run.started_at):
                async with open_destination(ex, self.settings.store, self.scheduler.disk, self.run.shard) as self.destination:
                    self.run.layout = ex.layout
                    refused = await anyio.to_thread.run_sync(layout_switch, self.destination, ex.layout, self.run.shard)
                    if refused is None:  # else nothing is attempted, nor any report written (raised below: out of the task group)
                        try:
                            with anyio.CancelScope() as stopping:  # a signal stops the run, then the hooks still running
                                async with anyio.create_task_group() as tg:
                                    if self.handle_signals:  # first: a signal during start-up stops the run like any other
                                        await tg.start(self._watch_signals, stopping)
                                    async with self._hook_group():  # left once every hook has ended
                                        await self._run_and_conclude()
                                    tg.cancel_scope.cancel()  # done: stop the signal watcher
                        finally:
                            with anyio.CancelScope(shield=True):
                                await anyio.to_thread.run_sync(self._finish)
        finally:
            if self.metrics is not None:
                with anyio.CancelScope(shield=True):  # the last push carries the outcome
                    await anyio.to_thread.run_sync(self.metrics.close)
        if refused is not None:
            raise ConfigError(refused)
        return self.run

    def _hook_group(self) -> AbstractAsyncContextManager[object]:
        """Where hooks run beside the rest of the run (a task group: a run ends once its hooks have)."""
        if self.hooks is None:
            return contextlib.nullcontext()
        self._hook_runs: TaskGroup = anyio.create_task_group()
        return self._hook_runs

    def _early_exchange(self) -> Callable[[int], None] | None:
        """The metrics count the CLI's early token request like any IMS exchange of the session."""
        metrics = self.metrics
        return None if metrics is None else lambda status: metrics.exchange("ims", code_class(status))

    async def _run_and_conclude(self) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                await self._export()
        finally:
            with anyio.CancelScope(shield=True):  # in a thread: the batch files may go to a bucket
                await anyio.to_thread.run_sync(self._conclude)
                for bo in self.run.batches():  # those that ended while concluding
                    self._batch_ended(bo)

    async def _export(self) -> None:
        try:
            await anyio.to_thread.run_sync(write_report, self.destination, self.run)  # "running" until the run concludes
            trace = [traced(self.settings, self.metrics)] if self.metrics is not None else []
            async with make_session(self.settings, trace) as session:
                tokens = TokenProvider(self.settings.auth, session, self.policy, self.early_token, self._early_exchange())
                self.client = PlatformClient(self.settings, session, tokens, self.policy)
                self.discovery = Discovery(self.client, self.settings.export.created_client, self.settings.export.max_listing_pages,
                                           self.settings.export.layout)
                self.selector = Selector(self.discovery, self.settings.datasets)
                self.names = DatasetNames(self.discovery)
                self.sources = run_sources(self.discovery, self.selector)
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
            tg.start_soon(partial(show_progress, self.counters, live=self.live_progress, interval=self.progress_interval,
                                  in_flight=self._files_in_flight))
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

    def _files_in_flight(self) -> list[InFlight]:
        """For the progress display: the files whose streams run now, and what each holds."""
        return [InFlight(job.task.name, job.download.done.total, job.download.size) for job in list(self.scheduler.jobs)]

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
                src = self.sources.of(ds)
                selection = await src.select(ds)
                outcome.dataset_id = selection.dataset_id
                outcome.name = ds.name or await self._dataset_name(selection.dataset_id)
                for key, obj in selection.batches:
                    await self._export_batch(outcome, selection.dataset_id, key, obj, "dataset", send,
                                             alone=len(selection.batches) == 1, src=src)
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
                        await self._export_batch(outcome, dataset_id, key, obj, outcome.source, send, src=self.sources.of(None))
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
        if entry.via != "data-access":
            return False  # that shard exports a run of its own, never this batch
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
                            send: MemoryObjectSendStream[FileTask], alone: bool = True, *, src: Source) -> None:
        try:
            resolved = await src.resolve(dataset_id, key, obj, source)
        except RunFatal:
            raise
        except Exception as exc:
            if alone:
                raise
            # One of several chosen batches: it fails alone, the others are still exported.
            failed = BatchOutcome(BatchRef(dataset_id, key, obj), status="failed", errors=[failure(exc)], dataset_name=outcome.name)
            outcome.batches.append(failed)
            log.error("batch_failed", dataset=dataset_id, batch=key, error=describe(exc))
            self._batch_ended(failed)
            return
        batch = resolved.batch
        if batch.key in self._batches:
            # Another source already exports this batch (e.g. an audience job's target dataset).
            log.info("batch_already_exporting", dataset=dataset_id, batch=batch.batch_id, source=source)
            outcome.batches.append(self._batches[batch.key])
            return
        bo = BatchOutcome(batch, dataset_name=outcome.name)
        self._batches[batch.key] = bo
        outcome.batches.append(bo)
        log.info("batch_found", dataset=dataset_id, batch=batch.batch_id, source=source, via=src.name,
                 dataset_files=len(resolved.detail), records=batch.expected_records)

        async def sink(task: FileTask) -> None:
            self.counters.files_total += 1
            self.counters.bytes_total += task.size or 0
            await send.send(task)

        bo.listing = await src.list_files(resolved, sink)
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
            self._batch_ended(bo)

    # -- completion hooks ------------------------------------------------------------------

    def _batch_ended(self, bo: BatchOutcome) -> None:
        """A batch reached its final status: its hook starts now, beside the rest of the run."""
        if self.hooks is None or id(bo) in self._announced or bo.status in ("running", "finalizing"):
            return
        self._announced.add(id(bo))
        if self.hooks.command_for(bo.status) is not None:
            self._hook_runs.start_soon(self.hooks.run_for, bo, self.out_dir, self.run.shard)

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
            "files_interrupted": sum(t.cancelled for t in tallies),  # counted in files_failed too
            "bytes_resumed": c.bytes_resumed,
            "files_unfinished": c.files_unfinished,
            "bytes_unfinished": c.bytes_unfinished,
        }

    def _finish(self) -> None:
        """The report, once every hook has ended (their outcomes are in it), and the summary event."""
        run = self.run
        if self._interrupted is not None and run.status in ("ok", "failed"):  # the signal came while hooks ran
            run.exit_code, run.status = EXIT_SIGNAL[self._interrupted], "interrupted"
        if self.hooks is not None:
            ran = [b.hook for b in run.batches() if b.hook]
            run.totals["hooks"] = len(ran)
            run.totals["hooks_failed"] = sum(1 for h in ran if h["outcome"] != "ok")
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

