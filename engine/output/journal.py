"""The state journal: which files earlier runs verified, so a rerun never fetches them again.

It lives at {out_dir}/.aep-export/journal.jsonl (journal.shard-I-of-N.jsonl for `--shard I/N`:
shards sharing an output directory never append to one file), one JSON line per verified file.
A run reads every journal in the folder, so a resharded or unsharded rerun trusts what any shard
verified. Deleting it is safe: a rerun then re-checks files already on disk (size, parquet
footer, fresh SHA-256) against the batch's checksum list instead of trusting the journal, and
still fetches nothing that is there and valid.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from ..layout import STATE_DIR, read_sums, shard_suffix

log = structlog.get_logger("aep_export.journal")

JOURNAL = "journal.jsonl"


def journal_name(shard: str | None = None) -> str:
    return f"journal{shard_suffix(shard)}.jsonl"


@dataclass(frozen=True)
class Verified:
    path: str  # relative to out_dir
    size: int
    sha256: str
    rows: int | None
    mtime_ns: int


INDEX_LINE = 1 << 16  # a longer line is not indexed (its file is re-checked instead)
LRU_SUMS = 64  # batch checksum lists kept read (recorded_sha256 without a journal entry)


class Journal:
    """Indexed, not held: per verified path, where its line is (a 64-bit hash of the path -> the
    journal file, offset and length), so a rerun over many files keeps about 100 bytes per file
    instead of the entries; a lookup reads its line back and checks the path (a hash collision
    only costs a re-check)."""

    def __init__(self, out_dir: Path, shard: str | None = None):
        self.out_dir = out_dir
        self.path = out_dir / STATE_DIR / journal_name(shard)
        self._index: dict[int, int] = {}  # hash(path) -> file number << 48 | offset << 16 | length
        self._files: list[Path] = []  # journal files by number (this run's own last)
        self._readers: dict[int, BinaryIO] = {}
        self._sums: OrderedDict[str, dict[str, str]] = OrderedDict()  # batch folder -> its checksum list (a few)
        self._fh: BinaryIO | None = None
        self._lock = threading.Lock()  # commits record from worker threads

    def load(self) -> None:
        """Index every journal of the folder (all shards', this one's last so its lines win)."""
        others = sorted(p for p in self.path.parent.glob("journal*.jsonl") if p != self.path)
        for path in [*others, self.path]:
            self._load(path)
        log.debug("journal_loaded", path=str(self.path), others=[p.name for p in others], verified_files=len(self._index))

    def _load(self, path: Path) -> None:
        """A torn last line (crash mid-append) is ignored. Read a line at a time: the journal of
        a large export is never held whole (30,000 files: ~6 MB, and a bytes object per line)."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below, once read
        except FileNotFoundError:
            return
        number = self._number(path)
        offset = 0
        with fh:
            for line in fh:
                entry = _parse(line)
                if entry is not None:
                    self._index_line(entry.path, number, offset, len(line))
                offset += len(line)

    def _number(self, path: Path) -> int:
        if path not in self._files:
            self._files.append(path)
        return self._files.index(path)

    def _index_line(self, rel_path: str, number: int, offset: int, length: int) -> None:
        key = hash(rel_path)
        if length < INDEX_LINE and offset < 1 << 32:
            self._index[key] = number << 48 | offset << 16 | length
        else:
            self._index.pop(key, None)  # an older line must not answer for it

    def entry(self, rel_path: str) -> Verified | None:
        """The last line recorded for this path, read back from its journal."""
        with self._lock:
            where = self._index.get(hash(rel_path))
            if where is None:
                return None
            number, offset, length = where >> 48, (where >> 16) & ((1 << 32) - 1), where & 0xFFFF
            if number not in self._readers:
                self._readers[number] = open(self._files[number], "rb")  # noqa: SIM115 - kept open for the run
            if self._fh is not None and number == self._files.index(self.path):
                self._fh.flush()
            line = os.pread(self._readers[number].fileno(), length, offset)
        entry = _parse(line)
        return entry if entry is not None and entry.path == rel_path else None

    def lookup(self, rel_path: str, final: Path) -> Verified | None:
        """The journal entry, if the file on disk is still the one that was verified."""
        entry = self.entry(rel_path)
        if entry is None:
            return None
        try:
            st = final.stat()
        except FileNotFoundError:
            return None
        return entry if (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns) else None

    def recorded_sha256(self, rel_path: str) -> str | None:
        """The digest an earlier run verified for this path, whatever happened to the file since:
        from a journal, else from its batch's checksum list (`_SHA256SUMS`, or the old name)."""
        entry = self.entry(rel_path)
        if entry:
            return entry.sha256
        dataset, _, rest = rel_path.partition("/")
        batch, _, in_batch = rest.partition("/")
        folder = f"{dataset}/{batch}"
        with self._lock:
            sums = self._sums.get(folder)
        if sums is None:
            sums = read_sums(self.out_dir / folder)
            with self._lock:
                self._sums[folder] = sums
                while len(self._sums) > LRU_SUMS:
                    self._sums.popitem(last=False)
        return sums.get(in_batch)

    def record(self, entry: Verified) -> None:
        self.record_many([entry])

    def record_many(self, entries: list[Verified]) -> None:
        """Append the lines of a group in one write (output/groupcommit.py); flushed, not synced."""
        if not entries:
            return
        lines = [json.dumps(asdict(e), separators=(",", ":")).encode("utf-8") + b"\n" for e in entries]
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab+")  # noqa: SIM115 - kept open for the run
                if self._fh.tell() and not _ends_with_newline(self.path):
                    self._fh.write(b"\n")  # a line torn by a crash: ours must not be glued to it
            number = self._number(self.path)
            offset = self._fh.tell()
            self._fh.write(b"".join(lines))
            self._fh.flush()
            for entry, line in zip(entries, lines, strict=True):
                self._index_line(entry.path, number, offset, len(line))
                offset += len(line)

    def sync(self) -> None:
        """Make the lines written so far durable (once per group commit)."""
        with self._lock:
            if self._fh is not None:
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


def _parse(line: bytes) -> Verified | None:
    try:
        return Verified(**json.loads(line))
    except (ValueError, TypeError):
        return None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
