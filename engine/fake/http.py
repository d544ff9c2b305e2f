"""HTTP helpers the fake's APIs share: error shapes (aep-api.md §1), query params, ranges."""

from __future__ import annotations

import re
import socket
from typing import Any

from aiohttp import web

from .faults import RequestFaultState

CATALOG = "/data/foundation/catalog"
EXPORT = "/data/foundation/export"
UPS = "/data/core/ups"
T0 = web.RequestKey("t0", float)
FAULTS = web.RequestKey("faults", RequestFaultState)


def gw_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Gateway / Data Access error shape {error_code, message} (aep-api.md §1)."""
    return web.json_response({"error_code": code, "message": message}, status=status, headers=headers)


def problem(status: int, title: str, detail: str, ns: str = "CAT") -> web.Response:
    """Catalog/Segmentation error shape, like the documented content-type error (§1)."""
    body = {"type": f"http://ns.adobe.com/aep/errors/{ns}-{status}", "status": status,
            "title": title, "detail": detail}
    return web.json_response(body, status=status)


async def json_body(request: web.Request, ns: str = "CAT") -> tuple[Any, web.Response | None]:
    """A POST's JSON body, or the documented error for a wrong content type (§1) or bad JSON."""
    if not request.content_type.startswith("application/json"):
        return None, web.json_response({"type": "/placeholder/type/uri", "status": 400, "title": "BadRequestError",
                                        "detail": "A valid content-type must be specified"}, status=400)
    try:
        return await request.json(), None
    except ValueError:
        return None, problem(400, "BadRequestError", "Body is not valid JSON", ns=ns)


def parse_range(value: str | None, total: int) -> tuple[int, int] | str | None:
    """Parse `bytes=a-b`, `bytes=a-`, `bytes=-n`. None = no/ignored range, "416" = unsatisfiable."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # malformed or multi-range: RFC 9110 lets us ignore it
    a, b = m.group(1), m.group(2)
    if a == "":  # suffix range
        n = int(b)
        if n == 0 or total == 0:
            return "416"
        return max(0, total - n), total - 1
    start = int(a)
    end = int(b) if b else total - 1
    if start >= total or end < start:
        return "416"
    return start, min(end, total - 1)


def range_start_of(request: web.Request) -> int | None:
    m = re.match(r"\s*bytes\s*=\s*(\d+)", request.headers.get("Range", ""))
    return int(m.group(1)) if m else None


def content_type_for(name: str) -> str:
    return "application/parquet" if name.endswith(".parquet") else "application/octet-stream"


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int | None) -> int | None:
    """Parse an int query param; None if invalid / out of range."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        return None
    if v < lo or (hi is not None and v > hi):
        return None
    return v


def loopback_alt_host(host: str) -> str:
    """127.0.0.2 if bindable (a different 'host' for redirects), else the same host."""
    if host not in ("127.0.0.1", "localhost"):
        return host
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return host
