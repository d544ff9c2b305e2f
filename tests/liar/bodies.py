"""Bodies that lie (issue #17, cases 3 and 8): what a download answers instead of the file's bytes.

Each lie wraps `h_files` of a FakePlatform not yet started and changes only the downloads of one
file (`victim`); the listing and every other file are served as documented. Each returns the list
of the victim's download requests it answered (their Range header, or "" for none), so a test
counts the requests a misbehaviour cost.

- `html_page`: a 200 whose body is an HTML error page, for a `.parquet` (a proxy's or CDN's
  error page sent with the wrong status), with the page's length listed, or sent, or neither.
- `short_first_chunk`: the right bytes, but the first 2 of them alone, behind a first-byte delay.
- `stop_halfway`: the server's copy ends in the middle: a response sends what it has before the
  middle, then holds the connection open without sending anything.
- `trickle`: one byte every `every` seconds, never done.
- `drip_and_stall`: `drip` bytes from the offset asked for, then silence.

A lie that stalls holds the connection until the client closes it (never past `HOLD_MAX`), so a
test's teardown never waits for it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

from engine.fake.data import ExpectedFile

from . import wrap

PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        b"<body><h1>Bad Gateway</h1><p>The upstream server did not answer.</p></body></html>\n")
HOLD_MAX = 120.0  # seconds a stalled response is held at most (the client hangs up long before)


def victim_of(fp: Any) -> ExpectedFile:
    """The file the lie is told about: the largest one (by name where sizes are known only once the
    fake has generated its data)."""
    return max(fp.expected_files(), key=lambda e: (e.size, e.name))


def _is_download(request: web.Request, victim: ExpectedFile) -> bool:
    return request.match_info.get("id") == victim.dataset_file_id and request.query.get("path") == victim.name


def _is_listing(request: web.Request, victim: ExpectedFile) -> bool:
    return request.match_info.get("id") == victim.dataset_file_id and "path" not in request.query


def _range(request: web.Request, size: int) -> tuple[int, int]:
    """[start, end] inclusive of the Range asked for (the whole file without one)."""
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
    if not m:
        return 0, size - 1
    return int(m.group(1)), min(size - 1, int(m.group(2))) if m.group(2) else size - 1


async def _start(request: web.Request, size: int, start: int, end: int) -> web.StreamResponse:
    """Headers of the right answer (206 with Content-Range for a Range, else 200), sent."""
    resp = web.StreamResponse(status=206 if "Range" in request.headers else 200)
    resp.content_type = "application/octet-stream"
    resp.content_length = end - start + 1
    if resp.status == 206:
        resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    await resp.prepare(request)
    return resp


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _hold(request: web.Request, seconds: float = HOLD_MAX) -> None:
    """Send nothing, keep the connection open, until the client hangs up."""
    until = time.monotonic() + seconds
    while not _gone(request) and time.monotonic() < until:  # noqa: ASYNC110 - polls the transport: no event tells that the client hung up
        await asyncio.sleep(0.02)


async def _write(resp: web.StreamResponse, data: bytes) -> bool:
    try:
        await resp.write(data)
        return True
    except (ConnectionError, RuntimeError):
        return False


def _lie_about(fp: Any, victim: ExpectedFile, answer, listing=None) -> list[str]:
    served: list[str] = []

    async def lie(original, request: web.Request) -> web.StreamResponse:
        if listing is not None and _is_listing(request, victim):
            return await listing(original, request)
        if not _is_download(request, victim) or request.method != "GET":
            return await original(request)
        served.append(request.headers.get("Range", ""))
        return await answer(request, victim.source_path.read_bytes())

    wrap(fp, "h_files", lie)
    return served


def html_page(fp: Any, victim: ExpectedFile, *, length: str) -> list[str]:
    """`length`: "listed": the listing gives the page's length, and the answer a Content-Length;
    "sent": the listing gives the file's length, the answer the page's Content-Length; "none":
    the listing gives the file's length, the answer none (chunked)."""
    async def listing(original, request: web.Request) -> web.StreamResponse:
        resp = await original(request)
        if length != "listed":
            return resp
        body = json.loads(resp.text)
        for item in body.get("data", []) if isinstance(body, dict) else body:
            if item.get("name") == victim.name:
                item["length"] = str(len(PAGE))
        return web.json_response(body)

    async def answer(request: web.Request, _src: bytes) -> web.StreamResponse:
        if length != "none":
            return web.Response(status=200, body=PAGE, content_type="text/html")
        resp = web.StreamResponse(status=200)
        resp.content_type = "text/html"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await _write(resp, PAGE)
        await resp.write_eof()
        return resp

    return _lie_about(fp, victim, answer, listing)


def short_first_chunk(fp: Any, victim: ExpectedFile, *, delay: float = 0.1) -> list[str]:
    async def answer(request: web.Request, src: bytes) -> web.StreamResponse:
        start, end = _range(request, len(src))
        resp = await _start(request, len(src), start, end)
        await asyncio.sleep(delay)  # the first byte comes late (older than a flush's age) ...
        head = min(start + 2, end + 1)
        if await _write(resp, src[start:head]):  # ... and alone, shorter than the parquet magic
            await asyncio.sleep(0.05)
            if await _write(resp, src[head:end + 1]):
                await resp.write_eof()
        return resp

    return _lie_about(fp, victim, answer)


def stop_halfway(fp: Any, victim: ExpectedFile) -> list[str]:
    async def answer(request: web.Request, src: bytes) -> web.StreamResponse:
        start, end = _range(request, len(src))
        resp = await _start(request, len(src), start, end)
        have = min(end + 1, len(src) // 2)
        if start >= have or await _write(resp, src[start:have]):
            await _hold(request)
        return resp

    return _lie_about(fp, victim, answer)


def trickle(fp: Any, victim: ExpectedFile, *, every: float = 1.5) -> list[str]:
    async def answer(request: web.Request, src: bytes) -> web.StreamResponse:
        start, end = _range(request, len(src))
        resp = await _start(request, len(src), start, end)
        for pos in range(start, end + 1):
            if not await _write(resp, src[pos:pos + 1]):
                break
            await _hold(request, every)
            if _gone(request):
                break
        return resp

    return _lie_about(fp, victim, answer)


def drip_and_stall(fp: Any, victim: ExpectedFile, *, drip: int = 4096) -> list[str]:
    async def answer(request: web.Request, src: bytes) -> web.StreamResponse:
        start, end = _range(request, len(src))
        resp = await _start(request, len(src), start, end)
        if await _write(resp, src[start:min(end + 1, start + drip)]):
            await _hold(request)
        return resp

    return _lie_about(fp, victim, answer)
