"""The one place for concurrency policy (s3transfer-style): connections on the wire, files in
flight, disk threads, streams per file, and when a free connection takes part of another file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ..config import ExportSettings

if TYPE_CHECKING:
    from .pieces import Claim, Download

SPLIT_MIN = 1 << 20  # each side of a split is at least this: worth a request of its own
MAX_WAYS = 8  # streams of one file at once


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
        # Set by the coordinator: True when no file waits for a worker.
        self.queue_idle: Callable[[], bool] = lambda: False
        self.files_in_flight = 0

    def helpers_for(self, download: Download) -> list[Claim]:
        """Claims for extra streams of this file, each with a connection already held (the
        caller releases it after its first request): only when no file waits for a worker and
        connections are free; at most a fair share of the connections per file in flight. The
        same rule splits a large file at the start and shares a running file's tail at the end."""
        if not self.queue_idle() or self.connections.value == 0:
            return []
        ways = min(MAX_WAYS, max(1, self.concurrency // max(1, self.files_in_flight)))
        claims = []
        while len(download.claims) < ways and self.connections.value > 0:
            claim = download.split_claim(SPLIT_MIN)
            if claim is None:
                break
            self.connections.acquire_nowait()
            claims.append(claim)
        return claims
