"""Concurrency at run time (s3transfer-style): the pools (sized in engine/sizing.py), streams per
file, and when a free connection takes part of another file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import anyio

from .. import sizing
from ..config import ExportSettings
from ..pieces import Claim, Download

SPLIT_MIN = 512 << 10  # each side of a split is at least this: worth a request of its own (measured: 1 MiB was 0.93x on big, 0.96x on skew)
MAX_WAYS = 16  # streams of one file at once


class Lendable(Protocol):
    """What the scheduler reads of a file being fetched (fetcher.FileJob): its claims, to split.
    Named here so that the scheduler does not import the fetcher that uses it."""

    @property
    def download(self) -> Download: ...


Job = TypeVar("Job", bound=Lendable)


class Scheduler(Generic[Job]):
    def __init__(self, export: ExportSettings):
        self.concurrency = export.concurrency
        # Requests on the wire: a stream holds a connection per request only, so a file being
        # verified, fsynced or renamed holds none.
        self.connections = anyio.Semaphore(export.concurrency)
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
        return min(MAX_WAYS, max(1, self.concurrency // max(1, self.files_in_flight)))
