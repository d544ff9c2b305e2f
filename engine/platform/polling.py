"""Waiting on the platform: an audience export job, a dataset export run, a batch. Each is looked
at until its status ends the wait, through the retry policy's deadline loop (RetryPolicy.run): a
status of `done` returns it, one of `failed` fails for good saying why, any other polls again
(NotYet), and the deadline fails it saying which status it was still in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from ..errors import ExportError, NotYet
from ..retry import RetryPolicy

Look = Callable[[], Awaitable[tuple[dict[str, Any], str, str]]]  # -> (the object, what it is called, its status)


async def wait_for_status(policy: RetryPolicy, look: Look, *, done: Collection[str], failed: Collection[str],
                          why: Callable[[dict[str, Any]], str], fails: type[ExportError], what: str, deadline: float,
                          limit: str = "its wait_timeout") -> dict[str, Any]:
    """The object once `look` finds it in a `done` status. A `failed` status raises `fails` with
    `why(object)`; the deadline raises it too, naming `limit` (the setting that set the deadline)."""
    async def poll() -> dict[str, Any]:
        obj, name, status = await look()
        if status in done:
            return obj
        if status in failed:
            raise fails(f"{name} ended {status}{why(obj)}")
        raise NotYet(f"{name} is still {status or 'without status'}")

    try:
        return await policy.run(poll, what=what, deadline=deadline)
    except NotYet as exc:
        raise fails(f"{exc} at {limit}") from None
