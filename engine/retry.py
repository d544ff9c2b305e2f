"""The one place for failure policy: what is retryable, how often and how long to wait, and
pool-wide back-off. Every retry loop takes its numbers from here or from the RetryPolicy built from
the settings (RetryPolicy.for_export): requests (RetryPolicy.run, the client's POST), connection
attempts (reach.py), the S3 client's own retries (output/bucket.py), a file fetched again
after failing verification or started over because it changed (transfer/download.py).

Back-off is exponential with full jitter (AWS architecture blog), capped. A throttling answer
(429/503) pauses the *whole* pool through the shared Pacer, unlike aria2 which aborts on 429 or
per-task retries that keep hammering a throttled gateway.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .errors import Failure, NotYet, RequestLimit, RetryableStatus, Throttled, TransferError, kind_of


def _log() -> Any:
    """This module's logger; structlog imported at the first retry (start-up time: config.py imports
    this module for MAX_ATTEMPTS before the run's token request, which leaves before structlog)."""
    import structlog

    return structlog.get_logger("aep_export.retry")


T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
THROTTLE_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER = 600.0  # never sleep longer than this on a server's word
# A failed attempt of a file stream counts as progress (continued at once, its failure count
# reset) only when it kept at least this many new checked bytes: a server that sends a few
# bytes and stalls, again and again, spends the failure budget with back-off instead.
MIN_PROGRESS = 64 << 10
REQUESTS_PER_BYTES = 256 << 10  # a file's request ceiling grows by one per this many bytes of it
MAX_ATTEMPTS = 8  # tries per request (export.max_attempts' default; the S3 client's too)
# Connection attempts to one host keep being retried for this long before the run stops:
# long enough to ride out a restarting gateway or a DNS blip, short enough to fail a bad URL fast.
UNREACHABLE_AFTER_S = 15.0


class RetrySettings(Protocol):
    """The settings the policy is made from (config.ExportSettings has them; config imports this
    module for MAX_ATTEMPTS, so the policy names only what it reads)."""

    @property
    def max_attempts(self) -> int: ...
    @property
    def max_file_attempts(self) -> int: ...
    @property
    def lowest_speed_time(self) -> float: ...
    @property
    def backoff_base(self) -> float: ...
    @property
    def backoff_cap(self) -> float: ...
INTEGRITY_REFETCHES = 2  # a file whose bytes fail verification is fetched again this often
MAX_RESTARTS = 3  # starts over because the server's file changed under us


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def is_retryable(exc: BaseException) -> bool:
    """Connection errors, timeouts, cut bodies and 429/5xx are worth another try; 4xx are not."""
    import aiohttp  # here, not at the top (start-up time): config.py imports this module for MAX_ATTEMPTS,
    # and the run's token request leaves before aiohttp is imported (platform/early_token.py); asyncio likewise

    return isinstance(
        exc,
        RetryableStatus | TransferError | NotYet | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError,
    )


@dataclass
class Pacer:
    """Shared gate: when the gateway throttles, every request waits until the pause is over."""

    throttled_count: int = 0
    paused_s: float = 0.0  # seconds the pool was held in all (overlapping pauses counted once): a metric
    _resume_at: float = 0.0

    def throttle(self, seconds: float) -> None:
        self.throttled_count += 1
        now = time.monotonic()
        resume_at = max(self._resume_at, now + seconds)
        self.paused_s += resume_at - max(self._resume_at, now)
        self._resume_at = resume_at

    async def wait(self) -> None:
        while (delay := self._resume_at - time.monotonic()) > 0:  # the deadline moves when another request is throttled
            import asyncio  # only when throttled (start-up time: see is_retryable)

            await asyncio.sleep(delay)


@dataclass
class RetryPolicy:
    max_attempts: int = MAX_ATTEMPTS
    base: float = 0.5
    cap: float = 30.0
    reach_budget: float = UNREACHABLE_AFTER_S  # seconds of failed connection attempts before PlatformUnreachable
    pacer: Pacer = field(default_factory=Pacer)
    rng: random.Random = field(default_factory=random.Random)
    retries: int = 0  # counted for the run report
    continuations: int = 0  # failures after progress, continued at once

    @classmethod
    def for_export(cls, export: RetrySettings) -> RetryPolicy:
        """The run's policy from its settings (a run and `check` alike)."""
        return cls(max_attempts=export.max_attempts, base=export.backoff_base, cap=export.backoff_cap)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**attempt))."""
        return self.rng.uniform(0, min(self.cap, self.base * (2**attempt)))

    def delay_for(self, exc: BaseException, attempt: int) -> float:
        """Honour Retry-After when the server gave one; throttling pauses the whole pool."""
        delay = self.backoff(attempt)
        if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
            delay = max(exc.retry_after, 0.0)
        if isinstance(exc, Throttled):
            # At least a small pause so a throttle without Retry-After still slows everyone.
            delay = max(delay, self.base)
            self.pacer.throttle(delay)
        return delay

    async def pause(self, exc: BaseException, attempt: int, **context: object) -> None:
        """Count a retry and wait before it (Retry-After, jittered back-off, pool throttle)."""
        await self._wait(exc, self.delay_for(exc, attempt), attempt, context)

    async def _wait(self, exc: BaseException, delay: float, attempt: int, context: dict[str, object]) -> None:
        if isinstance(exc, NotYet):  # polling, not a failure: not counted as a retry
            _log().info("waiting", state=str(exc), next_poll_s=round(delay, 2), **context)
        else:
            self.retries += 1
            _log().info("retrying", attempt=attempt, delay_s=round(delay, 2), error=describe(exc), **context)
        import asyncio  # only to wait (start-up time: see is_retryable)

        await asyncio.sleep(delay)

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        what: str,
        progress: Callable[[], int] | None = None,
        budget: Budget | None = None,
        deadline: float | None = None,
        min_progress: int = 1,
    ) -> T:
        """The one retry loop: call fn until it succeeds, fails for good, or runs out of tries.

        - progress: a failure after progress (a response cut by the gateway's time limit, a
          reset mid-body) continues at once, without back-off, and resets the count; progress
          is a count that grew by at least `min_progress` (less is a failure like any other);
        - budget: failures shared by every request of one file (all its streams);
        - deadline: poll until this monotonic time instead of counting attempts (fn raises
          NotYet while the awaited state is not reached).
        """
        failures = 0
        while True:
            await self.pacer.wait()
            mark = progress() if progress is not None else 0
            try:
                return await fn()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if progress is not None and progress() - mark >= min_progress:
                    self.continuations += 1
                    failures = 0
                    _log().debug("continuing", what=what, offset=progress(), cause=describe(exc))
                    continue
                failures += 1
                if budget is not None and budget.spend():
                    raise
                if deadline is None and failures >= self.max_attempts:
                    raise
                delay = self.delay_for(exc, failures)
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise  # give up now rather than after the deadline
                await self._wait(exc, delay, failures, {"what": what})


@dataclass
class Budget:
    """Failed requests one file may cost in all, across its streams and restarts."""

    limit: int
    spent: int = 0

    def spend(self) -> bool:
        """Count one failure; True when the budget is exhausted."""
        self.spent += 1
        return self.spent >= self.limit


def request_ceiling(max_file_requests: int, size: int | None) -> int:
    """Requests one file may cost in all (whatever each gained): a server that answers every
    request with a little progress never makes a file fetch forever."""
    return max_file_requests + (size or 0) // REQUESTS_PER_BYTES


class SpeedWindow:
    """The low-speed limit (aria2's --lowest-speed-limit, curl's --speed-limit/--speed-time): a
    response that brought fewer than `rate` bytes/s over the last `window` seconds is too slow.

    Judged CHECKS times per window from a timer, never per chunk, on the response's clock: the
    caller's own time (writes to a slow disk, a full spool) is left out of it. A stall is seen
    within a window and a quarter of its start.
    """

    CHECKS = 4

    def __init__(self, rate: int, window: float, start: float):
        self.rate, self.window, self.started = rate, window, start
        self.step = window / self.CHECKS
        self._marks: deque[tuple[float, int]] = deque([(start, 0)])  # (response clock, bytes)

    def too_slow(self, now: float, received: int) -> bool:
        """Record (now, bytes received so far); True when the last window brought too few."""
        marks = self._marks
        marks.append((now, received))
        while len(marks) > 1 and marks[1][0] <= now - self.window:
            marks.popleft()  # keep the latest mark a whole window old, and what followed it
        since, then = marks[0]
        return now - since >= self.window and received - then < self.rate * (now - since)


def stall_bound(export: RetrySettings) -> float:
    """The longest a file stream keeps trying once its server stops sending (after the headers),
    with these settings: the response is cut within a window and a quarter, then each failed
    attempt is cut after a window and waits at most its back-off's cap."""
    attempts = min(export.max_attempts, export.max_file_attempts)
    window = export.lowest_speed_time
    backoffs = sum(min(export.backoff_cap, export.backoff_base * 2**k) for k in range(1, attempts))
    return float(window * (1 + 1 / SpeedWindow.CHECKS) + attempts * window + backoffs)


def describe(exc: BaseException) -> str:
    """Short, secret-free text for logs and reports."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, RetryableStatus | TransferError | RequestLimit) else text


def failure(exc: BaseException) -> Failure:
    """describe(exc), carrying the error's kind for the --json documents."""
    return Failure(kind_of(exc), describe(exc))
