"""Downloading one file: ranged segments, resume, hashing while streaming, verify, atomic rename.

A file streams into `<final>.part`. Bytes are SHA-256 hashed as they arrive, coalesced and
written off the event loop with one thread hop per write batch (os.pwritev, no join copy).
Large files are fetched as a sequence of ranged requests sized to finish well inside the
gateway's response-time limit; a response cut short simply continues from the bytes on disk.
Only a fully verified file is renamed to its final name, so a final name is never partial.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
import structlog

from ..platform.client import PlatformClient, raise_for_status
from ..config import ExportSettings
from ..errors import CredentialsRejected, DiskFull, IntegrityError, PlatformError, TransferError
from ..checks.integrity import PARQUET_MAGIC, DigestClaim, check_digests, digest_claims, file_digest, hash_from_disk, parquet_rows
from ..model import Counters, FileResult, FileStatus, FileTask
from .partfile import (
    AiofilesPartFile,
    PartFile,
    RangeSink,
    ensure_space,
    resume_prefix,
    split_marker,
)
from ..output.paths import contained
from ..retry import RetryPolicy, describe, is_retryable
from ..output.journal import Journal, Verified

log = structlog.get_logger("aep_export.download")

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
INTEGRITY_REFETCHES = 2  # a file whose bytes fail verification is fetched again this often
SPLIT_MIN = 2 << 20  # parallel ranges are at least this large
MAX_WAYS = 8  # ranges of one file at once
TAIL_MIN = 1 << 20  # a running file's tail is shared only if both halves are at least this large


class FileChanged(TransferError):
    """The server's total size changed, or it ignored our Range: start the file over."""


@dataclass
class SegmentPlanner:
    """Sizes ranged requests so each finishes in about `target_s` at the measured per-connection rate."""

    target_s: float
    minimum: int = 1 << 20
    maximum: int = 1 << 30
    rate: float | None = None  # bytes/s per connection, smoothed

    def __post_init__(self) -> None:
        self.initial = 64 << 20

    def next_size(self) -> int:
        if self.rate is None:
            return self.initial
        return int(min(self.maximum, max(self.minimum, self.rate * self.target_s)))

    def observe(self, nbytes: int, seconds: float) -> None:
        if nbytes < (256 << 10) or seconds <= 0:
            return  # too small to say anything about throughput
        sample = nbytes / seconds
        self.rate = sample if self.rate is None else 0.7 * self.rate + 0.3 * sample


def parse_content_range(value: str | None) -> tuple[int, int, int | None]:
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not m:
        raise TransferError(f"206 without a usable Content-Range ({value!r})")
    start, end = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if end < start or (total is not None and end >= total):
        raise TransferError(f"inconsistent Content-Range {value!r}")
    return start, end, total


@dataclass
class TailRange:
    """The end of a running file, fetched by a connection that had nothing left to start."""

    sink: RangeSink
    start: int
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


@dataclass(eq=False)  # compared and hashed by identity (kept in a set while streaming)
class Transfer:
    """Per-file download state shared by the segment requests."""

    task: FileTask
    part: PartFile
    size: int | None
    part_path: Path
    claims: list[DigestClaim] = field(default_factory=list)
    requests: int = 0
    fetched: int = 0
    tails: list[TailRange] = field(default_factory=list)  # ranges after part.stop, fetched by helpers
    split_marked: bool = False

    @property
    def stream_end(self) -> int | None:
        """Where the main stream ends: the file's end, or where a helper took over its tail."""
        return self.size if self.part.stop is None else self.part.stop

    @property
    def complete(self) -> bool:
        return self.size is not None and self.part.offset >= self.size


class Downloader:
    """Fetches and verifies files; one instance serves the whole pool."""

    def __init__(self, client: PlatformClient, export: ExportSettings, journal: Journal, policy: RetryPolicy, counters: Counters):
        self.client = client
        self.export = export
        self.out_dir = export.out_dir
        self.journal = journal
        self.policy = policy
        self.counters = counters
        self.planner = SegmentPlanner(target_s=export.response_time_limit * 0.5)
        # Disk work gets its own thread budget so hashing/writes cannot starve other to_thread users.
        # The one concurrency policy: `concurrency` requests on the wire at once. Workers take a
        # slot per request only, so a file being verified, fsynced or renamed holds no connection.
        self.slots = anyio.Semaphore(export.concurrency)
        # Set by the coordinator: True when no file waits for a worker (then large files split).
        self.queue_idle: Callable[[], bool] = lambda: False
        self.files_in_flight = 0  # files between open and finish (for the fair share of connections)
        self._streams: set[Transfer] = set()  # files streaming as one response (their tails can be shared)
        self.disk = anyio.CapacityLimiter(max(4, min(export.concurrency, 16)))
        self._folders: set[Path] = set()  # folders already created this run

    async def fetch(self, task: FileTask) -> FileResult:
        started = time.monotonic()
        try:
            final = contained(self.out_dir, task.rel_path)
            result = await self._reuse(task, final) or await self._download_verified(task, final)
        except (CredentialsRejected, DiskFull):
            raise  # fatal for the whole run, not for this file
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"no space left in {self.out_dir} while writing {task.rel_path}; "
                               "partial files are kept: free space and rerun to resume") from None
            result = FileResult(task, FileStatus.FAILED, error=describe(exc))
            log.warning("file_failed", file=task.rel_path, error=result.error)
        result.seconds = time.monotonic() - started
        if result.ok:
            self.counters.files_done += 1
            self.counters.bytes_done += result.size
        else:
            self.counters.files_failed += 1
        return result

    async def _reuse(self, task: FileTask, final: Path) -> FileResult | None:
        """A file verified by an earlier run is kept; without a journal entry it is re-checked."""
        if not final.exists():
            return None
        if entry := self.journal.lookup(task.rel_path, final):
            if task.size is None or entry.size == task.size:
                return FileResult(task, FileStatus.REUSED, size=entry.size, sha256=entry.sha256, rows=entry.rows)
        try:
            size, sha, rows = await anyio.to_thread.run_sync(self._verify_existing, task, final, limiter=self.disk)
        except IntegrityError as exc:
            log.warning("existing_file_invalid", file=task.rel_path, error=str(exc))
            return None  # fetch it again; the rename replaces it only once verified
        self._record(task, final, size, sha, rows)
        return FileResult(task, FileStatus.REUSED, size=size, sha256=sha, rows=rows)

    def _verify_existing(self, task: FileTask, final: Path) -> tuple[int, str, int | None]:
        """Keep a file from an earlier run only if it still has the digest that run verified."""
        size = final.stat().st_size
        if task.size is not None and size != task.size:
            raise IntegrityError(f"size {size} on disk, {task.size} listed")
        recorded = self.journal.recorded_sha256(task.rel_path) or _sums_entry(final, task)
        if recorded is None:
            raise IntegrityError("no digest recorded by an earlier run to check it against")
        sha = file_digest(final).hex()
        if sha != recorded:
            raise IntegrityError("SHA-256 differs from the one recorded when it was verified")
        rows = parquet_rows(final) if task.is_parquet and self.export.verify_parquet else None
        return size, sha, rows

    async def _download_verified(self, task: FileTask, final: Path) -> FileResult:
        """Download; bytes that fail verification (corrupted in transit) are fetched afresh."""
        for attempt in range(INTEGRITY_REFETCHES + 1):
            try:
                return await self._download(task, final)
            except IntegrityError as exc:
                if attempt == INTEGRITY_REFETCHES:
                    raise
                self.counters.restarts += 1
                log.warning("refetching_after_integrity_failure", file=task.rel_path, error=str(exc))
        raise AssertionError("unreachable")

    async def _download(self, task: FileTask, final: Path) -> FileResult:
        # Disk work happens in two coarse thread calls per file (open, finish), never on the loop.
        part_path = final.with_name(final.name + ".part")
        fd, offset, hasher = await anyio.to_thread.run_sync(self._open_part, task, final, part_path, limiter=self.disk)
        part = self._part_file(fd, offset, hasher, part_path)
        try:
            if offset:
                log.info("resuming", file=task.rel_path, offset=offset)
            xfer = Transfer(task, part, task.size, part_path)
            self.files_in_flight += 1
            try:
                await self._fill(xfer)
            finally:
                self.files_in_flight -= 1
            if isinstance(part, AiofilesPartFile):
                await part.flush()
                await part.aclose()
            sha, rows = await anyio.to_thread.run_sync(self._finish_part, xfer, part_path, final, limiter=self.disk)
        except IntegrityError:
            part.close()
            part_path.unlink(missing_ok=True)  # bad bytes are not worth resuming from
            raise
        except BaseException:
            part.close()  # keep the .part: the next attempt or run resumes from it
            raise
        self._record(task, final, xfer.part.offset, sha, rows)
        return FileResult(task, FileStatus.DOWNLOADED, size=xfer.part.offset, sha256=sha, rows=rows,
                          bytes_fetched=xfer.fetched, requests=xfer.requests)

    def _open_part(self, task: FileTask, final: Path, part_path: Path) -> tuple[int, int, hashlib._Hash]:
        """Create the folder, check free space, open the .part and re-hash any prefix to resume from."""
        if final.parent not in self._folders:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(final.parent)
        ensure_space(final, task)
        fd = os.open(part_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            offset, hasher = resume_prefix(fd, task, part_path)
        except BaseException:
            os.close(fd)
            raise
        return fd, offset, hasher

    def _finish_part(self, xfer: Transfer, part_path: Path, final: Path) -> tuple[str, int | None]:
        """Last write, every check, fsync, then the atomic rename. Closes the fd on success."""
        part = xfer.part
        part.flush_sync()
        if part.unhashed_from is not None:  # bytes written by parallel ranges, hashed in order now
            if (ended := hash_from_disk(part.fd, part.hasher, part.unhashed_from, part.offset)) < part.offset:
                raise IntegrityError(f"{part_path.name} ended at {ended} while hashing, {part.offset} expected")
        sha = part.hasher.hexdigest()
        rows = self._verify_part(xfer, part_path, sha)
        xfer.part.close()
        os.replace(part_path, final)
        split_marker(part_path).unlink(missing_ok=True)
        return sha, rows

    def _part_file(self, fd: int, offset: int, hasher, part_path: Path) -> PartFile:
        if self.export.write_strategy == "aiofiles":
            return AiofilesPartFile(fd, offset, hasher, self.export.write_buffer, self.disk, path=part_path)
        return PartFile(fd, offset, hasher, self.export.write_buffer, self.disk)

    async def _fill(self, xfer: Transfer) -> None:
        """Request segments until the file is complete, resuming after every failure."""
        try:
            await self._fill_stream(xfer)
        except BaseException:
            await self._drop_tails(xfer)  # no helper may write into the .part once we give up on it
            raise

    async def _fill_stream(self, xfer: Transfer) -> None:
        failures_in_a_row = 0
        failures = 0
        while not xfer.complete:
            await self.policy.pacer.wait()
            before = xfer.part.offset
            try:
                if (ways := self._parallel_ways(xfer)) > 1:
                    await self._fill_parallel(xfer, ways)
                    continue
                async with self.slots:
                    done = await self._fetch_segment(xfer, xfer.part, xfer.stream_end)
                if xfer.tails and xfer.part.offset >= xfer.part.stop:
                    await self._join_tails(xfer)
                    continue
                if not (done or xfer.complete):
                    await xfer.part.flush()  # hold no buffered bytes while waiting for the next slot
            except Exception as exc:
                await xfer.part.flush()  # keep what arrived: the next request resumes after it
                if isinstance(exc, FileChanged):
                    log.warning("restarting_file", file=xfer.task.rel_path, reason=str(exc))
                    await self._start_over(xfer)
                    xfer.size = xfer.task.size
                elif xfer.part.offset > before and isinstance(exc, TransferError | aiohttp.ClientError | TimeoutError):
                    # Cut mid-body after progress (the gateway's response-time limit, a reset):
                    # the expected case for large files, so carry on from here at once.
                    self.counters.continuations += 1
                    failures_in_a_row = 0
                    log.debug("continuing", file=xfer.task.rel_path, offset=xfer.part.offset, cause=describe(exc))
                    continue
                failures += 1
                failures_in_a_row += 1
                if not is_retryable(exc) or failures_in_a_row >= self.export.max_attempts or failures >= self.export.max_file_attempts:
                    raise
                await self.policy.pause(exc, failures_in_a_row, file=xfer.task.rel_path, offset=xfer.part.offset)
                continue
            if done and xfer.size is None:
                xfer.size = xfer.part.offset  # unknown length: the body's end is the file's end

    def _parallel_ways(self, xfer: Transfer) -> int:
        """How many ranges to fetch this file in at once: >1 only when connections would idle."""
        if xfer.size is None or xfer.tails or not self.queue_idle():
            return 1
        remaining = xfer.size - xfer.part.offset
        fair_share = self.export.concurrency // max(1, self.files_in_flight)
        return max(1, min(fair_share, MAX_WAYS, remaining // SPLIT_MIN))

    async def _fill_parallel(self, xfer: Transfer, ways: int) -> None:
        """Fetch the rest of the file as `ways` ranges at once, written in place.

        The marker file records the hashed prefix first, so a crash in this phase resumes from
        there; the finish step hashes the ranges from disk, in order.
        """
        part = xfer.part
        await part.flush()
        start, size = part.offset, xfer.size
        assert size is not None
        await self._mark_split(xfer, start)
        step = -(-(size - start) // ways)
        sinks = [RangeSink(part.fd, a, min(size, a + step), self.export.write_buffer, self.disk)
                 for a in range(start, size, step)]
        log.info("parallel_ranges", file=xfer.task.rel_path, ways=len(sinks), offset=start)
        self.counters.split_files += 1
        errors: list[Exception] = []
        async with anyio.create_task_group() as tg:
            for sink in sinks:
                tg.start_soon(self._fill_range, xfer, sink, errors, tg.cancel_scope)
        if errors:
            raise errors[0]
        part.unhashed_from = start
        part.offset = part._disk_offset = size

    async def _fill_range(self, xfer: Transfer, sink: RangeSink, errors: list[Exception], scope: anyio.CancelScope) -> None:
        failures = 0
        try:
            while sink.offset < sink.stop:
                await self.policy.pacer.wait()
                before = sink.offset
                try:
                    async with self.slots:
                        await self._fetch_segment(xfer, sink, sink.stop)
                    await sink.flush()
                except Exception as exc:
                    await sink.flush()
                    if isinstance(exc, FileChanged) or not is_retryable(exc):
                        raise
                    if sink.offset > before:
                        self.counters.continuations += 1
                        continue
                    failures += 1
                    if failures >= self.export.max_attempts:
                        raise
                    await self.policy.pause(exc, failures, file=xfer.task.rel_path, offset=sink.offset)
            await sink.flush()
        except Exception as exc:
            errors.append(exc)
            scope.cancel()  # one range failing fails the phase; the file retries from its prefix

    # -- tail sharing: the end of a run ----------------------------------------------------

    async def help_tail(self) -> None:
        """Called by a worker with no file left to start. While a connection is free, take the
        second half of the largest remaining single stream and fetch it as a range (aria2's
        dynamic split), so the last files of a run do not leave connections idle."""
        while self.slots.value > 0 and (xfer := self._tail_victim()) is not None:
            await self._take_tail(xfer)

    def _tail_victim(self) -> Transfer | None:
        best, most = None, 2 * TAIL_MIN - 1  # each half must be worth a request of its own
        for xfer in self._streams:
            end = xfer.stream_end
            if end is not None and end - xfer.part.offset > most:
                best, most = xfer, end - xfer.part.offset
        return best

    async def _take_tail(self, xfer: Transfer) -> None:
        part = xfer.part
        end = xfer.stream_end
        assert end is not None
        mid = part.offset + (end - part.offset) // 2
        part.stop = mid  # no await since reading part.offset: the stream is still before mid
        tail = TailRange(RangeSink(part.fd, mid, end, self.export.write_buffer, self.disk), start=mid)
        xfer.tails.append(tail)
        self.counters.tail_splits += 1
        log.info("tail_split", file=xfer.task.rel_path, offset=mid, bytes=end - mid)
        errors: list[Exception] = []
        try:
            with tail.scope:
                await self._mark_split(xfer, part._disk_offset)
                await self._fill_range(xfer, tail.sink, errors, tail.scope)
            tail.error = errors[0] if errors else None
        except BaseException as exc:
            tail.error = exc
            raise
        finally:
            tail.done.set()

    async def _mark_split(self, xfer: Transfer, prefix: int) -> None:
        """From now on the .part is not one contiguous prefix: record the flushed prefix a crash
        resumes from, before any byte beyond it is written (once: an earlier marker is smaller)."""
        if not xfer.split_marked:
            xfer.split_marked = True
            await anyio.to_thread.run_sync(split_marker(xfer.part_path).write_text, str(prefix), limiter=self.disk)

    async def _join_tails(self, xfer: Transfer) -> None:
        """The main stream reached the tails: once they are all in, the file is complete."""
        part = xfer.part
        tails = sorted(xfer.tails, key=lambda t: t.start)
        for tail in tails:
            await tail.done.wait()
        xfer.tails.clear()
        part.stop = None
        if any(t.error is not None or t.sink.offset < t.sink.stop for t in tails):
            log.warning("tail_range_failed", file=xfer.task.rel_path, offset=part.offset)
            return  # the main stream fetches the rest itself, over whatever the tails wrote
        part.unhashed_from = part.offset  # hashed from disk, in order, by the finish step
        part.offset = part._disk_offset = tails[-1].sink.stop

    async def _start_over(self, xfer: Transfer) -> None:
        """Throw the .part away: no helper may still write into it, and it is one prefix again."""
        await self._drop_tails(xfer)
        self.counters.restarts += 1
        await xfer.part.restart()
        split_marker(xfer.part_path).unlink(missing_ok=True)
        xfer.split_marked = False

    async def _drop_tails(self, xfer: Transfer) -> None:
        """Stop every helper of this file and wait until none can write into its .part."""
        with anyio.CancelScope(shield=True):
            for tail in xfer.tails:
                tail.scope.cancel()
            for tail in xfer.tails:
                await tail.done.wait()
        xfer.tails.clear()
        xfer.part.stop = None

    async def _fetch_segment(self, xfer: Transfer, sink: PartFile, stop: int | None) -> bool:
        """One request from the sink's offset up to `stop` (exclusive; None = unknown end).
        True when the server says the file ended."""
        start = sink.offset
        headers = {"Accept-Encoding": "identity"}
        ranged = isinstance(sink, RangeSink) or not (start == 0 and (stop is None or stop <= self.planner.next_size()))
        if ranged:
            end = "" if stop is None else str(min(stop, start + self.planner.next_size()) - 1)
            headers["Range"] = f"bytes={start}-{end}"
        xfer.requests += 1
        self.counters.requests += 1
        async with self.client.request("GET", xfer.task.url, headers=headers, auto_decompress=False) as resp:
            if resp.status == 416 and xfer.size is not None and start >= xfer.size:
                return True
            if resp.status == 416:
                raise FileChanged(f"416 for bytes {start}- of a {xfer.size}-byte file: the file changed")
            await raise_for_status(resp)
            if resp.status not in (200, 206):
                raise PlatformError(resp.status, "unexpected status for a file download", url=xfer.task.url)
            skip, expected, total = self._plan_body(xfer, resp, ranged, start)
            if skip and resp.status == 200 and not isinstance(sink, RangeSink):
                # Range ignored: start the file over, from this very body (no new request).
                log.info("range_ignored_starting_over", file=xfer.task.rel_path, offset=start)
                await self._start_over(xfer)
                stop = xfer.size  # the whole file now, not where a dropped tail began
                skip = 0
            if total is not None:
                if xfer.size is None:
                    xfer.size = total
                elif total != xfer.size:
                    raise FileChanged(f"the server now reports {total} bytes, the listing said {xfer.size}")
            xfer.claims += digest_claims(resp.headers, full_body=resp.status == 200)
            t0, fetched = time.monotonic(), xfer.fetched
            main = not isinstance(sink, RangeSink)
            if main and xfer.size is not None:
                self._streams.add(xfer)
            try:
                received = await self._stream(xfer, sink, resp, skip, stop)
            finally:  # a cut response still tells us the connection's rate
                self._streams.discard(xfer)
                self.planner.observe(xfer.fetched - fetched, time.monotonic() - t0)
        if received is not None and expected is not None and received < expected:
            raise TransferError(f"body ended after {received} of {expected} bytes")
        return not ranged or (stop is not None and sink.offset >= stop)

    def _plan_body(self, xfer: Transfer, resp, ranged: bool, start: int) -> tuple[int, int | None, int | None]:
        """(bytes to skip, body length expected, file total) for this response."""
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            first, last, total = parse_content_range(resp.headers.get("Content-Range"))
            if first > start:
                raise TransferError(f"server sent bytes from {first}, we need {start}")
            return start - first, last - first + 1, total
        # 200: the whole file; if we asked for a range from the middle, the server ignored it.
        # The caller starts the file over from this body (or, for one of several parallel
        # ranges, skips to its start). A total unlike the listing still means the file changed.
        if ranged and start > 0:
            self.counters.ignored_ranges += 1
        return (start if ranged else 0), expected, expected

    async def _stream(self, xfer: Transfer, part: PartFile, resp, skip: int, limit: int | None) -> int | None:
        """The hot loop: append chunks, flush when the buffer is full.

        Returns body bytes read, or None when a range's end was reached before the body's."""
        counters = self.counters
        received = 0
        check_magic = part.offset == 0 and xfer.task.is_parquet
        in_range = isinstance(part, RangeSink)
        async for chunk, _ in resp.content.iter_chunks():
            received += len(chunk)
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            if check_magic:
                if not chunk.startswith(PARQUET_MAGIC[: len(chunk)]):
                    raise TransferError(f"the body is not parquet data (Content-Type {resp.headers.get('Content-Type')})")
                check_magic = False
            if part.stop is not None:
                limit = part.stop  # a range's end, or where a helper took over this file's tail
            if limit is not None and part.offset + len(chunk) > limit:
                if not in_range and part.stop is None:
                    raise FileChanged("the server sent more bytes than the file has")
                chunk = chunk[: limit - part.offset]  # more than this range needs: stop here
                counters.bytes_fetched += len(chunk)
                xfer.fetched += len(chunk)
                part.add(chunk)
                await part.flush()
                return None
            counters.bytes_fetched += len(chunk)
            xfer.fetched += len(chunk)
            if part.add(chunk):
                await part.flush()
        return received

    def _verify_part(self, xfer: Transfer, part_path: Path, sha: str) -> int | None:
        """Everything that must hold before the rename; raises IntegrityError."""
        size = os.fstat(xfer.part.fd).st_size
        if size != xfer.part.offset:
            raise IntegrityError(f"{part_path.name}: {size} bytes on disk, {xfer.part.offset} received")
        if xfer.task.size is not None and size != xfer.task.size:
            raise IntegrityError(f"{xfer.task.name}: {size} bytes, the listing said {xfer.task.size}")
        check_digests(part_path, sha, xfer.claims)
        rows = None
        if xfer.task.is_parquet and self.export.verify_parquet:
            rows = parquet_rows(part_path, deep=self.export.deep_verify)
        if self.export.fsync:
            os.fsync(xfer.part.fd)
        return rows

    def _record(self, task: FileTask, final: Path, size: int, sha: str, rows: int | None) -> None:
        self.journal.record(Verified(task.rel_path, size, sha, rows, final.stat().st_mtime_ns))


def _sums_entry(final: Path, task: FileTask) -> str | None:
    """The file's line in its batch's SHA256SUMS (written by an earlier run), if any."""
    batch_folder = final.parents[len(Path(task.rel_in_batch).parts) - 1]
    try:
        text = (batch_folder / "SHA256SUMS").read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if sep and name == task.rel_in_batch:
            return digest
    return None


