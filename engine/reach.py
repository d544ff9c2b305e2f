"""A platform that cannot be reached is told apart from a request that failed.

Connection refused, DNS and TLS failures happen before any request is sent. They are retried
with the run's own back-off (RetryPolicy.backoff) for a bounded time, then PlatformUnreachable
stops the run with exit 4 and one line naming the host and the setting to check, instead of
every request spending its full retry budget (minutes) and the run ending "0 failed".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import structlog

from .errors import PlatformUnreachable
from .retry import RetryPolicy

log = structlog.get_logger("aep_export.reach")
T = TypeVar("T")

CONNECT_FAILURES = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# TLS failures (a certificate refused, https spoken to a plain-http port) do not fix themselves.
_HOPELESS = (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError)


async def connecting(send: Callable[[], Awaitable[T]], *, target: str, setting: str, policy: RetryPolicy,
                     budget: float | None = None, noticed: set[str] | None = None) -> T:
    """`send()`, retried while no connection can be made, for at most `budget` seconds (the
    policy's reach budget unless given). The first failure per target in `noticed` is logged once,
    not once per request."""
    budget = policy.reach_budget if budget is None else budget
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return await send()
        except CONNECT_FAILURES as exc:
            attempt += 1
            delay = policy.backoff(attempt)
            elapsed = time.monotonic() - started
            if isinstance(exc, _HOPELESS) or elapsed + delay > budget:
                raise PlatformUnreachable(_explain(target, setting, exc, attempt, elapsed)) from exc
            if (attempt == 1 and noticed is None) or (noticed is not None and target not in noticed):
                if noticed is not None:
                    noticed.add(target)
                log.warning("cannot_connect", target=target, error=_reason(exc), retrying_for_s=budget)
            await asyncio.sleep(delay)


def _explain(target: str, setting: str, exc: BaseException, attempts: int, elapsed: float) -> str:
    tried = f" ({attempts} attempts in {elapsed:.0f} s)" if attempts > 1 else ""
    return f"cannot connect to {target}: {_reason(exc)}{tried}; check {setting} and the network (DNS, proxy, firewall, TLS)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not accepted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed ({exc.os_error})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake failed ({exc.os_error})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{exc.os_error.strerror or exc.os_error}" if exc.os_error else str(exc)
    return f"no connection within the connect timeout ({type(exc).__name__})"
