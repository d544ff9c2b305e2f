"""Lies behind the regression tests of tests/test_distrust_regressions.py (issue #17, "Tests").

Two answers the documented platform never gives, each enough to make one check at the end of a
file or a batch the only thing between wrong data and a final name or `_SUCCESS`:
- `corrupt_every_body`: one file's bytes, with one byte changed, on every fetch, under the
  digest of its true bytes (a cache serving a damaged copy under the origin's digest);
- `overstate_records`: the Catalog's batch metrics count more records than the parquet holds.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from . import wrap


def corrupt_every_body(fp: Any, dataset_file_id: str, name: str) -> list[int]:
    """Every download of that file: its whole body with the middle byte flipped, and `Repr-Digest`
    of the true bytes; magic and footer intact, so only the digest check at commit can tell.
    Returns the list of bodies served (their sizes)."""
    served: list[int] = []

    async def lie(original: Any, request: web.Request) -> web.StreamResponse:
        mine = request.match_info["id"] == dataset_file_id and request.query.get("path") == name
        if not mine or request.method != "GET":
            return await original(request)
        # sizes and digests are known once the fake has started (it generates the files then)
        victim = next(e for e in fp.expected_files() if (e.dataset_file_id, e.name) == (dataset_file_id, name))
        body = bytearray(victim.source_path.read_bytes())
        body[len(body) // 2] ^= 0xFF
        served.append(len(body))
        digest = base64.b64encode(bytes.fromhex(victim.sha256)).decode()
        return web.Response(body=bytes(body), content_type="application/octet-stream",
                            headers={"Repr-Digest": f"sha-256=:{digest}:"})

    wrap(fp, "h_files", lie)
    return served


def overstate_records(fp: Any, extra: int = 1) -> list[str]:
    """Catalog batch objects (GET /batches, GET /batches/{id}) state `extra` more records than the
    batch's parquet files hold, in whichever metrics form they use. Returns the batch ids told so."""
    told: list[str] = []

    async def lie(original: Any, request: web.Request) -> web.StreamResponse:
        resp = await original(request)
        if resp.status != 200 or not isinstance(resp, web.Response) or resp.body is None:
            return resp
        body = json.loads(resp.body)
        for batch_id, obj in body.items() if isinstance(body, dict) else ():
            if _overstate(obj, extra):
                told.append(batch_id)
        return web.json_response(body)

    wrap(fp, "h_batches", lie)
    wrap(fp, "h_batch", lie)
    return told


def _overstate(obj: Any, extra: int) -> bool:
    metrics = obj.get("metrics") if isinstance(obj, dict) else None
    if not isinstance(metrics, dict):
        return False
    keys = [k for k in ("outputRecordCount", "recordsWritten") if isinstance(metrics.get(k), int)]
    for key in keys:
        metrics[key] += extra
    return bool(keys)
