"""Byte ranges a file already has: a sorted set of disjoint, non-adjacent [start, end) intervals."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class RangeSet:
    """Half-open byte intervals, merged on insert. Small: one interval per gap-free run of bytes."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()):
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)  # first interval that ends at or after start
        j = bisect.bisect_right(self._starts, end)  # intervals from i up to j touch [start, end)
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def end_of_run(self, offset: int) -> int:
        """Where the run of held bytes starting at `offset` ends (`offset` itself if none)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return self._ends[i] if i >= 0 and self._ends[i] > offset else offset

    def gaps(self, end: int, start: int = 0) -> Iterator[tuple[int, int]]:
        """The missing intervals of [start, end)."""
        pos = start
        for held_start, held_end in zip(self._starts, self._ends, strict=False):
            if held_end <= pos:
                continue
            if held_start >= end:
                break
            if held_start > pos:
                yield pos, held_start
            pos = max(pos, held_end)
        if pos < end:
            yield pos, end

    def covers(self, start: int, end: int) -> bool:
        return self.end_of_run(start) >= end

    @property
    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=False))

    @property
    def last_end(self) -> int:
        return self._ends[-1] if self._ends else 0

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()

    def as_list(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=False)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=False)

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"RangeSet({self.as_list()})"
