"""Progress on long work: a live display on a terminal (rich), a periodic structured event otherwise.

Both read the run's counters and the files in flight a few times a second; nothing here adds work
to the per-chunk path. Bytes done are the finished files' (downloaded or already verified) plus
what the files in flight hold, bytes an earlier run left included: the ETA is for what is left to
fetch, at the rate bytes are being fetched now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from .logs import Terminal
from .model import Counters
from .units import human_bytes

log = structlog.get_logger("aep_export.progress")

SHOWN_FILES = 4  # files in flight listed under the live line
NAME_WIDTH = 40  # a file name is shortened to this many characters


@dataclass(frozen=True)
class InFlight:
    name: str
    held: int  # bytes held now (an earlier run's included)
    size: int | None


FilesInFlight = Callable[[], Sequence[InFlight]]


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


@dataclass(frozen=True)
class Figures:
    """One reading of the run's progress."""

    done: int  # bytes done: finished files and what files in flight hold
    total: int
    files_done: int
    files_total: int
    failed: int
    rate: float
    elapsed: float
    resumed: int  # bytes earlier runs left that this one resumed from
    in_flight: tuple[InFlight, ...]

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0

    @property
    def eta(self) -> float | None:
        remaining = self.total - self.done
        return remaining / self.rate if self.rate > 0 and remaining > 0 else None


class Reader:
    """Reads counters and the files in flight into Figures; bytes done never go back (a file that
    leaves the in-flight set to be verified is counted again only once finished)."""

    def __init__(self, counters: Counters, in_flight: FilesInFlight | None = None):
        self.counters, self._in_flight = counters, in_flight
        self.meter = RateMeter()
        self.started = time.monotonic()
        self._done = 0

    def read(self) -> Figures:
        c = self.counters
        files = tuple(self._in_flight()) if self._in_flight else ()
        held = sum(min(f.held, f.size) if f.size is not None else f.held for f in files)
        self._done = max(self._done, min(c.bytes_total, c.bytes_done + held))
        return Figures(self._done, c.bytes_total, c.files_done, c.files_total, c.files_failed,
                       self.meter.sample(c.bytes_fetched), time.monotonic() - self.started, c.bytes_resumed, files)


def clock(seconds: float | None) -> str:
    """'1:05', '1:02:03'; '-' when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def done_line(f: Figures) -> str:
    """e.g. '45% · 1.2 GiB / 3.4 GiB · 120/380 files'."""
    return f"{f.percent:.0f}% · {human_bytes(f.done)} / {human_bytes(f.total)} · {f.files_done}/{f.files_total} files"


def pace_line(f: Figures) -> str:
    """e.g. '85.1 MiB/s · 0:12 elapsed · ETA 0:27 · 2 failed'."""
    failed = f" · {f.failed} failed" if f.failed else ""
    return f"{human_bytes(f.rate)}/s · {clock(f.elapsed)} elapsed · ETA {clock(f.eta)}{failed}"


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A long name's start and end around an ellipsis: where part files differ (part-00001-…) and their kind."""
    if len(name) <= width:
        return name
    head = (width - 1) * 3 // 8
    return name[:head] + "…" + name[-(width - 1 - head):]


def file_line(f: InFlight) -> str:
    if f.size:
        return f"{short_name(f.name)}  {100 * min(f.held, f.size) / f.size:3.0f}% of {human_bytes(f.size)}"
    return f"{short_name(f.name)}  {human_bytes(f.held)}"


async def show_progress(counters: Counters, *, live: bool, interval: float = 10.0, in_flight: FilesInFlight | None = None) -> None:
    """Runs until cancelled: on a terminal a rich Live display on stderr; otherwise a `progress` event every `interval`."""
    reader = Reader(counters, in_flight)
    if live:
        await _live(reader)
    while True:
        await anyio.sleep(interval)
        f = reader.read()
        log.info("progress", percent=round(f.percent, 1), files_done=f.files_done, files_total=f.files_total,
                 bytes_done=f.done, bytes_total=f.total, bytes_resumed=f.resumed, rate_bytes_s=int(f.rate),
                 elapsed_s=round(f.elapsed, 1), eta_s=None if f.eta is None else round(f.eta),
                 files_failed=f.failed, files_in_flight=len(f.in_flight),
                 in_flight=[x.name for x in f.in_flight[:SHOWN_FILES]])  # whole names: logs are read by tools


async def _live(reader: Reader) -> None:
    """The live display; log lines are printed above it through its console (logs.Terminal)."""
    from rich.console import Console  # only on a terminal: `--help` and scripts never load rich
    from rich.live import Live

    console = Console(file=Terminal.stream(), highlight=False)
    with Live(console=console, auto_refresh=False, transient=True, redirect_stdout=False, redirect_stderr=False) as live:
        Terminal.print_through(lambda line: console.print(_ansi(line), soft_wrap=True))
        try:
            while True:
                live.update(_render(reader.read()), refresh=True)
                await anyio.sleep(0.25)
        finally:
            Terminal.print_through(None)


def _ansi(line: str) -> Any:
    from rich.text import Text

    return Text.from_ansi(line)


def _render(f: Figures) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    head = Table.grid(padding=(0, 1))
    head.add_row("⬇", ProgressBar(total=max(f.total, 1), completed=f.done, width=20), Text(done_line(f), no_wrap=True, overflow="ellipsis"))
    pace = Text("  " + pace_line(f), no_wrap=True, overflow="ellipsis")
    files = [Text("  " + file_line(x), no_wrap=True, overflow="ellipsis") for x in f.in_flight[:SHOWN_FILES]]
    if len(f.in_flight) > SHOWN_FILES:
        files.append(Text(f"  … and {len(f.in_flight) - SHOWN_FILES} more files in flight", no_wrap=True))
    return Group(head, pace, *files)
