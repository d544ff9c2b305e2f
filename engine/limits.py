"""The run's caps: bytes per second over every connection (--bwlimit) and requests per second to
the gateway (--tps-limit, --tps-burst). Both are aiolimiter's leaky bucket (asyncio, the loop the
engine runs on under anyio, uvloop included); no cap set: no object, nothing paid per chunk or
request (the callers hold None).

aiolimiter refuses an amount larger than its capacity, and a capacity of a whole second's bytes
would let a run start with a second's burst on top of the cap: the byte bucket holds BURST_S
worth of the rate (at least MIN_BURST) and takes a larger chunk in pieces of that size. A longer
burst lets a stalled reader (a busy event loop) catch up; a shorter one keeps short windows
closer to the cap: 0.1 s is 1 % over 10 s.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from .units import human_bytes

BURST_S = 0.1  # seconds of the byte rate the bucket may hold: 2 MiB at 20 MiB/s, 1 % over a 10 s window
MIN_BURST = 16 << 10  # bytes: a piece no smaller than this, however low the cap


class Bandwidth:
    """One token bucket for the body bytes of every connection of a run."""

    def __init__(self, rate: int):
        self.rate = rate
        self.piece = max(MIN_BURST, int(rate * BURST_S))
        self._bucket = AsyncLimiter(self.piece, self.piece / rate)

    async def take(self, nbytes: int) -> None:
        """Wait until `nbytes` more may be read (any amount: larger ones in pieces)."""
        piece, bucket = self.piece, self._bucket
        while nbytes > piece:
            await bucket.acquire(piece)
            nbytes -= piece
        if nbytes > 0:
            await bucket.acquire(nbytes)

    def __str__(self) -> str:
        return f"{human_bytes(self.rate)}/s"


class RequestRate:
    """Requests per second to the gateway, `burst` of them at once after a quiet spell."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._bucket = AsyncLimiter(burst, burst / rate)

    async def take(self) -> None:
        await self._bucket.acquire()


def bandwidth(rate: int | None) -> Bandwidth | None:
    """export.bwlimit: None (or 0) is no cap."""
    return Bandwidth(rate) if rate else None


def request_rate(rate: float | None, burst: int) -> RequestRate | None:
    """export.tps_limit and export.tps_burst: None (or 0) is no cap."""
    return RequestRate(rate, burst) if rate else None
