"""The one place for concurrency policy (s3transfer-style): connections on the wire, files in
flight, disk threads, streams per file, and when a free connection takes part of another file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ..config import ExportSettings

if TYPE_CHECKING:
    from .fetcher import FileJob
    from .pieces import Claim

SPLIT_MIN = 512 << 10  # each side of a split is at least this: worth a request of its own (measured: 1 MiB was 0.93x on big, 0.96x on skew)
MAX_WAYS = 16  # streams of one file at once


def pool_size(export: ExportSettings) -> int:
    """Keep-alive connections of the HTTP session: the downloads' plus two per discovery slot
    (a listing and a Catalog query at once) and a few for token refreshes."""
    return export.concurrency + 2 * export.discovery_concurrency + 4


class Scheduler:
    def __init__(self, export: ExportSettings):
        self.concurrency = export.concurrency
        # Requests on the wire: a stream holds a connection per request only, so a file being
        # verified, fsynced or renamed holds none.
        self.connections = anyio.Semaphore(export.concurrency)
        # Files in flight: twice the connections, so that while one file is being verified and
        # renamed another already uses its connection.
        self.workers = 2 * export.concurrency
        # Disk work (writes, hashing, verification) in its own thread budget.
        self.disk = anyio.CapacityLimiter(max(4, min(export.concurrency, 16)))
        self.discovery = anyio.CapacityLimiter(export.discovery_concurrency)
        self.queue_size = 4 * export.concurrency  # files listed ahead of the workers
        # Set by the coordinator: True when no file waits for a worker.
        self.queue_idle: Callable[[], bool] = lambda: False
        self.jobs: set[FileJob] = set()  # files whose streams are running (they can take helpers)
        self.files_in_flight = 0  # files a worker has taken and not finished (opening ones included)

    def lend(self) -> list[tuple[FileJob, Claim]]:
        """Work for free connections, each with the connection already taken (the new stream
        releases it after its first request): only when no file waits for a worker. Each goes to
        the largest range still being fetched, anywhere: it is split in two halves of at least
        SPLIT_MIN. The same rule splits a large file at the start and shares the last files' tails
        at the end of a run, and it reacts as soon as a connection is free."""
        if not self.queue_idle():
            return []
        lent: list[tuple[FileJob, Claim]] = []
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
