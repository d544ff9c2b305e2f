"""The download model on its own: held ranges, claims and splits, the in-order hash."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from engine.pieces import Download
from engine.ranges import RangeSet


def test_rangeset_merges_touching_and_overlapping_ranges() -> None:
    r = RangeSet()
    for a, b in [(10, 20), (30, 40), (20, 25), (24, 31), (50, 50), (0, 2)]:
        r.add(a, b)
    assert r.as_list() == [[0, 2], [10, 40]]
    assert list(r.gaps(45)) == [(2, 10), (40, 45)]
    assert r.end_of_run(10) == 40 and r.end_of_run(15) == 40 and r.end_of_run(5) == 5
    assert r.covers(12, 40) and not r.covers(0, 10)
    assert r.total == 32 and r.last_end == 40


def test_rangeset_matches_a_byte_map_under_random_inserts() -> None:
    rng = random.Random(5)
    for _ in range(200):
        size = rng.randint(1, 300)
        held, r = bytearray(size), RangeSet()
        for _ in range(rng.randint(0, 12)):
            a = rng.randint(0, size)
            b = rng.randint(a, size)
            r.add(a, b)
            held[a:b] = b"\x01" * (b - a)
        runs = [(i, j) for i, j in _runs(held)]
        assert [tuple(x) for x in r.as_list()] == runs
        assert list(r.gaps(size)) == _runs(bytearray(1 - x for x in held))
        lo = rng.randint(0, size)
        hi = rng.randint(lo, size)  # a window: the gaps inside [lo, hi), as offsets of the file
        assert list(r.gaps(hi, lo)) == [(a + lo, b + lo) for a, b in _runs(bytearray(1 - x for x in held[lo:hi]))]


def _runs(bits: bytearray) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < len(bits):
        if bits[i]:
            j = i
            while j < len(bits) and bits[j]:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def test_a_free_connection_takes_the_second_half_of_the_largest_claim_on_a_piece_boundary() -> None:
    d = Download(64 << 20, align=1 << 20)
    main = d.next_claim()
    assert (main.pos, main.stop) == (0, 64 << 20)
    assert d.next_claim() is None  # nothing unclaimed is left
    tail = d.split_claim(minimum=1 << 20)
    assert (tail.pos, tail.stop) == (32 << 20, 64 << 20) and main.stop == 32 << 20
    main.pos = main.flushed = (30 << 20) + 5  # the main stream is almost at the split point
    d.done.add(0, main.flushed)
    third = d.split_claim(minimum=1 << 20)
    assert (third.pos, third.stop) == (48 << 20, 64 << 20)  # the largest claim was the tail
    while d.split_claim(minimum=8 << 20) is not None:
        pass
    assert sorted(c.remaining >> 20 for c in d.claims) == [1, 8, 8, 8, 8]  # no claim left worth two 8 MiB halves
    assert sum(c.remaining for c in d.claims) + d.done.total == 64 << 20  # nothing lost, nothing twice


def test_finding_unclaimed_ranges_waits_for_a_flush_thread_updating_the_held_ranges() -> None:
    """The event loop must not read the held ranges while a flush thread is half-way through
    adding one (RangeSet.add updates two lists): it takes the lock the flush holds around the add
    (only around it: hashing and reading back hold another, so the loop never waits for those)."""
    import threading

    d = Download(10 << 20)
    found: list = []
    with d._ranges_lock:  # as a flush thread inside Download.written's done.add
        reader = threading.Thread(target=lambda: found.extend(d._unclaimed()))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and not found  # waiting for the writer
    reader.join(5)
    assert found == [(0, 10 << 20)]
    with d._lock:  # a flush thread hashing or reading back does not hold the loop up
        assert list(d._unclaimed()) == [(0, 10 << 20)]


def test_bytes_buffered_by_a_stream_are_not_handed_to_another() -> None:
    d = Download(10 << 20)
    claim = d.next_claim()
    claim.pos = 3 << 20  # accepted, not yet written
    d.release(claim)  # e.g. its stream failed after flushing up to `flushed`
    again = d.next_claim()
    assert again.pos == claim.flushed == 0


def test_the_hash_is_the_whole_files_whatever_order_the_bytes_arrive_in() -> None:
    rng = random.Random(9)
    data = rng.randbytes(1 << 20)
    for trial in range(30):
        disk = bytearray(len(data))
        d = Download(len(data))
        cuts = sorted({0, len(data), *(rng.randrange(len(data)) for _ in range(rng.randint(1, 12)))})
        pieces = list(itertools.pairwise(cuts))
        rng.shuffle(pieces)

        def read_into(start: int, end: int, hasher) -> int:
            hasher.update(bytes(disk[start:end]))  # noqa: B023 - called within this iteration only
            return end

        for a, b in pieces:
            disk[a:b] = data[a:b]
            d.written(a, [data[a:b]], read_into)
        assert d.complete and d.hashed == len(data)
        assert d.digest() == hashlib.sha256(data).hexdigest(), trial


def test_out_of_order_bytes_are_read_back_once_and_only_once() -> None:
    data = bytes(range(256)) * 64
    reads: list[tuple[int, int]] = []
    d = Download(len(data))

    def read_into(start: int, end: int, hasher) -> int:
        reads.append((start, end))
        hasher.update(data[start:end])
        return end

    d.written(8192, [data[8192:]], read_into)  # a tail arrives first: nothing to hash yet
    assert d.hashed == 0 and reads == []
    d.written(0, [data[:4096]], read_into)  # the prefix, from memory
    assert d.hashed == 4096 and reads == []
    d.written(4096, [data[4096:8192]], read_into)  # closes the gap: the tail is read back once
    assert reads == [(8192, len(data))] and d.digest() == hashlib.sha256(data).hexdigest()


def test_resumed_ranges_are_hashed_as_far_as_they_are_contiguous() -> None:
    data = b"x" * 1000
    d = Download(1000, RangeSet([(0, 300), (600, 700)]))
    d.hash_held_prefix(lambda s, e, h: (h.update(data[s:e]), e)[1])
    assert d.hashed == 300
    assert [(c.pos, c.stop) for c in (d.next_claim(), d.next_claim())] == [(300, 600), (700, 1000)]


def test_unknown_size_is_one_stream_to_the_end_of_the_body() -> None:
    d = Download(None)
    claim = d.next_claim()
    assert (claim.pos, claim.stop) == (0, None)
    assert d.next_claim() is None and d.split_claim(1) is None


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_files(size: int) -> None:
    d = Download(size)
    claim = d.next_claim()
    assert (claim is None) == (size == 0)
