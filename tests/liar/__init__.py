"""A platform that lies: the fake platform with misbehaviours real gateways, proxies and CDNs show.

The fake platform (engine/fake) answers what aep-api.md documents. These misbehaviours wrap its
handlers, before it starts, to answer what the documentation never shows but real servers send
(issue #17). Each family lives in its own module here, and each test that uses one names the case:

    1. files regenerated between a killed run and its rerun    liar.files (validators)
    2. one name listed twice, names that collide with ours     liar.listings, liar.names
    3. request storms (a 200 error page, short first chunks)   liar.bodies
    4. listings taken on trust (paging loops, short listings)  liar.listings
    5. names from the server in our own namespace              liar.names
    6. disk full while a batch is finished                      (tests/test_distrust_disk.py)
    7. two runs on one output folder                           (tests/test_distrust_disk.py)
    8. stalls and trickles                                     liar.bodies
    9. a SIGTERM before the handlers are installed             (tests/test_distrust_disk.py)
    -. the four regressions the suite missed (issue's Tests)   liar.regress

`wrap(fp, "h_files", fn)` replaces one handler of a FakePlatform not yet started: `fn(original,
request)` may call `original(request)` for the documented answer, or answer otherwise. Every
misbehaviour records what it did in a list it returns, so a test asserts that it happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Lie = Callable[[Handler, web.Request], Awaitable[web.StreamResponse]]


def wrap(fp: Any, handler_name: str, lie: Lie) -> None:
    """Route `handler_name` of a FakePlatform (not yet started) through `lie`."""
    original: Handler = getattr(fp, handler_name)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await lie(original, request)

    setattr(fp, handler_name, handler)  # routes are bound when the server starts
