"""What identifies the bytes a `.part` holds, so that a resume never joins two versions of a file.

With a validator (RFC 9110 §8.8: `ETag`, `Last-Modified`) recorded beside the held bytes, a resume
asks with `If-Range`: a 206 continues the same bytes, a 200 is the new file (start over). Every
response's validator is also compared with the recorded one: a change means start over.

Without a strong `ETag` (the Data Access API documents none), a held run is confirmed by bytes:
the last `RESUME_WINDOW` bytes before each place where the rerun writes next to it are asked
again in the same ranged request and compared with what is held; the run that ends the file is
confirmed by its first window, before anything is written. A mismatch starts the file over.
A `.part` held whole is one version already: it is committed after its checks, with no request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .ranges import RangeSet

RESUME_WINDOW = 4 << 10  # bytes of a held run re-fetched and compared when no strong ETag identifies them
_MAX_VALIDATOR = 256  # longer values are not kept (they are sent back in If-Range)
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True)
class Validator:
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def from_values(cls, etag: Any, last_modified: Any) -> Validator | None:
        """From a response's headers or a control file's fields: untrusted text, kept only if it
        can be sent back as a header value."""
        found = cls(_header_value(etag), _header_value(last_modified))
        return found if found.etag or found.last_modified else None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validator | None:
        return cls.from_values(headers.get("ETag"), headers.get("Last-Modified"))

    @property
    def strong(self) -> bool:
        """A strong ETag names exactly these bytes (a weak one only "equivalent" content)."""
        return self.etag is not None and not self.etag.startswith("W/")

    def if_range(self) -> str | None:
        """The value for If-Range: a strong ETag, else the date (a weak ETag is not allowed there)."""
        return self.etag if self.strong else self.last_modified

    def state(self) -> dict[str, str]:
        return {k: v for k, v in (("etag", self.etag), ("last_modified", self.last_modified)) if v}


def changed(held_under: Validator | None, seen: Validator | None) -> str | None:
    """Why a response is not the version the held bytes came from, or None if nothing says so."""
    if held_under is None:
        return None
    if held_under.etag and seen is not None and seen.etag:
        if _opaque(held_under.etag) != _opaque(seen.etag):
            return f"its ETag changed from {held_under.etag} to {seen.etag}"
    elif held_under.strong:  # no window confirmed the held bytes: only the ETag can
        return f"the response no longer carries the ETag {held_under.etag} the held bytes were fetched under"
    if held_under.last_modified and seen is not None and seen.last_modified not in (None, held_under.last_modified):
        return f"its Last-Modified changed from {held_under.last_modified} to {seen.last_modified}"
    return None


def resume_windows(held: RangeSet, size: int | None, window: int = RESUME_WINDOW) -> list[tuple[int, int]]:
    """The byte ranges to confirm against the server before writing next to bytes an earlier run
    left: the last `window` bytes of each held run the rerun continues, and the first of the run
    that ends the file. None when the whole file is held."""
    if size is not None and held.covers(0, size):
        return []
    found = []
    for start, end in held:
        if size is not None and end >= size:
            found.append((start, min(end, start + window)))
        else:
            found.append((max(start, end - window), end))
    return found


def read_held(read_into: Callable[[int, int, Any], int], start: int, end: int) -> bytes:
    """Held bytes [start, end) through a target's `read_into` (worker thread); shorter if not all held."""
    collected = _Collector()
    read_into(start, end, collected)
    return b"".join(collected.parts)


class _Collector:
    """Takes what `read_into` feeds a hasher (views of a reused buffer: copied)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, view: Any) -> None:
        self.parts.append(bytes(view))


def _opaque(etag: str) -> str:
    return etag.removeprefix("W/")  # the weak comparison: either may be weak


def _header_value(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= _MAX_VALIDATOR and _PRINTABLE.fullmatch(value) else None
