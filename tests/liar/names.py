"""Names from the server that reach our own namespace (issue #17, cases 2 and 5).

The fake lists the ids and names the documentation shows (`{batchId}-1`, `part-00000-….parquet`).
Nothing stops a real gateway from listing a dataSetFileId `_SUCCESS` (the name of our own
marker beside it), two names one of which is the other plus `.part` (our temporary name, before
this layout), or a valid name of 250 bytes (our `.part.ctl` beside it would pass NAME_MAX). These
lies rename what the listings say; the links (`_links.self.href`) still lead to the real files,
so each renamed entry downloads the bytes of the file it replaces.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import Handler, wrap


def _body(resp: web.StreamResponse) -> Any:
    assert isinstance(resp, web.Response) and resp.body is not None, "a listing is one JSON body"
    return json.loads(bytes(resp.body))


def _items(body: Any) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else body.get("data", [])


def rename_dataset_file(fp: Any, real_id: str, listed_id: str) -> list[str]:
    """The batch's listing gives dataSetFile `real_id` the id `listed_id` (its link unchanged)."""
    done: list[str] = []

    async def lie(original: Handler, request: web.Request) -> web.StreamResponse:
        resp = await original(request)
        if resp.status != 200:
            return resp
        body = _body(resp)
        for item in _items(body):
            if item.get("dataSetFileId") == real_id:
                item["dataSetFileId"] = listed_id
                done.append(f"{real_id} listed as {listed_id!r}")
        return web.json_response(body)

    wrap(fp, "h_batch_files", lie)
    return done


def rename_files(fp: Any, dataset_file_id: str, names: dict[str, str]) -> list[str]:
    """The listing of `dataset_file_id` shows each real name of `names` as its new name; the
    download link of each entry still names the real file."""
    done: list[str] = []

    async def lie(original: Handler, request: web.Request) -> web.StreamResponse:
        resp = await original(request)
        if request.match_info["id"] != dataset_file_id or "path" in request.query or resp.status != 200:
            return resp
        body = _body(resp)
        for item in _items(body):
            if item.get("name") in names:
                done.append(f"{item['name']} listed as {names[item['name']]!r}")
                item["name"] = names[item["name"]]
        return web.json_response(body)

    wrap(fp, "h_files", lie)
    return done
