"""Filling claims: ranged requests sized to the response-time limit, the hot loop, the buffer.

A stream fills one claim with as many requests as it takes (the retry loop continues a cut
response at once from the bytes held), then takes the next missing range of its file. Bytes are
coalesced in a buffer and flushed by size or by age (whichever comes first), so a kill loses at
most about a second of transfer per connection; the control file follows each flush.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .. import limits
from ..checks.integrity import PARQUET_MAGIC, DigestClaim, digest_claims
from ..config import ExportSettings
from ..errors import FileChanged, PlatformError, RequestLimit, Throttled, TransferError, UnusableBody, excerpt
from ..model import Counters, FileTask
from ..pieces import Claim, Download
from ..platform.client import PlatformClient, raise_for_status
from ..retry import MIN_PROGRESS, Budget, RetryPolicy, SpeedWindow, describe, request_ceiling
from ..validators import Validator, changed, read_held
from .scheduler import Scheduler

if TYPE_CHECKING:
    from ..output.destination import Target

log = structlog.get_logger("aep_export.transfer")

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
FLUSH_AGE = 0.1  # seconds a received byte may wait in memory before it is written (what a kill -9 can lose)
_IOV_MAX = 512  # chunks per write
_MAX_LEAD = 1 << 20  # body bytes before a resume window a response may carry (read, not streamed)
_QUOTED = 32  # bytes of an unusable body quoted in its error
# Bytes per socket read of a body (asyncio reads 256 KiB): each chunk costs aiohttp's parser, its
# read timer, a wake-up of the stream and a hash call, so a quarter of the chunks per GiB.
_READ_SIZE = 1 << 20


@dataclass(eq=False)
class FileJob:
    """One file's transfer at run time: its model, its target and what its requests cost."""

    task: FileTask
    download: Download
    target: Target
    budget: Budget
    tg: Any = None  # the task group its streams run in
    fetched: int = 0
    requests: int = 0
    split: bool = False  # another stream joined at least once
    handed: int = 0  # connections given to helpers that have not started yet (returned if they never do)
    digests: list[DigestClaim] = field(default_factory=list)
    last_failure: str = ""  # what the latest failed request got, for the error that ends the file
    warned: bool = False  # an unusable body was logged at warning level once


@dataclass
class _Buffer:
    """One stream's bytes on their way to the destination, and what its requests gained."""

    chunks: list[bytes] = field(default_factory=list)
    pending: int = 0
    since: float = field(default_factory=time.monotonic)
    kept: int = 0  # the furthest end of checked bytes written: progress, never counted twice
    busy: float = 0.0  # seconds spent in our own flushes and bandwidth waits (not the server's slowness)
    flushing: float = 0.0  # when the flush or bandwidth wait under way started (0: none)
    skipped: int = 0  # body bytes read and skipped (a 200 for a range)
    short: bytes = b""  # a whole body too short to check (shorter than the parquet magic)


@dataclass
class SegmentPlanner:
    """Sizes ranged requests so each finishes in about `target_s` at the measured per-connection rate."""

    target_s: float
    minimum: int = 1 << 20
    maximum: int = 1 << 30
    initial: int = 64 << 20
    rate: float | None = None  # bytes/s per connection, smoothed

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


class Fetcher:
    def __init__(self, client: PlatformClient, export: ExportSettings, policy: RetryPolicy, counters: Counters,
                 scheduler: Scheduler[FileJob]):
        self.client = client
        self.policy = policy
        self.counters = counters
        self.scheduler = scheduler
        self.planner = SegmentPlanner(target_s=export.response_time_limit * 0.5)
        self.buffer_limit = export.write_buffer
        self.max_file_requests = export.max_file_requests
        self.lowest_speed, self.lowest_speed_time = export.lowest_speed, export.lowest_speed_time
        self.bandwidth = limits.bandwidth(export.bwlimit)  # one bucket for every stream of the run; None: no cap

    async def run_stream(self, job: FileJob, claim: Claim | None, *, holds_connection: bool = False) -> None:
        """One connection's work for a file: its claim, then whatever is left unclaimed."""
        if holds_connection:
            job.handed -= 1  # this stream owns the connection now (no await before this line)
            try:  # it may write past the held prefix: the control file must say so first
                with anyio.CancelScope(shield=True):
                    await job.target.checkpoint(job.download)
            except BaseException:
                self.scheduler.connections.release()
                raise
        if not holds_connection:
            await self.lend()  # a file starting alone on idle connections is split at once
        while claim is not None:
            try:
                await self._fill(job, claim, holds_connection)
            finally:
                job.download.release(claim)
            holds_connection = False
            claim = job.download.next_claim()
        await self.lend()  # this connection is free: the largest range still being fetched can use it

    async def _fill(self, job: FileJob, claim: Claim, holds_connection: bool) -> None:
        buf = _Buffer(kept=claim.flushed)
        held = [holds_connection]

        async def attempt() -> None:
            kept = buf.kept
            try:
                if held[0]:  # a helper starts with the connection it was given
                    held[0] = False
                    try:
                        await self._request(job, claim, buf)
                    finally:
                        self.scheduler.connections.release()
                else:
                    async with self.scheduler.connections:
                        await self._request(job, claim, buf)
            except Exception as exc:
                job.last_failure = describe(exc)
                if isinstance(exc, UnusableBody) and not job.warned:  # once per file; retries log at info
                    job.warned = True
                    log.warning("unusable_response", file=job.task.rel_path, error=job.last_failure)
                raise
            if buf.kept == kept and (claim.stop is None or claim.pos < claim.stop):
                job.last_failure = "a response ended without a byte that could be kept"
                raise TransferError(job.last_failure)  # a failed attempt, whatever the reason

        try:
            while claim.stop is None or claim.pos < claim.stop:
                # progress: checked bytes kept (not bytes received), at least MIN_PROGRESS of them
                await self.policy.run(attempt, what=job.task.rel_path, progress=lambda: buf.kept, budget=job.budget,
                                      min_progress=MIN_PROGRESS)
        finally:
            if held[0]:
                self.scheduler.connections.release()

    async def _request(self, job: FileJob, claim: Claim, buf: _Buffer) -> None:
        """One request on a connection held; its answer tells the pool whether the gateway throttles."""
        pool = self.scheduler.connections
        ticket = pool.epoch
        try:
            await self._segment(job, claim, buf)
        except Throttled:
            pool.throttled(ticket)
            raise
        pool.accepted(ticket)

    async def _segment(self, job: FileJob, claim: Claim, buf: _Buffer) -> None:
        """One request from the claim's position to its end (or a response-limit-sized part)."""
        start, size = claim.pos, job.download.size
        headers = {"Accept-Encoding": "identity"}
        lead = job.download.window_before(start)  # held bytes before `start` to ask again and compare
        ranged = lead > 0 or not (start == 0 and claim.stop == size and (size is None or size <= self.planner.next_size()))
        if ranged:
            end = "" if claim.stop is None else str(min(claim.stop, start + self.planner.next_size()) - 1)
            headers["Range"] = f"bytes={start - lead}-{end}"
            headers.update(if_range(job))
        self._count_request(job)
        url = await job.task.current_url()
        async with self.client.request("GET", url, headers=headers, auto_decompress=False) as resp:
            try:
                plan = await self._accept(job, claim, resp, ranged, start, headers.get("If-Range"))
            except FileChanged:
                await _refuse_unusable(job, resp)  # an error page is not a new version of the file
                raise
            if plan is None:
                return
            skip, expected = plan
            if job.download.window_before(start):  # still asked for (a 200 may have started the file over)
                skip, expected = await self._confirm_lead(job, resp, start, skip, expected)
            _widen_reads(resp)
            t0, before = time.monotonic(), job.fetched
            buf.short = b""
            try:
                received = await self._pump_watched(job, claim, buf, resp, skip)
            finally:
                await self._flush(job, claim, buf, final=True)
                self.planner.observe(job.fetched - before, time.monotonic() - t0)
        if received is not None and buf.short:
            raise UnusableBody(f"not parquet: the whole body is {excerpt(buf.short)}")
        if received is not None and expected is not None and received < expected:
            raise TransferError(f"body ended after {received} of {expected} bytes")
        if received is not None and claim.stop is None:  # unknown length: the body's end is the file's
            job.download.size = claim.stop = claim.pos

    def _count_request(self, job: FileJob) -> None:
        """One more request for this file, unless it has cost its ceiling already."""
        ceiling = request_ceiling(self.max_file_requests, job.download.size)
        if job.requests >= ceiling:
            raise RequestLimit(f"{job.requests} requests without finishing the file (export.max_file_requests allows "
                               f"{ceiling} for it); the last failure: {job.last_failure or 'none'}")
        job.requests += 1
        self.counters.requests += 1

    async def _pump_watched(self, job: FileJob, claim: Claim, buf: _Buffer, resp: Any, skip: int) -> int | None:
        """The hot loop under the low-speed limit: a timer cuts a response too slow for too long
        (the loop itself pays nothing per chunk for it)."""
        if not self.lowest_speed:
            return await self._pump(job, claim, buf, resp, skip)
        start = claim.pos + buf.skipped
        window = SpeedWindow(self.lowest_speed, self.lowest_speed_time, _response_clock(buf))
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        with anyio.CancelScope() as scope:
            def check() -> None:
                nonlocal timer
                if window.too_slow(_response_clock(buf), claim.pos + buf.skipped - start):
                    scope.cancel()
                else:
                    timer = loop.call_later(window.step, check)

            timer = loop.call_later(window.step, check)
            try:
                return await self._pump(job, claim, buf, resp, skip)
            finally:
                timer.cancel()
        # only the timer cancels this scope: the response was too slow
        raise TransferError(f"slower than {self.lowest_speed} bytes/s for {self.lowest_speed_time:g} s "
                            f"(export.lowest_speed): {claim.pos + buf.skipped - start} bytes in "
                            f"{_response_clock(buf) - window.started:.1f} s")

    async def _pump(self, job: FileJob, claim: Claim, buf: _Buffer, resp: Any, skip: int) -> int | None:
        """The hot loop. Returns the body bytes read, or None when the claim ended first."""
        limit, bandwidth = self.buffer_limit, self.bandwidth
        received = 0
        async for chunk, _ in resp.content.iter_chunks():
            received += len(chunk)
            if bandwidth is not None:  # export.bwlimit: unread bytes wait in the socket, the server slows down
                await _metered(bandwidth, buf, len(chunk))
            if skip:
                buf.skipped += min(skip, len(chunk))  # only while skipping: the speed check counts them
                if received == len(chunk) and resp.status == 200 and job.task.is_parquet:
                    _raise_unusable(chunk)  # a 200 is the file from its first byte, even when skipped
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            stop = claim.stop  # a helper may have taken the rest of this claim meanwhile
            if stop is not None and claim.pos + len(chunk) >= stop:
                if claim.pos + len(chunk) > stop == job.download.size:
                    raise FileChanged("the server sent more bytes than the file has")
                self._take(job, claim, buf, chunk[: stop - claim.pos])
                return None
            self._take(job, claim, buf, chunk)
            if buf.pending >= limit or len(buf.chunks) >= _IOV_MAX or time.monotonic() - buf.since >= FLUSH_AGE:
                await self._flush(job, claim, buf)
        return received

    def _take(self, job: FileJob, claim: Claim, buf: _Buffer, chunk: bytes) -> None:
        n = len(chunk)
        buf.chunks.append(chunk)
        buf.pending += n
        claim.pos += n
        job.fetched += n
        self.counters.bytes_fetched += n

    async def _flush(self, job: FileJob, claim: Claim, buf: _Buffer, final: bool = False) -> None:
        """Write the buffer, extend the hash (the target persists progress when due); then lend
        free connections. `final`: no more bytes of this response will come."""
        if buf.chunks:
            chunks, offset = buf.chunks, claim.flushed
            if offset == 0 and job.task.is_parquet and not _head_checked(claim, buf, final):
                return  # too few bytes to check yet: they wait for the next ones
            buf.chunks, buf.pending = [], 0
            buf.flushing = time.monotonic()
            with anyio.CancelScope(shield=True):  # what arrived is kept, even when cancelled
                await job.target.flush(offset, chunks, job.download)  # and progress persisted when due
                claim.flushed = offset + sum(map(len, chunks))
            buf.kept = max(buf.kept, claim.flushed)
            buf.busy += time.monotonic() - buf.flushing  # the speed check leaves our own time out
            buf.flushing = 0.0
        buf.since = time.monotonic()
        await self.lend()

    async def lend(self) -> None:
        """Start a stream for each piece of work the scheduler gives free connections (at once:
        a job the scheduler lists still has its task group)."""
        for job, claim in self.scheduler.lend():
            log.info("stream_added", file=job.task.rel_path, offset=claim.pos, bytes=claim.remaining)
            self.counters.split_files += not job.split
            self.counters.tail_splits += 1
            job.split = True
            job.handed += 1
            job.tg.start_soon(partial(self.run_stream, job, claim, holds_connection=True))

    async def _accept(self, job: FileJob, claim: Claim, resp: Any, ranged: bool, start: int,
                      sent_if_range: str | None = None) -> tuple[int, int | None] | None:
        """Check a response against the claim: (body bytes to skip, body length), or None when
        the server says there is nothing at this offset because the file ended. A response of
        another version of the file than the held bytes starts the file over."""
        download = job.download
        if resp.status == 416:
            if download.size is not None and start >= download.size:
                claim.stop = claim.pos
                return None
            raise FileChanged(f"416 for bytes {start}- of a {download.size}-byte file: the file changed")
        await raise_for_status(resp)
        if resp.status not in (200, 206):
            raise PlatformError(resp.status, "unexpected status for a file download", url=job.task.url)
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            first, last, total = parse_content_range(resp.headers.get("Content-Range"))
            if first > start:
                raise TransferError(f"server sent bytes from {first}, we need {start}")
            skip, expected = start - first, last - first + 1
        else:  # the whole file, whatever we asked for
            total, skip = expected, (start if ranged else 0)
        if total is not None:
            if download.size is None:
                download.size = total
                claim.stop = total if claim.stop is None else claim.stop
            elif total != download.size:
                raise FileChanged(f"the server now reports {total} bytes, the listing said {download.size}")
        seen = Validator.of(resp.headers)
        reason = changed(job.target.validator, seen)
        if sent_if_range and resp.status == 200 and seen != job.target.validator:
            reason = reason or f"it answered If-Range: {sent_if_range} with the whole file"
        if reason:
            if resp.status != 200 or job.download.claims != [claim]:
                raise FileChanged(f"the file changed on the server: {reason}")
            log.warning("file_changed_starting_over", file=job.task.rel_path, reason=reason)
            skip = await self._start_over(job, claim)  # this body is the new file
        elif skip and resp.status == 200:
            skip = await self._range_ignored(job, claim)
        await self._keep_validator(job, seen)
        job.digests += digest_claims(resp.headers, full_body=resp.status == 200)
        return skip, expected

    async def _keep_validator(self, job: FileJob, seen: Validator | None) -> None:
        """The server's validator, once no held byte is left unconfirmed, is kept with the held
        bytes (the control file): a rerun after a crash asks with If-Range."""
        if seen is not None and job.target.validator is None and not job.download.unconfirmed:
            job.target.validator = seen
            await job.target.checkpoint(job.download)

    async def _confirm_lead(self, job: FileJob, resp: Any, start: int, skip: int, expected: int | None) -> tuple[int, int | None]:
        """The held bytes before `start` came again at the head of the body: compare them before
        writing after them. Returns the plan for the rest of the body."""
        lead = job.download.window_before(start)
        window = await self.read_window(job, resp, start - skip, expected, start - lead, start)
        await self.confirm(job, (start - lead, start), window)
        await self._keep_validator(job, Validator.of(resp.headers))
        return 0, None if expected is None else expected - skip

    async def confirm_tail(self, job: FileJob) -> None:
        """The held run that ends the file has no stream after it: its first bytes are asked again
        alone, before a byte is written in front of them."""
        window = job.download.tail_window()
        if window is None:
            return
        start, end = window
        probe = Claim(start, end)  # not one of the file's claims: nothing is written from it

        async def attempt() -> None:
            headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}", **if_range(job)}
            self._count_request(job)
            url = await job.task.current_url()
            async with self.scheduler.connections, \
                    self.client.request("GET", url, headers=headers, auto_decompress=False) as resp:
                skip, expected = await self._accept(job, probe, resp, True, start, headers.get("If-Range")) or (0, 0)
                data = await self.read_window(job, resp, start - skip, expected, start, end)
            await self.confirm(job, window, data)

        await self.policy.run(attempt, what=job.task.rel_path, budget=job.budget)

    async def read_window(self, job: FileJob, resp: Any, body_start: int, expected: int | None, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file from the head of a body that begins at `body_start`."""
        if resp.status != 206 or not 0 <= start - body_start <= _MAX_LEAD:
            raise FileChanged(f"cannot confirm the held bytes at {start}: "
                              f"the server answered {resp.status} from byte {body_start}")
        n = end - body_start if expected is None else min(end - body_start, expected)
        try:
            head = await resp.content.readexactly(n)
        except asyncio.IncompleteReadError:
            raise TransferError("the body ended inside the bytes asked again to confirm the held ones") from None
        job.fetched += n
        self.counters.bytes_fetched += n
        if self.bandwidth is not None:
            await self.bandwidth.take(n)
        if n < end - body_start:
            raise TransferError(f"the server sent {n} bytes, short of the {end - start} asked again at {start}")
        return bytes(head[start - body_start:])

    async def confirm(self, job: FileJob, window: tuple[int, int], data: bytes) -> None:
        """Held bytes must equal the server's: else the file changed since they were fetched."""
        held = await anyio.to_thread.run_sync(read_held, job.target.read_into, *window, limiter=self.scheduler.disk)
        if held != data:
            raise FileChanged(f"the file changed on the server: the held bytes {window[0]}-{window[1] - 1} differ from its bytes")
        job.download.confirmed(*window)

    async def _range_ignored(self, job: FileJob, claim: Claim) -> int:
        """A 200 to a ranged request: the whole file is coming. A lone stream starts the file over
        from this very body (no request thrown away); one of several skips to its own start."""
        self.counters.ignored_ranges += 1
        if job.download.claims != [claim]:
            return claim.pos
        log.info("range_ignored_starting_over", file=job.task.rel_path, offset=claim.pos)
        return await self._start_over(job, claim)

    async def _start_over(self, job: FileJob, claim: Claim) -> int:
        """A lone stream's 200: start the file over from this very body (no request thrown away)."""
        self.counters.restarts += 1
        await job.target.restart()
        job.download.restart(job.download.size)
        claim.pos = claim.flushed = 0
        claim.stop = job.download.size
        return 0


def if_range(job: FileJob) -> dict[str, str]:
    """If-Range for a ranged request, when a validator identifies the bytes held."""
    value = job.target.validator.if_range() if job.target.validator is not None else None
    return {"If-Range": value} if value else {}


def _head_checked(claim: Claim, buf: _Buffer, final: bool) -> bool:
    """The parquet magic on a file's first bytes, judged once there are enough of them (a first
    chunk of 2 bytes waits for the next). Raises UnusableBody; bytes that fail are dropped."""
    head = _head(buf.chunks, _QUOTED)
    if len(head) < len(PARQUET_MAGIC) and PARQUET_MAGIC.startswith(head):  # too few bytes to tell
        if final:  # the body ended or broke first: nothing was checked, nothing is kept
            buf.short = head
            _drop(claim, buf)
        return False
    if not head.startswith(PARQUET_MAGIC):
        _drop(claim, buf)
        _raise_unusable(head)
    return True


def _raise_unusable(head: bytes) -> None:
    """UnusableBody, quoting them, when a file's first bytes are not parquet (too few to tell pass)."""
    if not (head.startswith(PARQUET_MAGIC) or (len(head) < len(PARQUET_MAGIC) and PARQUET_MAGIC.startswith(head))):
        raise UnusableBody(f"not parquet: starts with {excerpt(head[:_QUOTED])}")


async def _refuse_unusable(job: FileJob, resp: Any) -> None:
    """Look at the first bytes of a 200 for a parquet file before taking it for another version
    of the file: an error page with its own length is an unusable body, quoted."""
    if resp.status != 200 or not job.task.is_parquet:
        return
    head = b""
    while len(head) < len(PARQUET_MAGIC):  # a first read may bring fewer bytes
        more = await resp.content.read(_QUOTED - len(head))
        if not more:
            break
        head += more
    if head:
        _raise_unusable(head)


def _widen_reads(resp: Any) -> None:
    """Read the rest of this body (and later ones on the connection) _READ_SIZE bytes a socket
    read. Only asyncio's plain socket transport has the knob; TLS and uvloop read in their own sizes."""
    transport: Any = getattr(resp.connection, "transport", None)  # None once the connection is gone
    if 0 < getattr(transport, "max_size", 0) < _READ_SIZE:
        transport.max_size = _READ_SIZE


def _drop(claim: Claim, buf: _Buffer) -> None:
    """Forget buffered bytes that failed a check: the claim resumes where its writes end."""
    buf.chunks, buf.pending = [], 0
    claim.pos = claim.flushed


async def _metered(bandwidth: limits.Bandwidth, buf: _Buffer, nbytes: int) -> None:
    """Wait for the bandwidth cap; the wait is our own time, left out of the speed check like a flush."""
    buf.flushing = time.monotonic()
    try:
        await bandwidth.take(nbytes)
    finally:
        buf.busy += time.monotonic() - buf.flushing
        buf.flushing = 0.0


def _response_clock(buf: _Buffer) -> float:
    """Seconds on the monotonic clock less those spent in our own flushes (finished or under way)."""
    now = time.monotonic()
    return now - buf.busy - (now - buf.flushing if buf.flushing else 0.0)


def _head(chunks: list[bytes], n: int = 4) -> bytes:
    head = b""
    for chunk in chunks:
        head += chunk[: n - len(head)]
        if len(head) >= n:
            break
    return head
