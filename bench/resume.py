"""The resume profile: `kill -9` a tool at half the bytes, run the same command again, count what was refetched.

The fake counts every body byte it sends per file (before the bytes leave, on the paced path the
resume profile uses), so the harness knows, without trusting the tool:

- when half of the export's bytes have been served in this run: the tool is then killed with SIGKILL;
- how many bytes each file was served over both runs. Whatever a file was served beyond its own
  size was fetched twice: `refetched_bytes` is the sum of that over the files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .harness import ExpectedFile, Fake, RunResult

POLL_S = 0.05  # counter reads while the counters still move after the kill
SETTLE_S = 0.3  # counters unchanged this long: the killed tool's connections are gone


def file_key(e: ExpectedFile) -> str:
    """The fake's per-file counter key."""
    return f"{e.dataset_file_id}/{e.name}"


def served(before: dict[str, Any], after: dict[str, Any], expected: list[ExpectedFile]) -> dict[str, int]:
    """Body bytes served per expected file between two counter snapshots."""
    b, a = before.get("bytes_by_file", {}), after.get("bytes_by_file", {})
    return {file_key(e): a.get(file_key(e), 0) - b.get(file_key(e), 0) for e in expected}


def refetched_bytes(before: dict[str, Any], after: dict[str, Any], expected: list[ExpectedFile]) -> int:
    """Bytes served beyond one copy of each file between the snapshots (never negative per file)."""
    per_file = served(before, after, expected)
    return sum(max(0, per_file[file_key(e)] - e.size) for e in expected)


@dataclass
class HalfBytes:
    """The interrupt condition: true once `threshold` bytes were served since `start` (a counter value)."""

    fake: Fake
    start: int
    threshold: float
    seen: int = 0  # bytes served in this run when the condition first held
    polls: int = field(default=0, repr=False)

    def __call__(self) -> bool:
        self.polls += 1
        now = self.fake.counters()["bytes_sent"] - self.start
        if now >= self.threshold and not self.seen:
            self.seen = now
        return now >= self.threshold


def settled(fake: Fake, limit_s: float = 5.0) -> dict[str, Any]:
    """The counters once they stop moving (the fake notices a killed client's sockets a little late)."""
    last = fake.counters()
    stable_since = time.monotonic()
    deadline = stable_since + limit_s
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        now = fake.counters()
        if now["bytes_sent"] != last["bytes_sent"]:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= SETTLE_S:
            break
    return last


@dataclass
class Outcome:
    first: RunResult  # the killed run
    second: RunResult  # the same command again
    killed_at_bytes: int  # served in the first run when the kill was asked for
    first_bytes: int  # served in the first run, all told
    second_bytes: int
    refetched_bytes: int
    problem: str | None  # why the kill did not land where it meant to, if it did not


def kill_then_rerun(run: Callable[[Callable[[], bool] | None], RunResult], fake: Fake,
                    expected: list[ExpectedFile]) -> Outcome:
    """Run once with a kill at half the bytes, then again to completion; the figures of both."""
    total = sum(e.size for e in expected)
    c0 = fake.counters()
    trigger = HalfBytes(fake, c0["bytes_sent"], total / 2)
    first = run(trigger)
    c1 = settled(fake)
    second = run(None)
    c2 = fake.counters()
    return Outcome(first, second, trigger.seen, c1["bytes_sent"] - c0["bytes_sent"], c2["bytes_sent"] - c1["bytes_sent"],
                   refetched_bytes(c0, c2, expected), kill_problem(first, trigger.seen, total))


def kill_problem(first: RunResult, killed_at: int, total: int) -> str | None:
    """None when the first run died of our SIGKILL part-way through the bytes, else what went wrong."""
    if not first.interrupted:
        return f"the first run was not killed (rc={first.rc}, {killed_at} of {total} bytes when asked)"
    if first.rc != -9:
        return f"the first run ended rc={first.rc}, not by SIGKILL"
    if not 0 < killed_at < total:
        return f"kill asked at {killed_at} of {total} bytes: not part-way"
    return None
