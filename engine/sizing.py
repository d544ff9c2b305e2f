"""The one place for pool sizing: connections on the wire, the HTTP session's keep-alive pool,
the S3 client's pool, files in flight, disk threads, discovery slots and the queue ahead of the
workers. The Scheduler (engine/transfer/scheduler.py) holds the pools at run time; the HTTP
session (platform/client.py) and the bucket (output/objectstore.py) are sized from here too.
"""

from __future__ import annotations

from .config import ExportSettings, StoreSettings


def http_pool(export: ExportSettings) -> int:
    """Keep-alive connections of the HTTP session: the downloads' plus two per discovery slot
    (a listing and a Catalog query at once) and a few for token refreshes."""
    return export.concurrency + 2 * export.discovery_concurrency + 4


def store_pool(export: ExportSettings, store: StoreSettings) -> int:
    """The S3 client's connections: one per download stream flushing, one per upload, and a few
    for listings and the batch files."""
    return export.concurrency + store.uploads + 4


def workers(export: ExportSettings) -> int:
    """Files in flight: twice the connections, so that while one file is being verified and
    renamed another already uses its connection."""
    return 2 * export.concurrency


def disk_threads(export: ExportSettings) -> int:
    """Disk work (writes, hashing, verification) in its own thread budget."""
    return max(4, min(export.concurrency, 16))


def discovery_slots(export: ExportSettings) -> int:
    """Datasets being discovered at once (a run's and `check`'s)."""
    return export.discovery_concurrency


def queue_size(export: ExportSettings) -> int:
    """Files listed ahead of the workers."""
    return 4 * export.concurrency


# Adaptive concurrency (AIMD, as TCP's congestion window): the gateway publishes no quota, so the
# download connections follow its answers, between 1 and export.concurrency (transfer/scheduler.py).
THROTTLES_TO_LOWER = 2  # throttled answers in a row at one level: one is a pause (Retry-After), two are too many connections


def lowered(allowed: int) -> int:
    """Multiplicative decrease: half the connections, never fewer than one."""
    return max(1, allowed // 2)


def accepted_to_raise(allowed: int) -> int:
    """Additive increase: one more connection after this many requests accepted (a round at this level)."""
    return allowed
