"""The Data Landing Zone's Blob side, for the fake: where an export run's files go.

Two stores: `FakeBlobs`, served by the fake itself on its own loopback origin (the few Blob REST
calls the engine makes: List Blobs with a SAS, Get Blob with Range, ETag and Content-MD5), so
that `demo` and `fake-platform` need nothing but pip; and, in the tests, Azurite (tests/azurite.py,
the same Protocol), a real Blob server against which the engine is proven.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote
from xml.sax.saxutils import escape

from aiohttp import web

from .http import parse_range

CHUNK = 1 << 20
DLZ_CONTAINER = "dlz-destination"  # where dataset exports land (aep-dataset-export.md §2, aepp)


class BlobStore(Protocol):
    """What the fake's export runs write into, and the SAS its credentials endpoint hands out."""

    account: str
    container: str

    async def put(self, name: str, path: Path) -> None: ...

    async def replace(self, name: str, data: bytes) -> None:
        """Tests: another version of a blob (a new ETag)."""
        ...

    def container_url(self) -> str: ...

    def sas(self, ttl_s: float) -> str:
        """A read+list SAS token for the container, expiring `ttl_s` from now (negative: expired)."""
        ...


def sas_expiry(ttl_s: float) -> str:
    """`se` as Azure writes it: UTC, to the second."""
    return (datetime.now(UTC) + timedelta(seconds=ttl_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Blob:
    path: Path | None
    data: bytes | None
    size: int
    etag: str
    md5: str
    modified: float


class FakeBlobs:
    """An in-memory container served by the fake's own Blob origin (FakePlatform starts it)."""

    def __init__(self, seed: int, account: str = "aepfakedlz", container: str = DLZ_CONTAINER) -> None:
        self.account, self.container = account, container
        self._key = hashlib.sha256(f"blob{seed}".encode()).digest()
        self._blobs: dict[str, _Blob] = {}
        self._versions = 0
        self.url = ""  # set once served
        self.saw_gateway_credentials = False  # an Authorization or x-api-key header ever arrived
        self.requests = 0

    # -- the store --------------------------------------------------------------------

    async def put(self, name: str, path: Path) -> None:
        data = await asyncio.to_thread(path.read_bytes)
        self._blobs[name] = self._blob(path, None, data)

    async def replace(self, name: str, data: bytes) -> None:
        self._blobs[name] = self._blob(None, data, data)

    def _blob(self, path: Path | None, kept: bytes | None, data: bytes) -> _Blob:
        self._versions += 1
        etag = f'"0x8DD{hashlib.sha256(data).hexdigest()[:9].upper()}{self._versions:04X}"'
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        return _Blob(path, kept, len(data), etag, md5, time.time())

    def container_url(self) -> str:
        return f"{self.url}/{self.account}/{self.container}"

    def sas(self, ttl_s: float) -> str:
        se = sas_expiry(ttl_s)
        return f"sv=2023-11-03&se={quote(se)}&sr=c&sp=rl&sig={quote(self._sign(se))}"

    def _sign(self, se: str) -> str:
        return base64.b64encode(hmac.new(self._key, f"rl\n{se}\n{self.container}".encode(), "sha256").digest()).decode()

    # -- the Blob REST calls ----------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"/{self.account}/{self.container}", self.h_list)
        app.router.add_get(f"/{self.account}/{self.container}/{{name:.+}}", self.h_get)
        return app

    def _refused(self, request: web.Request) -> web.Response | None:
        self.requests += 1
        if {"authorization", "x-api-key"} & {h.lower() for h in request.headers}:
            self.saw_gateway_credentials = True
        se, sig = request.query.get("se", ""), request.query.get("sig", "")
        if not se or not hmac.compare_digest(sig, self._sign(se)):
            return _storage_error(403, "AuthenticationFailed", "Server failed to authenticate the request. Make sure "
                                  "the value of Authorization header is formed correctly including the signature.")
        expiry = datetime.strptime(se, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if expiry <= datetime.now(UTC):
            return _storage_error(403, "AuthenticationFailed", f"Signed expiry time [{se}] must be after signed start "
                                  "time and current time")
        return None

    async def h_list(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        if request.query.get("restype") != "container" or request.query.get("comp") != "list":
            return _storage_error(400, "InvalidQueryParameterValue", "Value for one of the query parameters is not valid.")
        prefix, marker = request.query.get("prefix", ""), request.query.get("marker", "")
        limit = int(request.query.get("maxresults", "5000"))
        names = sorted(n for n in self._blobs if n.startswith(prefix) and n > marker)
        page, more = names[:limit], names[limit:]
        items = "".join(self._entry(n) for n in page)
        next_marker = escape(page[-1]) if more else ""
        xml = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="{escape(self.url)}/'
               f'{self.account}" ContainerName="{self.container}"><Prefix>{escape(prefix)}</Prefix>'
               f"<MaxResults>{limit}</MaxResults><Blobs>{items}</Blobs><NextMarker>{next_marker}</NextMarker>"
               "</EnumerationResults>")
        return web.Response(body=xml.encode(), content_type="application/xml")

    def _entry(self, name: str) -> str:
        b = self._blobs[name]
        return (f"<Blob><Name>{escape(name)}</Name><Properties><Last-Modified>{_http_date(b.modified)}</Last-Modified>"
                f"<Etag>{b.etag}</Etag><Content-Length>{b.size}</Content-Length>"
                "<Content-Type>application/octet-stream</Content-Type>"
                f"<Content-MD5>{b.md5}</Content-MD5><BlobType>BlockBlob</BlobType></Properties></Blob>")

    async def h_get(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refused(request)) is not None:
            return refused
        b = self._blobs.get(request.match_info["name"])
        if b is None:
            return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        headers = {"ETag": b.etag, "Last-Modified": _http_date(b.modified), "Accept-Ranges": "bytes",
                   "x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
        rng = parse_range(request.headers.get("x-ms-range") or request.headers.get("Range"), b.size)
        if rng == "416":
            return _storage_error(416, "InvalidRange", "The range specified is invalid for the current size of the resource.",
                                  {"Content-Range": f"bytes */{b.size}"})
        if isinstance(rng, tuple):
            start, end = rng
            headers["Content-Range"] = f"bytes {start}-{end}/{b.size}"
            headers["x-ms-blob-content-md5"] = b.md5  # a range: the whole blob's MD5 in its own header
            status = 206
        else:
            start, end, status = 0, b.size - 1, 200
            headers["Content-MD5"] = b.md5
        headers["Content-Length"] = str(end - start + 1)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        data = b.data if b.data is not None else None
        if data is None and b.path is not None:
            with b.path.open("rb") as fh:
                fh.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = fh.read(min(CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    await resp.write(chunk)
        elif data is not None:
            await resp.write(data[start:end + 1])
        await resp.write_eof()
        return resp


def _http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def _storage_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The Blob service's error shape: an x-ms-error-code header and an XML body."""
    xml = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>'
    return web.Response(status=status, body=xml.encode(), content_type="application/xml",
                        headers={"x-ms-error-code": code, **(headers or {})})
