"""Progress on long work: a live line on a terminal, a periodic structured event otherwise."""

from __future__ import annotations

import time

import anyio
import structlog

from .logs import Terminal
from .model import Counters
from .units import human_bytes

log = structlog.get_logger("aep_export.progress")


class RateMeter:
    """Bytes/s smoothed over the last few samples."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), 0)
        self.rate = 0.0

    def sample(self, total: int) -> float:
        now = time.monotonic()
        t0, b0 = self._last
        if now - t0 >= 0.5:
            inst = (total - b0) / (now - t0)
            self.rate = inst if self.rate == 0 else 0.6 * self.rate + 0.4 * inst
            self._last = (now, total)
        return self.rate


def status_line(c: Counters, rate: float) -> str:
    """e.g. '1.2 GiB / 3.4 GiB · 120/380 files · 85.1 MiB/s · ETA 27s · 2 failed'."""
    done = min(c.bytes_total, c.bytes_done + _in_flight(c))
    remaining = max(0, c.bytes_total - done)
    eta = f"{remaining / rate:,.0f}s" if rate > 0 and remaining else "-"
    failed = f" · {c.files_failed} failed" if c.files_failed else ""
    return (f"{human_bytes(done)} / {human_bytes(c.bytes_total)} · {c.files_done}/{c.files_total} files · "
            f"{human_bytes(rate)}/s · ETA {eta}{failed}")


def _in_flight(c: Counters) -> int:
    """Bytes received for files not finished yet (approximate: re-sent bytes count too)."""
    return max(0, c.bytes_fetched - c.bytes_done) if c.bytes_fetched else 0


async def show_progress(counters: Counters, *, live: bool, interval: float = 10.0) -> None:
    """Runs until cancelled. On a terminal: one line redrawn in place on stderr (logs.Terminal)."""
    meter = RateMeter()
    if live:
        try:
            while True:
                Terminal.show_live("⬇ " + status_line(counters, meter.sample(counters.bytes_fetched)))
                await anyio.sleep(0.25)
        finally:
            Terminal.clear_live()
    while True:
        await anyio.sleep(interval)
        rate = meter.sample(counters.bytes_fetched)
        log.info("progress", files_done=counters.files_done, files_total=counters.files_total,
                 bytes_done=counters.bytes_done, bytes_total=counters.bytes_total,
                 rate_bytes_s=int(rate), files_failed=counters.files_failed)
