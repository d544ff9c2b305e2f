"""The object store as the staging and upload code sees it: a small interface, two implementations.

`bucket.Bucket` is S3 (multipart uploads), `azure.Container` is Azure Blob and ADLS Gen2 (staged
blocks). Keys are relative to the URL's prefix. A file in flight is staged under its staging key
part by part (`Multipart`), committed there into a readable staging object, checked, then copied
server-side to its final key with its digest and rows as metadata: nothing in `objectstore.py`,
`upload.py`, `buckettree.py` or `engine/transfer/` knows which store it is.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, TypeVarTuple

import anyio.from_thread
import anyio.lowlevel

from ..config import StoreURL
from ..masking import mask

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str  # S3's ETag of the part; Azure's block id
    sha256: str | None  # base64, as S3 lists it (None where the store does not list it)

    def for_completion(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"PartNumber": self.number, "ETag": self.etag}
        if self.sha256:
            entry["ChecksumSHA256"] = self.sha256
        return entry


@dataclass(frozen=True)
class Upload:
    rel: str  # key relative to the prefix
    upload_id: str


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def quoted(text: object, limit: int) -> str:
    """What a store's failure says, fit for an error text (which reaches _report.json and --json,
    where log masking does not): every registered secret masked first (a cut could split one), then cut."""
    masked: str = mask(str(text))
    return masked[:limit]


class Prefixed:
    """What S3's and Azure's stores share: keys relative to the URL's prefix, and the store's event
    loop, which blocking threads (the checks) call back into."""

    def __init__(self, url: StoreURL):
        self.url = url
        self._base = f"{url.prefix}/" if url.prefix else ""
        self.token = anyio.lowlevel.current_token()  # lets any thread call back into this event loop

    def call(self, fn: Callable[[*Ts], Coroutine[Any, Any, T]], *args: *Ts) -> T:
        """Run a coroutine function on the store's event loop from a blocking thread."""
        return anyio.from_thread.run(fn, *args, token=self.token)

    def key(self, rel: str) -> str:
        return self._base + rel

    def rel(self, key: str) -> str:
        return key[len(self._base):]


class Multipart(Protocol):
    """The parts of a file not yet committed (S3: a multipart upload; Azure: uncommitted blocks),
    listed by a fresh pod to resume, committed into one object, or thrown away."""

    async def create(self, rel: str) -> str:
        """A handle for a new upload to `rel` (S3's upload id; Azure needs none)."""

    async def upload_part(self, rel: str, upload_id: str, number: int, body: io.RawIOBase, length: int,
                          sha256: bytes, *, offset: int) -> Part:
        """Part `number` (1-based), bytes [offset, offset + length) of the file, checked by the store."""

    async def in_progress(self, rel_prefix: str) -> list[Upload]:
        """The uploads under the prefix neither committed nor thrown away."""

    async def list_parts(self, rel: str, upload_id: str) -> list[Part] | None:
        """The parts staged so far, or None when the upload no longer exists."""

    async def complete(self, rel: str, upload_id: str, parts: list[Part]) -> None:
        """The parts, in order, become the object `rel`."""

    async def abort(self, rel: str, upload_id: str) -> None:
        """The staged parts are thrown away (an object already committed there stays)."""


class Store(Protocol):
    @property
    def url(self) -> StoreURL: ...

    @property
    def multipart(self) -> Multipart: ...

    def call(self, fn: Callable[[*Ts], Coroutine[Any, Any, T]], *args: *Ts) -> T:
        """Run a coroutine function on the store's event loop from a blocking thread."""

    def list(self, rel_prefix: str) -> AsyncIterator[tuple[str, int]]:
        """(rel, size) of every committed object under the prefix."""

    async def metadata(self, rel: str) -> dict[str, str] | None:
        """An object's user metadata (our keys as written), or None when it does not exist."""

    def read(self, rel: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) of an object, as they arrive."""

    async def read_text(self, rel: str) -> str | None: ...

    async def put(self, rel: str, body: bytes | io.RawIOBase, length: int, sha256: bytes,
                  metadata: dict[str, str] | None = None) -> None:
        """One whole object, visible only once complete and checked."""

    async def delete(self, rel: str) -> None: ...

    async def copy(self, src: str, dst: str, size: int, metadata: dict[str, str]) -> str | None:
        """Server-side copy with new metadata; the new object appears whole. Returns the store's
        SHA-256 of the copy (base64) where it computes one, else None."""


class ObjectView:
    """An object's bytes read from a worker thread (through anyio.from_thread), e.g. for the checks."""

    path = None  # no local path: the deep parquet check needs one

    def __init__(self, bucket: Store, rel: str, size: int):
        self.bucket, self.rel, self.size = bucket, rel, size

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        stream = self.bucket.read(self.rel, start, end)
        try:
            while True:
                try:
                    yield self.bucket.call(stream.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self.bucket.call(stream.aclose)

    def read_at(self, offset: int, n: int) -> bytes:
        end = min(self.size, offset + n)
        return b"".join(self.chunks(offset, end)) if end > offset else b""

    def digest(self, algorithm: str) -> bytes:
        h = hashlib.new(algorithm)
        for chunk in self.chunks(0, self.size):
            h.update(chunk)
        return h.digest()
