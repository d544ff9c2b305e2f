"""Progress on long work: a live line on a terminal, a periodic structured event otherwise."""

from __future__ import annotations

import sys
import time

import anyio
import structlog
from .model import Counters
from .report import human_bytes

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
    remaining = max(0, c.bytes_total - c.bytes_done - _in_flight(c))
    eta = f"{remaining / rate:,.0f}s" if rate > 0 and remaining else "-"
    failed = f" · {c.files_failed} failed" if c.files_failed else ""
    return (f"{human_bytes(c.bytes_done + _in_flight(c))} / {human_bytes(c.bytes_total)} · "
            f"{c.files_done}/{c.files_total} files · {human_bytes(rate)}/s · ETA {eta}{failed}")


def _in_flight(c: Counters) -> int:
    # bytes_fetched counts every received byte (also re-sent ones); close enough for a display
    return max(0, min(c.bytes_fetched, c.bytes_total) - c.bytes_done) if c.bytes_fetched else 0


async def show_progress(counters: Counters, *, live: bool, interval: float = 10.0) -> None:
    """Runs until cancelled."""
    meter = RateMeter()
    if live:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        console = Console(file=sys.stderr)
        with Live(Text(""), console=console, refresh_per_second=4, transient=True, redirect_stderr=True) as view:
            while True:
                view.update(Text("⬇ " + status_line(counters, meter.sample(counters.bytes_fetched))))
                await anyio.sleep(0.25)
    while True:
        await anyio.sleep(interval)
        rate = meter.sample(counters.bytes_fetched)
        log.info("progress", files_done=counters.files_done, files_total=counters.files_total,
                 bytes_done=counters.bytes_done, bytes_total=counters.bytes_total,
                 rate_bytes_s=int(rate), files_failed=counters.files_failed)
