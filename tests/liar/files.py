"""Case 1 of issue #17: a file regenerated on the server between a killed run and its rerun.

`Regenerated` serves one listed file itself, from bytes in memory (`versions`, set once the fake
has generated its files): the first version until `regenerate()`, then the next (same name, same
size, other bytes). It answers ranges, and with `validators` sends `ETag` and/or `Last-Modified`
and honours `If-Range` as RFC 9110 says (a validator that does not match gets the whole file with
200), unless `honour_if_range` is off (a proxy that drops the header: a 206 of the new bytes, with
the new validator). While `rate` is set the body is paced, so that a kill lands mid-file. Every
request is recorded.

`same_size_variant(parquet)` makes the other version: the same rows in reverse order, a valid
parquet padded (in its key-value metadata) to exactly the same size.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import io
import re
from dataclasses import dataclass

from aiohttp import web

from . import wrap

_CHUNK = 16 << 10


@dataclass
class Served:
    version: int
    range: str | None
    if_range: str | None
    status: int


class Regenerated:
    def __init__(self, fp, name: str, *, validators: tuple[str, ...] = (), honour_if_range: bool = True,
                 rate: float | None = None):
        self.name, self.validators = name, validators
        self.versions: list[bytes] = []
        self.honour_if_range, self.rate = honour_if_range, rate
        self.version = 0
        self.sent = 0  # body bytes sent of the current version
        self.served: list[Served] = []
        wrap(fp, "h_files", self._lie)

    def regenerate(self) -> None:
        self.version += 1
        self.sent = 0

    def headers(self) -> dict[str, str]:
        v = self.version
        found = {"ETag": f'"{hashlib.sha256(self.versions[v]).hexdigest()[:20]}"',
                 "Last-Modified": email.utils.formatdate(1_767_225_600 + 3600 * v, usegmt=True)}
        return {k: found[k] for k in self.validators}

    async def _lie(self, original, request: web.Request) -> web.StreamResponse:
        if request.method != "GET" or request.query.get("path") != self.name:
            return await original(request)
        assert len({len(v) for v in self.versions}) == 1, "every version has the listed size"
        data, validators = self.versions[self.version], self.headers()
        asked, if_range = request.headers.get("Range"), request.headers.get("If-Range")
        span = _range(asked, len(data))
        if span is not None and if_range is not None and self.honour_if_range and if_range not in validators.values():
            span = None  # not the version the client holds: the whole new file
        status = 200 if span is None else 206
        self.served.append(Served(self.version, asked, if_range, status))
        start, end = span or (0, len(data) - 1)
        resp = web.StreamResponse(status=status, headers={"Accept-Ranges": "bytes", **validators})
        resp.content_type = "application/octet-stream"
        resp.content_length = end - start + 1
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        await resp.prepare(request)
        try:
            for at in range(start, end + 1, _CHUNK):
                chunk = data[at:min(at + _CHUNK, end + 1)]
                await resp.write(chunk)
                self.sent += len(chunk)
                if self.rate:
                    await asyncio.sleep(len(chunk) / self.rate)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away (killed)
        return resp


def _range(value: str | None, size: int) -> tuple[int, int] | None:
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", value or "")
    if not m or int(m.group(1)) >= size:
        return None
    return int(m.group(1)), min(size - 1, int(m.group(2)) if m.group(2) else size - 1)


def same_size_variant(parquet: bytes) -> bytes:
    """Another valid parquet file of exactly the same size: the rows in reverse order, written
    with zstd (smaller than a snappy original), padded in its key-value metadata."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(parquet))
    table = table.take(list(range(table.num_rows - 1, -1, -1)))
    pad = 0
    for _ in range(8):
        out = io.BytesIO()
        with pq.ParquetWriter(out, table.schema, compression="zstd") as writer:
            writer.write_table(table)
            writer.add_key_value_metadata({"pad": "x" * pad})  # in the footer only: one byte a byte
        data = out.getvalue()
        if len(data) == len(parquet):
            assert data != parquet
            return data
        pad += len(parquet) - len(data)
        assert pad >= 0, "the variant is larger than the original"
    raise AssertionError("could not pad the variant to the original's size")
