"""Azure Blob's List Blobs (the one Blob call besides ranged GETs the DLZ source makes), over the
run's aiohttp session: `GET {container}?restype=container&comp=list&prefix=…&marker=…` with the
SAS, paged by NextMarker. The XML is untrusted: a page is read up to a size cap, parsed without
entities, and only the fields used are taken.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote
from xml.etree import ElementTree

from ..errors import ExportError
from .client import PlatformClient, raise_for_status, read_capped

PAGE_BYTES = 32 << 20  # a page of 5000 entries is about 5 MB
MAX_PAGES = 10_000


@dataclass(frozen=True)
class Blob:
    name: str
    size: int | None
    etag: str | None
    md5: bytes | None  # Content-MD5 as the writer stored it (raw digest), when there is one


async def list_blobs(client: PlatformClient, container: str, prefix: str, sign: Callable[[str], Awaitable[str]]) -> list[Blob]:
    """Every blob under `prefix`, in name order."""
    blobs: list[Blob] = []
    marker = ""
    for _ in range(MAX_PAGES):
        query = f"restype=container&comp=list&prefix={quote(prefix, safe='')}" + (f"&marker={quote(marker, safe='')}" if marker else "")
        url = f"{await sign(container)}&{query}"
        raw = await client.policy.run(partial(_page, client, url), what=f"List Blobs {prefix}")
        page, marker = parse_list(raw)
        blobs += page
        if not marker:
            return blobs
    raise ExportError(f"List Blobs of {prefix}: more than {MAX_PAGES} pages")


async def _page(client: PlatformClient, url: str) -> bytes:
    async with client.request("GET", url) as resp:
        await raise_for_status(resp)
        raw = await read_capped(resp, PAGE_BYTES + 1)
    if len(raw) > PAGE_BYTES:
        raise ExportError(f"a List Blobs page larger than {PAGE_BYTES} bytes")
    return raw


def parse_list(raw: bytes) -> tuple[list[Blob], str]:
    """(blobs, NextMarker) of one EnumerationResults page."""
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise ExportError("a List Blobs answer with a DOCTYPE or entities: refused")
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise ExportError(f"List Blobs answered XML that does not parse: {exc}") from None
    blobs = [_blob(b) for b in root.iter("Blob")]
    return [b for b in blobs if b.name], (root.findtext("NextMarker") or "").strip()


def _blob(element: ElementTree.Element) -> Blob:
    props = element.find("Properties")

    def text(tag: str) -> str | None:
        return ((props.findtext(tag) or "").strip() or None) if props is not None else None

    length = text("Content-Length")
    return Blob(element.findtext("Name") or "", int(length) if length and length.isdigit() else None,
                text("Etag"), _md5(text("Content-MD5")))


def _md5(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == 16 else None
