"""Checks that prove a file is what the platform promised: size, digests, parquet footer and page
layout, rows."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from .footer import (
    DATA_PAGE,
    DATA_PAGE_V2,
    DICTIONARY_PAGE,
    ColumnChunk,
    FooterError,
    PageHeader,
    Truncated,
    footer_counts,
    page_header,
)

PARQUET_MAGIC = b"PAR1"
_HASH_BLOCK = 256 << 10  # a reused buffer per thread: re-reads cost at most this per disk thread
# RFC 9530 names -> hashlib names; RFC 3230 "Digest" uses the same words in other case.
_ALGORITHMS = {"sha-256": "sha256", "sha-512": "sha512", "md5": "md5", "sha": "sha1"}
_SF_DICT_ITEM = re.compile(r"\s*([A-Za-z0-9_\-]+)\s*=\s*:([A-Za-z0-9+/=]+):\s*")


@dataclass(frozen=True)
class DigestClaim:
    """A server's statement about the whole file's digest, e.g. from Repr-Digest."""

    algorithm: str  # hashlib name
    digest: bytes
    header: str


def digest_claims(headers: Mapping[str, str], *, full_body: bool) -> list[DigestClaim]:
    """Digests the server sent that describe the whole file.

    Repr-Digest always describes the whole representation; Content-Digest, Digest and
    Content-MD5 describe this body, so they only count when the body is the whole file.
    """
    claims = _parse_sf_digests(headers.get("Repr-Digest"), "Repr-Digest")
    if full_body:
        claims += _parse_sf_digests(headers.get("Content-Digest"), "Content-Digest")
        claims += _parse_legacy_digest(headers.get("Digest"))
        if md5 := headers.get("Content-MD5"):
            claims += _decoded("md5", md5.strip(), "Content-MD5")
    return claims


def _parse_sf_digests(value: str | None, header: str) -> list[DigestClaim]:
    if not value:
        return []
    claims = []
    for item in value.split(","):
        if m := _SF_DICT_ITEM.fullmatch(item):
            claims += _decoded(m.group(1).lower(), m.group(2), header)
    return claims


def _parse_legacy_digest(value: str | None) -> list[DigestClaim]:
    if not value:
        return []
    claims = []
    for item in value.split(","):
        algo, sep, b64 = item.strip().partition("=")
        if sep:
            claims += _decoded(algo.lower(), b64.strip(), "Digest")
    return claims


def _decoded(algo: str, b64: str, header: str) -> list[DigestClaim]:
    name = _ALGORITHMS.get(algo)
    if name is None:
        return []
    try:
        return [DigestClaim(name, base64.b64decode(b64, validate=True), header)]
    except ValueError:
        return []


def check_digests(sha256_hex: str, claims: list[DigestClaim], digest_of: Callable[[str], bytes]) -> None:
    """Compare every claim; sha-256 uses the streaming hash, others re-read the file (rare)."""
    computed: dict[str, bytes] = {"sha256": bytes.fromhex(sha256_hex)}
    for claim in claims:
        if claim.algorithm not in computed:
            computed[claim.algorithm] = digest_of(claim.algorithm)
        if computed[claim.algorithm] != claim.digest:
            raise IntegrityError(f"{claim.header} {claim.algorithm} does not match the bytes received")


def file_digest(path: Path, algorithm: str = "sha256", limit: int | None = None) -> bytes:
    """Digest of a file (or of its first `limit` bytes)."""
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        hash_from_disk(fh.fileno(), h, 0, os.fstat(fh.fileno()).st_size if limit is None else limit)
    return h.digest()


_buffers = threading.local()


def hash_from_disk(fd: int, hasher: Any, start: int, end: int) -> int:
    """Feed bytes [start, end) of the file to the hasher; returns where the file ended (<= end).

    Out-of-order ranges are read back by many threads at once: each reuses one buffer of its own."""
    view = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(_HASH_BLOCK))
    offset = start
    while offset < end:
        n = os.preadv(fd, [view[: min(_HASH_BLOCK, end - offset)]], offset)
        if n == 0:
            break
        hasher.update(view[:n])
        offset += n
    return offset


_MAX_FOOTER = 256 << 20


def parquet_rows(path: Path, *, deep: bool = False) -> int:
    """Row count from the footer (FileMetaData), after checking both magic markers, that the
    row groups add up and that every page is where the footer says; deep also reads every page
    with pyarrow (page checksums)."""
    rows = _footer_rows(path)
    if deep:
        read_every_page(path, path.name)
    return rows


def read_every_page(source: Any, name: str) -> None:
    """The deep check, wherever the file is (a path, or a file object over a bucket's object):
    pyarrow reads every page and checks its checksum."""
    import pyarrow.parquet as pq  # heavy: only for the optional deep check

    try:
        pq.read_table(source, page_checksum_verification=True)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise IntegrityError(f"{name}: parquet pages unreadable: {exc}") from exc


def _footer_rows(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            fd = fh.fileno()
            return footer_rows(lambda offset, n: os.pread(fd, n, offset), os.fstat(fd).st_size, path.name, pages=True)
    except OSError as exc:
        raise IntegrityError(f"cannot read {path.name}: {exc}") from exc


def footer_rows(read_at: Callable[[int, int], bytes], size: int, name: str, *, pages: bool = False) -> int:
    """Row count from a parquet file's footer, read through `read_at(offset, n)` (any storage):
    both magic markers, a footer that fits, and row groups that add up to the stated rows.
    `pages` (a read per page: for local files) also walks every column chunk's pages."""
    if size < 12 or read_at(0, 4) != PARQUET_MAGIC:
        raise IntegrityError(f"{name} is not a parquet file (magic bytes missing)")
    length, tail = struct.unpack("<I4s", read_at(size - 8, 8))
    if tail != PARQUET_MAGIC:
        raise IntegrityError(f"{name} is not a parquet file (magic bytes missing)")
    if not 0 < length <= min(size - 12, _MAX_FOOTER):
        raise IntegrityError(f"{name}: footer length {length} does not fit a {size}-byte file")
    raw = read_at(size - 8 - length, length)
    try:
        meta = footer_counts(raw)
    except FooterError as exc:
        raise IntegrityError(f"{name}: parquet footer unreadable: {exc}") from exc
    if meta.num_rows is None or meta.num_rows < 0 or not meta.schema_elements:
        raise IntegrityError(f"{name}: parquet footer incomplete")
    in_groups = sum(rows or 0 for rows in meta.row_group_rows)
    if in_groups != meta.num_rows:
        raise IntegrityError(f"{name}: row groups hold {in_groups} rows, the footer says {meta.num_rows}")
    if pages:
        for chunk in meta.chunks:
            _check_chunk_pages(read_at, chunk, size - 8 - length, name)
    return meta.num_rows


_PAGE_HEADER_READ = 256  # bytes read for a page header first (most are 20 to 60)
_MAX_PAGE_HEADER = 16 << 20
_LEGACY_SLACK = 100  # parquet-mr <= 1.2.8 left dictionary page headers out of total_compressed_size


def _check_chunk_pages(read_at: Callable[[int, int], bytes], chunk: ColumnChunk, data_end: int, name: str) -> None:
    """Walk a column chunk's pages by their headers: each must parse, the dictionary page and the
    first data page must be where the footer says, and the pages must fill the chunk. A file
    joined from two versions (a resume across a change on the server) fails here: the footer of
    one points into the pages of the other."""
    end = chunk.start + chunk.length
    if chunk.start < 4 or chunk.length <= 0 or end > data_end:
        raise IntegrityError(f"{name}: a column chunk at {chunk.start} (+{chunk.length}) lies outside the data pages")
    pos, seen_data = chunk.start, False
    while pos < end:
        try:
            header = _page_header_at(read_at, pos, data_end)
        except FooterError as exc:
            raise IntegrityError(f"{name}: no page header at byte {pos} where the footer puts a page: {exc}") from None
        if pos == chunk.dictionary_page and header.kind != DICTIONARY_PAGE:
            raise IntegrityError(f"{name}: the page at byte {pos} is not the dictionary page the footer says")
        if pos == chunk.data_page:
            if header.kind not in (DATA_PAGE, DATA_PAGE_V2):
                raise IntegrityError(f"{name}: the page at byte {pos} is not the data page the footer says")
            seen_data = True
        pos += header.header_size + header.compressed_size
    if not seen_data or not end <= pos <= min(end + _LEGACY_SLACK, data_end):
        raise IntegrityError(f"{name}: the pages of the column chunk at {chunk.start} do not fill its {chunk.length} bytes")


def _page_header_at(read_at: Callable[[int, int], bytes], pos: int, data_end: int) -> PageHeader:
    n = _PAGE_HEADER_READ
    while True:
        raw = read_at(pos, min(n, data_end - pos))
        try:
            return page_header(raw)
        except Truncated:
            if len(raw) < min(n, data_end - pos) or n >= min(_MAX_PAGE_HEADER, data_end - pos):
                raise
            n *= 64


def expected_record_count(batch: Mapping[str, Any]) -> int | None:
    """Record count the Catalog states for a batch, in either metrics form; None if unknown."""
    found = batch.get("metrics")
    metrics: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    for source, key in ((metrics, "outputRecordCount"), (metrics, "recordsWritten"), (batch, "recordCount")):
        value = source.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return int(value)
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None
