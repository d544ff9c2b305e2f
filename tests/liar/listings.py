"""Listings that lie (issue #17, case 4 and the listing half of case 2).

Each function wraps a handler of a FakePlatform not yet started and returns the list in which it
records what it did (the URLs it answered), so a test can assert that the lie was told:

    back_to_first_page(fp, dsf)      page 2's next link leads back to page 1 while page 3 exists
    cycling_pages(fp, dsf, laps)     after the last page, next links start the listing over under new URLs
    name_twice(fp, dsf, name, other) `name` listed a second time, with the link and length of `other`
    short_listing(fp, dsf)           the last file of a dataSetFile left out of its listing
    empty_batch(fp, batch)           the batch's dataSetFiles listing is empty

The fake pages a dataSetFile by name cursor (`?start=<first name of the page>&limit=N`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from yarl import URL

from . import Handler, wrap


def _listing_of(request: web.Request, dsf_id: str) -> bool:
    return request.match_info.get("id") == dsf_id and "path" not in request.query and request.method == "GET"


def _body(resp: web.StreamResponse) -> Any:
    assert isinstance(resp, web.Response) and resp.body is not None, "the fake answered a listing with a stream"
    return json.loads(resp.body)


def _next(body: Any) -> str | None:
    link = body.get("_links", {}).get("next") if isinstance(body, dict) else None
    return link["href"] if link else None


def _with_next(body: dict, href: str | None) -> web.Response:
    links = dict(body.get("_links", {}))
    links.pop("next", None)
    if href is not None:
        links["next"] = {"href": href}
    return web.json_response({**body, "_links": links})


def back_to_first_page(fp: Any, dsf_id: str) -> list[str]:
    """Page 2's next link points back to page 1, spelled with an explicit `limit` (a URL the client
    has not read yet, as a proxy or another server may spell it), while page 3 exists."""
    served: list[str] = []
    second_start: list[str] = []  # the cursor page 1 hands out

    async def lie(original: Handler, request: web.Request) -> web.StreamResponse:
        resp = await original(request)
        if not _listing_of(request, dsf_id):
            return resp
        served.append(str(request.url))
        body = _body(resp)
        if "start" not in request.query:  # page 1
            second_start[:] = [URL(_next(body) or "").query.get("start", "")]
            return resp
        if second_start and request.query["start"] == second_start[0] and _next(body):  # page 2, and page 3 exists
            first = URL(_next(body) or "").with_query(limit=request.query.get("limit", "100"))
            return _with_next(body, str(first))
        return resp

    wrap(fp, "h_files", lie)
    return served


def cycling_pages(fp: Any, dsf_id: str, laps: int) -> list[str]:
    """The listing's last page links to its first again under a new URL (`lap=1`, `lap=2`, …): every
    page of lap k answers the real page and carries `lap=k` on; lap `laps` ends it (so that a client
    that follows every link still finishes)."""
    served: list[str] = []

    async def lie(original: Handler, request: web.Request) -> web.StreamResponse:
        if not _listing_of(request, dsf_id):
            return await original(request)
        served.append(str(request.url))
        lap = int(request.query.get("lap", "0"))
        real = request.clone(rel_url=request.rel_url.without_query_params("lap"))
        body = _body(await original(real))
        nxt = _next(body)
        if nxt is not None:
            return _with_next(body, str(URL(nxt).update_query(lap=str(lap))) if lap else nxt)
        if lap >= laps:
            return _with_next(body, None)
        return _with_next(body, str(request.url.with_query(lap=str(lap + 1))))  # page 1 again, a URL never seen

    wrap(fp, "h_files", lie)
    return served


def name_twice(fp: Any, dsf_id: str, name: str, other: str) -> list[str]:
    """`name` appears a second time at the end of the dataSetFile's listing, with the download link
    and length of the file `other`: one name, two different contents."""
    served: list[str] = []

    async def lie(original: Handler, request: web.Request) -> web.StreamResponse:
        resp = await original(request)
        if not _listing_of(request, dsf_id):
            return resp
        body = _body(resp)
        entries = {e["name"]: e for e in body["data"]}
        if other not in entries or _next(body):
            return resp
        served.append(str(request.url))
        return web.json_response({**body, "data": [*body["data"], {**entries[other], "name": name}]})

    wrap(fp, "h_files", lie)
    return served


def short_listing(fp: Any, dsf_id: str) -> list[str]:
    """The last file of the dataSetFile is left out of its (single-page) listing: nothing says so
    but the Catalog's metrics."""
    served: list[str] = []

    async def lie(original: Handler, request: web.Request) -> web.StreamResponse:
        resp = await original(request)
        if not _listing_of(request, dsf_id):
            return resp
        body = _body(resp)
        served.append(body["data"][-1]["name"])
        return web.json_response({**body, "data": body["data"][:-1], "_page": {**body["_page"], "count": len(body["data"]) - 1}})

    wrap(fp, "h_files", lie)
    return served


def empty_batch(fp: Any, batch_id: str) -> list[str]:
    """`GET /export/batches/{batch}/files` answers an empty listing, as for a batch with no files."""
    served: list[str] = []

    async def lie(original: Handler, request: web.Request) -> web.StreamResponse:
        if request.match_info.get("id") != batch_id:
            return await original(request)
        served.append(str(request.url))
        return web.json_response({"data": [], "_page": {"limit": 100, "count": 0}})

    wrap(fp, "h_batch_files", lie)
    return served
