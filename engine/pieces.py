"""The one model of a file being fetched (aria2-style): what is held, who fills what, the hash.

- `done`: byte ranges already written to the destination (the control file records exactly these,
  so a crash keeps every one of them).
- `claims`: ranges being filled right now, one per stream; a free connection takes the second half
  of the largest one (parallel ranges at the start, tail sharing at the end: the same operation).
- `hashed`: the whole-file SHA-256 is fed in order as the held prefix grows. Bytes arriving at the
  prefix are hashed from memory; bytes that arrived out of order (other streams, an earlier run)
  are re-read from the destination once the prefix reaches them, never before.
- `unconfirmed`: windows of bytes an earlier run left that must match the server's before
  anything is written next to them (engine/validators.py), when no strong ETag vouches for them.

Resume, parallel ranges, tail sharing, restarts and verification all work on this one object.
Writes and hashing happen in worker threads (one per flush), hence the lock.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .ranges import RangeSet
from .validators import resume_windows

ReadInto = Callable[[int, int, object], int]  # (start, end, hasher) -> where the bytes ended


@dataclass(eq=False)
class Claim:
    """[pos, stop): the range one stream fills. `flushed` <= pos: bytes before it are written."""

    pos: int
    stop: int | None  # None: the end is not known yet (no size from listing or server)
    flushed: int = -1

    def __post_init__(self) -> None:
        if self.flushed < 0:
            self.flushed = self.pos

    @property
    def remaining(self) -> int:
        return 0 if self.stop is None else self.stop - self.pos


class Download:
    """Held ranges, active claims and the in-order SHA-256 of one file."""

    def __init__(self, size: int | None, done: RangeSet | None = None, align: int = 1 << 20):
        self.size = size
        self.done = done or RangeSet()
        self.claims: list[Claim] = []
        self.align = align  # splits land on multiples of this (the destination's piece size)
        self.hasher = hashlib.sha256()
        self.hashed = 0
        self.unconfirmed: list[tuple[int, int]] = []  # [start, end) windows of held bytes not yet matched
        self._lock = threading.Lock()  # the hash and its state; held while hashing and reading back
        self._ranges_lock = threading.Lock()  # `done` itself, held only while it changes or is copied

    # -- claims (event loop only) ------------------------------------------------------------

    def next_claim(self) -> Claim | None:
        """The first missing range nobody fills yet, whole."""
        for start, end in self._unclaimed():
            return self._add(Claim(start, end))
        if self.size is None and not self.claims and not self.done.total:
            return self._add(Claim(0, None))  # unknown size: one stream reads to the body's end
        return None

    def split_claim(self, minimum: int) -> Claim | None:
        """Work for a free connection: a missing range nobody fills, else the second half of the
        largest claim, when both halves are at least `minimum` bytes."""
        if self.size is None:
            return None
        for start, end in self._unclaimed():
            return self._add(Claim(start, end))
        victim = max(self.claims, key=lambda c: c.remaining, default=None)
        if victim is None or victim.stop is None or victim.remaining < 2 * minimum:
            return None
        mid = victim.pos + victim.remaining // 2
        mid = min(victim.stop - minimum, -(-mid // self.align) * self.align)  # round up to a piece
        if mid - victim.pos < minimum:
            return None
        tail = Claim(mid, victim.stop)
        victim.stop = mid  # its stream stops there: it reads `stop` before every chunk
        return self._add(tail)

    def release(self, claim: Claim) -> None:
        if claim in self.claims:
            self.claims.remove(claim)

    def _add(self, claim: Claim) -> Claim:
        self.claims.append(claim)
        return claim

    def _unclaimed(self) -> Iterator[tuple[int, int]]:
        if self.size is None:
            return
        busy = RangeSet((c.flushed, c.stop) for c in self.claims if c.stop is not None)  # buffered bytes too
        with self._ranges_lock:  # a flush thread may be inside done.add: a whole state, never half
            missing = list(self.done.gaps(self.size))
        for start, end in missing:
            yield from busy.gaps(end, start)

    # -- bytes (worker threads) --------------------------------------------------------------

    def written(self, offset: int, chunks: list[bytes], read_into: ReadInto) -> None:
        """Bytes [offset, offset+n) are on the destination: hold them, and extend the hash."""
        n = sum(map(len, chunks))
        with self._lock:
            if offset == self.hashed:
                for chunk in chunks:
                    self.hasher.update(chunk)  # releases the GIL for large chunks
                self.hashed += n
            with self._ranges_lock:
                self.done.add(offset, offset + n)
            self._catch_up(read_into)

    def hash_held_prefix(self, read_into: ReadInto) -> None:
        """Hash what an earlier run left, as far as it is contiguous from the start."""
        with self._lock:
            self._catch_up(read_into)

    def _catch_up(self, read_into: ReadInto) -> None:
        end = self.done.end_of_run(self.hashed)
        if end > self.hashed:  # out-of-order bytes now continue the prefix: read them back
            self.hashed = read_into(self.hashed, end, self.hasher)

    def snapshot(self) -> list[list[int]]:
        with self._lock:
            return self.done.as_list()

    # -- held bytes an earlier run left (event loop only) -------------------------------------

    def distrust_held(self) -> None:
        """Nothing identifies the held bytes as the server's current file: confirm them by window."""
        self.unconfirmed = resume_windows(self.done, self.size)

    def window_before(self, offset: int) -> int:
        """Bytes before `offset` to ask again and compare (a held run ends there unconfirmed), or 0."""
        return next((offset - start for start, end in self.unconfirmed if end == offset), 0)

    def tail_window(self) -> tuple[int, int] | None:
        """The unconfirmed window of the held run that ends the file: no stream starts after it."""
        if self.size is None:
            return None
        return next(((start, end) for start, end in self.unconfirmed if self.done.end_of_run(start) >= self.size), None)

    def confirmed(self, start: int, end: int) -> None:
        if (start, end) in self.unconfirmed:
            self.unconfirmed.remove((start, end))

    # -- whole file ---------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.size is not None and self.done.covers(0, self.size)

    def restart(self, size: int | None) -> None:
        """Forget everything (the server's file is not the one we started); no claim may remain."""
        with self._lock:
            self.size = size
            with self._ranges_lock:
                self.done.clear()
            self.hasher = hashlib.sha256()
            self.hashed = 0
            self.unconfirmed = []

    def digest(self) -> str:
        return self.hasher.hexdigest()

