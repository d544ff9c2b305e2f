"""Concurrency at run time (s3transfer-style): the pools (sized in engine/sizing.py), streams per
file, when a free connection takes part of another file, and how many connections the gateway's
answers allow (Connections: fewer on sustained throttling, more again once it accepts).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, Protocol, TypeVar

import anyio
import structlog

from .. import sizing
from ..config import ExportSettings
from ..pieces import Claim, Download

log = structlog.get_logger("aep_export.transfer")

SPLIT_MIN = 512 << 10  # each side of a split is at least this: worth a request of its own (measured: 1 MiB was 0.93x on big, 0.96x on skew)
MAX_WAYS = 16  # streams of one file at once


class Lendable(Protocol):
    """What the scheduler reads of a file being fetched (fetcher.FileJob): its claims, to split.
    Named here so that the scheduler does not import the fetcher that uses it."""

    @property
    def download(self) -> Download: ...


Job = TypeVar("Job", bound=Lendable)


class Connections:
    """Download requests on the wire: a semaphore whose size follows the gateway (AIMD, the rules
    in engine/sizing.py). A request throttled (429/503) twice in a row at one level halves the
    connections allowed; each round of accepted requests adds one back, up to export.concurrency.

    A request's ticket is the `epoch` when it started. Only throttles of requests sent at the current
    level count (the 429s of requests sent before a change were answered for by that change), and
    only accepted requests sent since the last lowering earn it back.
    Lowered while its permits are out, the pool keeps (does not hand on) that many releases.
    """

    def __init__(self, limit: int):
        self.limit = self.allowed = limit
        self.epoch = 0  # changes with `allowed`: a request's ticket
        self.changes = 0  # times `allowed` moved (for the run's figures)
        self._free = anyio.Semaphore(limit)
        self._owed = 0  # releases to keep: permits out when the pool was lowered
        self._strikes = 0  # throttled answers in a row at this level
        self._credit = 0  # accepted answers since the last change or throttle
        self._lowered_at = 0  # the epoch the last lowering began

    @property
    def value(self) -> int:
        """Connections free now."""
        return self._free.value

    @property
    def in_use(self) -> int:
        """Requests on the wire now (connections taken)."""
        return self.allowed + self._owed - self._free.value

    async def __aenter__(self) -> None:
        await self._free.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire_nowait(self) -> None:
        self._free.acquire_nowait()

    def release(self) -> None:
        if self._owed:
            self._owed -= 1
        else:
            self._free.release()

    def throttled(self, ticket: int) -> None:
        """A request sent with `ticket` was answered 429/503."""
        self._credit = 0
        if ticket != self.epoch:
            return
        self._strikes += 1
        if self._strikes >= sizing.THROTTLES_TO_LOWER and self.allowed > 1:
            self._resize(sizing.lowered(self.allowed), "the gateway keeps throttling")

    def accepted(self, ticket: int) -> None:
        """A request sent with `ticket` got its answer (not a throttle)."""
        if ticket == self.epoch:
            self._strikes = 0
        if ticket < self._lowered_at:
            return
        self._credit += 1
        if self.allowed < self.limit and self._credit >= sizing.accepted_to_raise(self.allowed):
            self._resize(self.allowed + 1, "the gateway accepts again")

    def _resize(self, allowed: int, why: str) -> None:
        was = self.allowed
        while self.allowed > allowed:
            if self._free.value:
                self._free.acquire_nowait()
            else:
                self._owed += 1
            self.allowed -= 1
        while self.allowed < allowed:
            self.release()
            self.allowed += 1
        self.epoch += 1
        self.changes += 1
        if allowed < was:
            self._lowered_at = self.epoch
        self._strikes = self._credit = 0
        (log.warning if allowed < was else log.info)("connections_changed", allowed=allowed, was=was, of=self.limit, why=why)


class Scheduler(Generic[Job]):
    def __init__(self, export: ExportSettings):
        self.concurrency = export.concurrency
        # Requests on the wire: a stream holds a connection per request only, so a file being
        # verified, fsynced or renamed holds none.
        self.connections = Connections(export.concurrency)
        self.workers = sizing.workers(export)
        self.disk = anyio.CapacityLimiter(sizing.disk_threads(export))
        self.discovery = anyio.CapacityLimiter(sizing.discovery_slots(export))
        self.queue_size = sizing.queue_size(export)
        # Set by the coordinator: True when no file waits for a worker.
        self.queue_idle: Callable[[], bool] = lambda: False
        self.jobs: set[Job] = set()  # files whose streams are running (they can take helpers)
        self.files_in_flight = 0  # files a worker has taken and not finished (opening ones included)

    def lend(self) -> list[tuple[Job, Claim]]:
        """Work for free connections, each with the connection already taken (the new stream
        releases it after its first request): only when no file waits for a worker. Each goes to
        the largest range still being fetched, anywhere: it is split in two halves of at least
        SPLIT_MIN. The same rule splits a large file at the start and shares the last files' tails
        at the end of a run, and it reacts as soon as a connection is free."""
        if not self.queue_idle():
            return []
        lent: list[tuple[Job, Claim]] = []
        ways = self.ways_per_file()
        candidates = {job for job in self.jobs if len(job.download.claims) < ways}
        while self.connections.value > 0 and candidates:
            job = max(candidates, key=lambda j: max((c.remaining for c in j.download.claims), default=0))
            claim = job.download.split_claim(SPLIT_MIN)
            if claim is None or len(job.download.claims) >= ways:
                candidates.discard(job)
            if claim is not None:
                self.connections.acquire_nowait()
                lent.append((job, claim))
        return lent

    def ways_per_file(self) -> int:
        """A fair share of the connections for each file in flight (so that files starting together
        split evenly), at most MAX_WAYS; the last files of a run get more as the others finish."""
        return min(MAX_WAYS, max(1, self.connections.allowed // max(1, self.files_in_flight)))

    def allowed_connections(self) -> int:
        """Connections the gateway's answers allow now (export.concurrency unless it throttled)."""
        return self.connections.allowed
