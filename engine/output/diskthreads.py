"""The per-file disk hops of a local export (open, write, commit) on a plain thread pool.

Apart from diskio.py on purpose: the CLI imports diskio (through runlock) before the early token
request, and this module needs anyio and asyncio, which start-up leaves until after it (#20).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class DiskThreads:
    """The per-file disk hops (open, write, commit) of a local export: a plain thread pool, sized
    like the run's disk limiter. anyio's `to_thread.run_sync` costs several times more per hop on
    the event loop (backend lookup, limiter, a Condition per job, a checkpoint after), which with
    small files is a large share of the run's CPU."""

    def __init__(self, threads: int):
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="aep-disk")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread. Not cancellable, as `to_thread.run_sync` by default: its result
        is returned (an fd opened, a rename submitted: the caller's to handle) and the cancel scope
        delivers the cancellation again at the caller's next checkpoint."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        job = self._pool.submit(fn, *args)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(_settle, done))
        try:
            await done
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await asyncio.wait([asyncio.wrap_future(job)])
        return job.result()

    def close(self) -> None:
        self._pool.shutdown()


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():  # a cancelled waiter leaves it cancelled
        done.set_result(None)
