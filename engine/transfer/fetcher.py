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

from ..checks.integrity import PARQUET_MAGIC, DigestClaim, digest_claims
from ..config import ExportSettings
from ..errors import FileChanged, PlatformError, TransferError
from ..model import Counters, FileTask
from ..platform.client import PlatformClient, raise_for_status
from ..retry import Budget, RetryPolicy
from .pieces import Claim, Download
from .scheduler import Scheduler
from .validators import Validator, changed, read_held

if TYPE_CHECKING:
    from ..output.destination import Target

log = structlog.get_logger("aep_export.transfer")

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
FLUSH_AGE = 0.1  # seconds a received byte may wait in memory before it is written (what a kill -9 can lose)
_IOV_MAX = 512  # chunks per write
_MAX_LEAD = 1 << 20  # body bytes before a resume window a response may carry (read, not streamed)


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


@dataclass
class _Buffer:
    chunks: list[bytes] = field(default_factory=list)
    pending: int = 0
    since: float = field(default_factory=time.monotonic)


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
                 scheduler: Scheduler):
        self.client = client
        self.policy = policy
        self.counters = counters
        self.scheduler = scheduler
        self.planner = SegmentPlanner(target_s=export.response_time_limit * 0.5)
        self.buffer_limit = export.write_buffer

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
        buf = _Buffer()
        held = [holds_connection]

        async def attempt() -> None:
            if held[0]:  # a helper starts with the connection it was given
                held[0] = False
                try:
                    await self._segment(job, claim, buf)
                finally:
                    self.scheduler.connections.release()
            else:
                async with self.scheduler.connections:
                    await self._segment(job, claim, buf)

        try:
            while claim.stop is None or claim.pos < claim.stop:
                await self.policy.run(attempt, what=job.task.rel_path, progress=lambda: claim.pos, budget=job.budget)
        finally:
            if held[0]:
                self.scheduler.connections.release()

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
        job.requests += 1
        self.counters.requests += 1
        async with self.client.request("GET", job.task.url, headers=headers, auto_decompress=False) as resp:
            plan = await self._accept(job, claim, resp, ranged, start, headers.get("If-Range"))
            if plan is None:
                return
            skip, expected = plan
            if job.download.window_before(start):  # still asked for (a 200 may have started the file over)
                skip, expected = await self._confirm_lead(job, resp, start, skip, expected)
            t0, before = time.monotonic(), job.fetched
            try:
                received = await self._pump(job, claim, buf, resp, skip)
            finally:
                await self._flush(job, claim, buf)
                self.planner.observe(job.fetched - before, time.monotonic() - t0)
        if received is not None and expected is not None and received < expected:
            raise TransferError(f"body ended after {received} of {expected} bytes")
        if received is not None and claim.stop is None:  # unknown length: the body's end is the file's
            job.download.size = claim.stop = claim.pos

    async def _pump(self, job: FileJob, claim: Claim, buf: _Buffer, resp: Any, skip: int) -> int | None:
        """The hot loop. Returns the body bytes read, or None when the claim ended first."""
        limit = self.buffer_limit
        received = 0
        async for chunk, _ in resp.content.iter_chunks():
            received += len(chunk)
            if skip:
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

    async def _flush(self, job: FileJob, claim: Claim, buf: _Buffer) -> None:
        """Write the buffer, extend the hash (the target persists progress when due); then lend
        free connections."""
        if buf.chunks:
            chunks, offset = buf.chunks, claim.flushed
            buf.chunks, buf.pending = [], 0
            if offset == 0 and job.task.is_parquet and not _head(chunks).startswith(PARQUET_MAGIC):
                raise TransferError("the body is not parquet data (an error page?)")
            with anyio.CancelScope(shield=True):  # what arrived is kept, even when cancelled
                await job.target.flush(offset, chunks, job.download)  # and progress persisted when due
                claim.flushed = offset + sum(map(len, chunks))
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
            job.requests += 1
            self.counters.requests += 1
            async with self.scheduler.connections, \
                    self.client.request("GET", job.task.url, headers=headers, auto_decompress=False) as resp:
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
        if n < end - body_start:
            raise TransferError(f"the server sent {n} bytes, short of the {end - start} asked again at {start}")
        return head[start - body_start:]

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


def _head(chunks: list[bytes], n: int = 4) -> bytes:
    head = b""
    for chunk in chunks:
        head += chunk[: n - len(head)]
        if len(head) >= n:
            break
    return head
