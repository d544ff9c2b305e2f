"""Data Access: batch files, directory listings, downloads with ranges and faults (aep-api.md §4)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web

from .data import Dataset, DataSetFile, PartFile
from .faults import RequestFaultState
from .http import EXPORT, FAULTS, T0, content_type_for, gw_error, int_param, parse_range

if TYPE_CHECKING:
    from .config import FakeConfig
    from .data import Model
    from .faults import FaultEngine
    from .stats import FakeStats

CHUNK = 1 << 20


class DataAccessApi:
    """Data Access routes and the redirect (blob) host's download (a mixin of FakePlatform, which
    sets what it uses, declared here)."""

    cfg: FakeConfig
    model: Model
    stats: FakeStats
    faults_engine: FaultEngine
    redirect_url: str
    _attached: dict[str, str]
    _sig_key: bytes

    def link_base(self, request: web.Request, rel: str = "self") -> str:
        raise NotImplementedError  # FakePlatform's

    def _page_size(self, ds: Dataset) -> int:
        return max(1, min(100, ds.spec.page_size or self.cfg.page_size))

    async def h_batch_files(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        b = self.model.batches_by_data_id.get(bid)
        if b is not None and b.dataset.spec.segment_id and b.key not in self._attached:
            b = None  # a segment's data before any export job wrote it
        if b is None:
            kb = self.model.batches_by_key.get(bid)
            miss = kb.dataset.spec.related_miss if kb is not None else "404"
            if miss == "empty":
                return web.json_response({"data": [], "_page": {"limit": 100, "count": 0}})
            if miss in ("400", "422"):  # how a gateway may answer an id it does not take as a batch id
                return gw_error(int(miss), miss, f"Invalid batch id: {bid}")
            return gw_error(404, "404", "The requested batch was not found.")
        limit = int_param(request, "limit", self._page_size(b.dataset), 1, None)
        start = int_param(request, "start", 0, 0, None)
        if limit is None or start is None:
            return gw_error(400, "400", "Invalid start/limit: limit must be a positive integer")
        limit = min(limit, 100)
        items = [self._dsf_item(self.link_base(request), f, b.dataset) for f in b.files]
        path = f"{EXPORT}/batches/{quote(bid)}/files"
        return web.json_response(_paged(items, start, limit, self.link_base(request, "next") + path))

    def _dsf_item(self, base: str, f: DataSetFile, ds: Dataset) -> dict[str, Any]:
        return {"dataSetFileId": f.id, "dataSetViewId": ds.view_id, "version": "1.0.0",
                "created": str(f.created), "updated": str(f.created), "isValid": False,
                "_links": {"self": {"href": f"{base}{EXPORT}/files/{quote(f.id)}"}}}

    def _part_item(self, base: str, f: DataSetFile, p: PartFile, ds: Dataset) -> dict[str, Any]:
        href = f"{base}{EXPORT}/files/{quote(f.id)}?path={quote(p.name, safe='')}"
        if self.cfg.foreign_download_links:  # a signed link to another host, like a pre-signed blob URL
            href = f"{self.redirect_url}{EXPORT}/files/{quote(f.id)}?{urlencode({'path': p.name, 'sig': self._sign(f.id, p.name)})}"
        return {"name": p.name, "length": str(p.size) if ds.spec.length_as == "string" else p.size,
                "_links": {"self": {"href": href}}}

    def _dsf_dataset(self, f: DataSetFile) -> Dataset:
        return self.model.file_batch[f.id].dataset

    async def h_files(self, request: web.Request) -> web.StreamResponse:
        f = self.model.files.get(request.match_info["id"])
        if f is None:
            return gw_error(404, "404", "The dataset file was not found.")
        if "path" in request.query:
            return await self._download(request, f, redirected=False)
        if request.method == "HEAD":
            return gw_error(400, "400", "path is required for HEAD")
        return self._listing(request, f)

    def _listing(self, request: web.Request, f: DataSetFile) -> web.Response:
        ds = self._dsf_dataset(f)
        base = self.link_base(request)
        if f.children:
            items = [(c.id, self._dsf_item(base, c, ds)) for c in f.children]
        else:
            items = [(p.name, self._part_item(base, f, p, ds)) for p in f.parts]
        if ds.spec.listing_shape == "bare_array":
            return web.json_response([it for _, it in items])
        limit = int_param(request, "limit", self._page_size(ds), 1, None)
        if limit is None:
            return gw_error(400, "400", "Invalid limit: must be a positive integer")
        limit = min(limit, 100)
        # name cursor (2021 spec: start=fileName): the page begins at the first name >= start
        cursor = request.query.get("start", "")
        keys = [k for k, _ in items]
        first = next((i for i, k in enumerate(keys) if k >= cursor), len(keys)) if cursor else 0
        page = [it for _, it in items[first:first + limit]]
        url = f"{self.link_base(request, 'next')}{EXPORT}/files/{quote(f.id)}"
        body: dict[str, Any] = {"data": page, "_page": {"limit": limit, "count": len(page)},
                                "_links": {"page": {"href": f"{url}?start=0&limit={limit}", "templated": True}}}
        if first + limit < len(keys):
            body["_links"]["next"] = {"href": f"{url}?{urlencode({'start': keys[first + limit], 'limit': limit})}"}
        return web.json_response(body)

    # -- downloads ------------------------------------------------------------------

    def _sign(self, fid: str, name: str) -> str:
        return hmac.new(self._sig_key, f"{fid}\x00{name}".encode(), hashlib.sha256).hexdigest()[:32]

    async def h_blob(self, request: web.Request) -> web.StreamResponse:
        """Redirect target: no gateway auth, but a signed URL (like a pre-signed blob URL)."""
        names = sorted(k.lower() for k in request.headers)
        self.stats.redirect_requests += 1
        self.stats.redirect_header_names.append(names)
        if "authorization" in names or "x-api-key" in names:
            self.stats.redirect_saw_auth = True
        f = self.model.files.get(request.match_info["id"])
        name = request.query.get("path", "")
        if f is None or not hmac.compare_digest(request.query.get("sig", ""), self._sign(f.id, name)):
            return gw_error(403, "403", "Signature not valid")
        return await self._download(request, f, redirected=True)

    async def _download(self, request: web.Request, f: DataSetFile, redirected: bool) -> web.StreamResponse:
        name = request.query["path"]
        part = next((p for p in f.parts if p.name == name), None)
        if part is None:
            return gw_error(404, "404", "The requested file was not found.")
        fl = self.cfg.faults
        fs: RequestFaultState = request[FAULTS]
        if fl.redirect and not redirected:
            self.faults_engine.count("redirect")
            loc = f"{self.redirect_url}{EXPORT}/files/{quote(f.id)}?{urlencode({'path': name, 'sig': self._sign(f.id, name)})}"
            return web.Response(status=307, headers={"Location": loc})
        total = part.size
        ctype = content_type_for(name)
        if request.method == "HEAD":
            return web.Response(status=200, headers={"Accept-Ranges": "bytes", "Content-Type": ctype,
                                                     "Content-Length": str(total)})
        if fs.decide("error_body", fl.p_error_body):
            return gw_error(500, "500000", "Internal Server Error: unexpected failure reading file")
        rng = parse_range(request.headers.get("Range"), total)
        if rng is not None and fs.decide("ignore_range", fl.ignore_range):
            rng = None
        if isinstance(rng, str):  # "416"
            return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
        return await self._stream(request, f, part, rng, fs)

    async def _stream(self, request: web.Request, f: DataSetFile, part: PartFile,
                      rng: tuple[int, int] | None, fs: RequestFaultState) -> web.StreamResponse:
        fl = self.cfg.faults
        total = part.size
        if rng is not None:
            start, end = rng
            if end > start and fs.decide("short_range", fl.p_short_range):
                end = start + max(1, (end - start + 1) // 2) - 1
            status = 206
        else:
            start, end, status = 0, total - 1, 200
        length = end - start + 1 if total else 0
        resp = web.StreamResponse(status=status)
        resp.content_type = content_type_for(part.name)
        resp.content_length = length
        resp.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        elif fl.send_digest:
            resp.headers["Repr-Digest"] = "sha-256=:" + base64.b64encode(bytes.fromhex(part.sha256)).decode() + ":"
        # at most one failing body fault per response
        corrupt_at = cut_after = -1
        if length > 1 and fs.decide("reset", fl.p_reset):
            cut_after = int(fs.roll("reset.at") * (length - 1))
        elif status == 200 and length and fs.decide("corrupt", fl.p_corrupt):
            corrupt_at = int(fs.roll("corrupt.at") * length)
        self.stats.statuses[status] += 1
        await resp.prepare(request)
        key = f"{f.id}/{part.name}"
        body = [key, start, 0]  # bytes tallied as they are counted: a response cut or abandoned keeps its count
        self.stats.bodies.append(body)
        if length == 0:
            await resp.write_eof()
            return resp
        self.stats.downloads_in_flight += 1
        self.stats.in_flight_at_start.append(self.stats.downloads_in_flight)
        try:
            if corrupt_at < 0 and cut_after < 0 and not fl.bandwidth_bps and not fl.response_limit_s and not fl.chunked:
                # no body fault for this response: zero-copy fast path
                sent = await self._sendfile(request, resp, part.path, start, length, body)
            else:
                sent = await self._send_chunks(request, resp, part.path, start, length, corrupt_at, cut_after, body)
        finally:
            self.stats.downloads_in_flight -= 1
        if sent < length:
            return resp  # connection already aborted
        await resp.write_eof()
        return resp

    def _account(self, body: list[Any], n: int) -> None:
        # counted before the bytes leave, so a client never sees data the stats do not show
        self.stats.sent(n)
        self.stats.bytes_by_file[body[0]] += n
        body[2] += n

    async def _sendfile(self, request: web.Request, resp: web.StreamResponse, path: Path,
                        start: int, length: int, body: list[Any]) -> int:
        """Fast path: kernel sendfile (the benchmark server must not be the bottleneck)."""
        transport = request.transport
        if transport is None:
            return 0
        with open(path, "rb") as fh:
            self._account(body, length)
            try:
                await asyncio.get_running_loop().sendfile(transport, fh, start, length)
            except NotImplementedError:
                self._account(body, -length)
                return await self._send_chunks(request, resp, path, start, length, -1, -1, body)
            except (ConnectionError, OSError, RuntimeError):
                return 0  # unknown partial count: leave the optimistic total
        return length

    async def _send_chunks(self, request: web.Request, resp: web.StreamResponse, path: Path, start: int,
                           length: int, corrupt_at: int, cut_after: int, body: list[Any]) -> int:
        """Slow path: 1 MiB chunks with pacing, response time limit, corruption and resets."""
        fl = self.cfg.faults
        bps = fl.bandwidth_bps
        chunk = min(CHUNK, max(4096, int(bps / 20))) if bps else CHUNK
        deadline = request[T0] + fl.response_limit_s if fl.response_limit_s else None
        t_start, sent = time.monotonic(), 0
        limit = cut_after if cut_after >= 0 else length
        with open(path, "rb") as fh:
            fh.seek(start)
            while sent < limit:
                data = fh.read(min(chunk, limit - sent))
                if not data:
                    break
                if 0 <= corrupt_at - sent < len(data):
                    b = bytearray(data)
                    b[corrupt_at - sent] ^= 0xFF
                    data = bytes(b)
                if bps:  # pace before writing: the client never gets bytes ahead of bps
                    ahead = (sent + len(data)) / bps - (time.monotonic() - t_start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                self._account(body, len(data))
                try:
                    await resp.write(data)
                except (ConnectionError, RuntimeError):
                    return sent
                sent += len(data)
                if deadline is not None and time.monotonic() > deadline and sent < length:
                    self.faults_engine.count("response_limit")
                    self._abort(request)
                    return sent
        if sent < length:
            self._abort(request)
        return sent

    @staticmethod
    def _abort(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()


def _paged(items: list[Any], start: int, limit: int, url: str) -> dict[str, Any]:
    """Numeric-offset paging of /export/batches/{id}/files; `next` only when truncated."""
    page = items[start:start + limit]
    body: dict[str, Any] = {"data": page, "_page": {"limit": limit, "count": len(page)},
                            "_links": {"page": {"href": f"{url}?start=0&limit={limit}", "templated": True}}}
    if start + limit < len(items):
        body["_links"]["next"] = {"href": f"{url}?start={start + limit}&limit={limit}"}
    return body


