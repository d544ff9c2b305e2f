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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

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


class Journal:
    def __init__(self, out_dir: Path, shard: str | None = None):
        self.out_dir = out_dir
        self.path = out_dir / STATE_DIR / journal_name(shard)
        self._entries: dict[str, Verified] = {}
        self._sums: dict[str, dict[str, str]] = {}  # batch folder -> its checksum list, read once
        self._fh: TextIO | None = None
        self._lock = threading.Lock()  # commits record from worker threads

    def load(self) -> None:
        """Read every journal of the folder (all shards', this one's last so its lines win)."""
        others = sorted(p for p in self.path.parent.glob("journal*.jsonl") if p != self.path)
        for path in [*others, self.path]:
            self._load(path)
        log.debug("journal_loaded", path=str(self.path), others=[p.name for p in others], verified_files=len(self._entries))

    def _load(self, path: Path) -> None:
        """A torn last line (crash mid-append) is ignored."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                entry = Verified(**json.loads(line))
            except (ValueError, TypeError):
                continue
            self._entries[entry.path] = entry

    def lookup(self, rel_path: str, final: Path) -> Verified | None:
        """The journal entry, if the file on disk is still the one that was verified."""
        entry = self._entries.get(rel_path)
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
        entry = self._entries.get(rel_path)
        if entry:
            return entry.sha256
        dataset, _, rest = rel_path.partition("/")
        batch, _, in_batch = rest.partition("/")
        folder = f"{dataset}/{batch}"
        if folder not in self._sums:
            self._sums[folder] = read_sums(self.out_dir / folder)
        return self._sums[folder].get(in_batch)

    def record(self, entry: Verified) -> None:
        line = json.dumps(asdict(entry), separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open for the run
                if self._fh.tell() and not _ends_with_newline(self.path):
                    line = "\n" + line  # a line torn by a crash: ours must not be glued to it
            self._fh.write(line)
            self._fh.flush()
            self._entries[entry.path] = entry

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
