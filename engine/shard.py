"""`run --shard I/N`: which config entries fall to shard I of N.

A pure, stable function of each entry's key (a dataset's id, or its name when the entry names it;
an audience's export job id) decides its shard, so N pods given the same config split the work
with no overlap and no gap, whatever order they start in, and a pod that restarts redoes only its
own share. I is 0-based, so a Kubernetes Indexed Job passes `$(JOB_COMPLETION_INDEX)/N`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'I/N' with 0 <= I < N; ValueError (one readable sentence) otherwise."""
    m = _SPEC.fullmatch(text or "")
    if not m:
        raise ValueError(f"{text!r} is not I/N (for example 0/4: the first of 4 shards; I counts from 0)")
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"{text!r}: the shard count must be between 1 and {MAX_SHARDS}")
    if index >= count:
        raise ValueError(f"{text!r}: the shard index counts from 0, so it must be below {count}")
    return Shard(index, count)


def shard_of(key: str, count: int) -> int:
    """The shard of a key: the first 8 bytes of its SHA-256, modulo N (the same on every machine
    and Python version, unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def entry_key(entry: Any) -> str:
    """What decides an entry's shard: `dataset:<id or name>`, `audience:<export job id>` or
    `audience:segment:<segment id>`."""
    if hasattr(entry, "segment_id"):  # an [[audiences]] entry
        return str(entry.label)
    return f"dataset:{entry.label}" if entry.id is not None else f"dataset:{entry.name}"


@dataclass
class Share:
    """The entries one shard exports, and which shard exports each of the other datasets."""

    datasets: list[Any]
    audiences: list[Any]
    elsewhere: dict[str, tuple[str, Any]] = field(default_factory=dict)  # dataset id -> (its shard, its entry)


def share_of(datasets: list[Any], audiences: list[Any], shard: Shard | None) -> Share:
    if shard is None:
        return Share(list(datasets), list(audiences))
    def mine(entry: Any) -> bool:
        return shard_of(entry_key(entry), shard.count) == shard.index

    share = Share([d for d in datasets if mine(d)], [a for a in audiences if mine(a)])
    for d in datasets:
        if not mine(d) and getattr(d, "id", None):
            share.elsewhere[d.id] = (f"{shard_of(entry_key(d), shard.count)}/{shard.count}", d)
    return share
