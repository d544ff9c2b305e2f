"""The coordinator: config -> discovery producers -> bounded worker pool -> disk -> report.

Discovery of many datasets runs concurrently (bounded by export.discovery_concurrency) and
feeds a bounded stream, so downloads start while listings are still paging. A fixed number of
workers (export.concurrency) drain the stream; each batch is finalized as soon as its listing
is complete and its last file is in.
"""

from __future__ import annotations

import signal
from functools import partial
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .platform.auth import TokenProvider
from .platform.client import PlatformClient, make_session
from .config import DatasetSettings, Settings
from .platform.discovery import Discovery, LatestBatches
from .transfer.download import Downloader
from .transfer.scheduler import Scheduler
from .output.destination import open_destination
from .errors import CredentialsRejected, DiskFull, ExportError
from .logs import register_secret
from .progress import show_progress
from .model import Counters, FileResult, FileStatus, FileTask
from .output.report import BatchOutcome, DatasetOutcome, RunOutcome, finalize_batch, write_report
from .retry import RetryPolicy, describe

log = structlog.get_logger("aep_export")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CREDENTIALS = 0, 1, 2, 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Exporter:
    settings: Settings
    counters: Counters = field(default_factory=Counters)
    run: RunOutcome = field(default_factory=RunOutcome)
    handle_signals: bool = True
    live_progress: bool = False  # a live line on a terminal; periodic log events otherwise
    progress_interval: float = 10.0

    def __post_init__(self) -> None:
        self.out_dir = self.settings.export.out_dir
        self._batches: dict[tuple[str, str], BatchOutcome] = {}
        self._fatal: BaseException | None = None
        self._interrupted: signal.Signals | None = None
        self._scope: anyio.CancelScope | None = None
        register_secret(self.settings.auth.client_secret.get_secret_value())
        register_secret(self.settings.auth.access_token.get_secret_value())

    async def execute(self) -> RunOutcome:
        """Run the whole export; always writes report.json, even when interrupted. A destination
        that cannot be opened (a missing bucket, refused credentials) raises before anything is attempted."""
        ex = self.settings.export
        self.policy = RetryPolicy(max_attempts=ex.max_attempts, base=ex.backoff_base, cap=ex.backoff_cap)
        self.scheduler = Scheduler(ex)
        async with open_destination(ex, self.settings.store, self.scheduler.disk) as self.destination:
            try:
                async with make_session(self.settings) as session:
                    tokens = TokenProvider(self.settings.auth, session, self.policy)
                    self.client = PlatformClient(self.settings, session, tokens, self.policy)
                    self.discovery = Discovery(self.client, ex.created_client)
                    self.latest = LatestBatches(self.discovery, [ds.id for ds in self.settings.datasets if not ds.batch])
                    self.downloader = Downloader(self.client, ex, self.destination, self.policy, self.counters, self.scheduler)
                    await tokens.token()  # bad credentials: fail before anything is attempted
                    with anyio.CancelScope() as self._scope:
                        await self._pool()
            except CredentialsRejected as exc:
                self._fatal = exc
            finally:
                with anyio.CancelScope(shield=True):  # in a thread: the batch files may go to a bucket
                    await anyio.to_thread.run_sync(self._conclude)
        return self.run

    async def _pool(self) -> None:
        ex = self.settings.export
        send, receive = anyio.create_memory_object_stream[FileTask](max_buffer_size=ex.concurrency * 4)
        limiter = self.scheduler.discovery
        async with anyio.create_task_group() as tg:
            if self.handle_signals:
                tg.start_soon(self._watch_signals, tg.cancel_scope)
            tg.start_soon(partial(show_progress, self.counters, live=self.live_progress, interval=self.progress_interval))
            async with send:
                for ds in self.settings.datasets:
                    tg.start_soon(self._produce_dataset, ds, send.clone(), limiter)
                for aud in self.settings.audiences:
                    tg.start_soon(self._produce_audience, aud.export_job_id, aud.wait_timeout, send.clone(), limiter)
            def queue_idle() -> bool:
                stats = receive.statistics()
                return stats.current_buffer_used == 0 and stats.open_send_streams == 0

            self.scheduler.queue_idle = queue_idle
            async with anyio.create_task_group() as workers:
                for _ in range(self.scheduler.workers):
                    workers.start_soon(self._work, receive.clone())
                receive.close()
            tg.cancel_scope.cancel()  # all work done: stop the signal watcher and progress

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self._interrupted = signal.Signals(signum)
                log.warning("interrupted", signal=self._interrupted.name, note="stopping; partial files are kept for resume")
                scope.cancel()
                return

    # -- producers -------------------------------------------------------------------------

    async def _produce_dataset(self, ds: DatasetSettings, send: MemoryObjectSendStream[FileTask], limiter: anyio.CapacityLimiter) -> None:
        outcome = DatasetOutcome(ds.id)
        self.run.datasets.append(outcome)
        async with send, limiter:
            try:
                if ds.batch:
                    key, obj = ds.batch, await self.discovery.batch(ds.batch)
                else:
                    key, obj = await self.latest.latest(ds.id)
                await self._export_batch(outcome, ds.id, key, obj, "dataset", send)
            except Exception as exc:
                self._dataset_failed(outcome, exc)

    async def _produce_audience(self, job_id: str, wait: float, send: MemoryObjectSendStream[FileTask], limiter: anyio.CapacityLimiter) -> None:
        outcome = DatasetOutcome(f"audience:{job_id}", source=f"audience:{job_id}")
        self.run.datasets.append(outcome)
        async with send:
            try:
                pairs = await self.discovery.audience_batches(job_id, wait)
                async with limiter:
                    for dataset_id, batch_id in pairs:
                        outcome.dataset_id = dataset_id
                        obj = await self._catalog_or_empty(batch_id)
                        await self._export_batch(outcome, dataset_id, batch_id, obj, f"audience:{job_id}", send)
            except Exception as exc:
                self._dataset_failed(outcome, exc)

    async def _catalog_or_empty(self, batch_id: str) -> dict:
        try:
            return await self.discovery.batch(batch_id)
        except ExportError:
            return {}  # the export job's batch may not be visible in the Catalog yet

    async def _export_batch(self, outcome: DatasetOutcome, dataset_id: str, key: str, obj: dict, source: str, send: MemoryObjectSendStream[FileTask]) -> None:
        batch, dataset_files = await self.discovery.resolve_batch(dataset_id, key, obj, source)
        if batch.key in self._batches:
            # Another source already exports this batch (e.g. an audience job's target dataset).
            log.info("batch_already_exporting", dataset=dataset_id, batch=batch.batch_id, source=source)
            outcome.batches.append(self._batches[batch.key])
            return
        bo = BatchOutcome(batch)
        self._batches[batch.key] = bo
        outcome.batches.append(bo)
        log.info("batch_found", dataset=dataset_id, batch=batch.batch_id, source=source, dataset_files=len(dataset_files), records=batch.expected_records)

        async def sink(task: FileTask) -> None:
            self.counters.files_total += 1
            self.counters.bytes_total += task.size or 0
            await send.send(task)

        bo.listing = await self.discovery.list_files(batch, dataset_files, sink)
        await self._maybe_finalize(bo)
        outcome.status = "listed"

    def _dataset_failed(self, outcome: DatasetOutcome, exc: Exception) -> None:
        if isinstance(exc, CredentialsRejected):
            self._abort(exc)
        outcome.status = "failed"
        outcome.error = describe(exc)
        log.error("dataset_failed", dataset=outcome.dataset_id, error=outcome.error)

    def _abort(self, exc: BaseException) -> None:
        """Credentials stopped working or the disk is full: nothing else can succeed."""
        self._fatal = exc
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
                    bo.results.append(FileResult(task, FileStatus.CANCELLED, error="interrupted"))
                    raise
                except (CredentialsRejected, DiskFull) as exc:
                    bo.results.append(FileResult(task, FileStatus.FAILED, error=describe(exc)))
                    self._abort(exc)
                    return
                except Exception as exc:  # a bug must cost one file, never the pool
                    log.exception("unexpected_error", file=task.rel_path)
                    result = FileResult(task, FileStatus.FAILED, error=describe(exc))
                bo.results.append(result)
                await self._maybe_finalize(bo)

    async def _maybe_finalize(self, bo: BatchOutcome) -> None:
        if bo.all_in and bo.status == "running":
            bo.status = "finalizing"
            await anyio.to_thread.run_sync(partial(finalize_batch, self.destination, bo, durable=self.settings.export.fsync))
            log.info("batch_done", dataset=bo.batch.dataset_id, batch=bo.batch.batch_id, status=bo.status,
                     files=len(bo.results), records=bo.records_found, errors=bo.errors[:3])

    # -- conclusion ------------------------------------------------------------------------

    def _conclude(self) -> None:
        run = self.run
        for bo in self._batches.values():
            if bo.status == "running":
                if bo.listing is None:
                    bo.errors.append("listing incomplete")
                    bo.status = "cancelled" if self._interrupted else "failed"
                else:
                    finalize_batch(self.destination, bo, durable=self.settings.export.fsync)  # writes what is verified; no _SUCCESS if incomplete
                    if self._interrupted and bo.status == "failed":
                        bo.status = "cancelled"
        for d in run.datasets:
            if d.status not in ("failed",):
                d.status = "ok" if d.batches and all(b.status == "ok" for b in d.batches) else ("cancelled" if self._interrupted else "failed")
        if isinstance(self._fatal, DiskFull):
            run.errors.append(str(self._fatal))
            run.exit_code, run.status = EXIT_FAILED, "disk_full"
        elif self._fatal is not None:
            run.errors.append(describe(self._fatal))
            run.exit_code, run.status = EXIT_CREDENTIALS, "credentials_rejected"
        elif self._interrupted is not None:
            run.exit_code, run.status = EXIT_SIGNAL[self._interrupted], "interrupted"
        elif all(d.status == "ok" for d in run.datasets) and run.datasets:
            run.exit_code, run.status = EXIT_OK, "ok"
        else:
            run.exit_code, run.status = EXIT_FAILED, "failed"
        c = self.counters
        results = [r for b in run.batches() for r in b.results]
        run.totals = {
            "datasets": len(run.datasets),
            "batches": len(run.batches()),
            "files": sum(1 for r in results if r.ok),
            "files_downloaded": sum(1 for r in results if r.status is FileStatus.DOWNLOADED),
            "files_reused": sum(1 for r in results if r.status is FileStatus.REUSED),
            "files_failed": sum(1 for r in results if not r.ok) + sum(len(b.listing.refused) for b in run.batches() if b.listing),
            "bytes": sum(r.size for r in results if r.ok),
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
        write_report(self.destination, run)
