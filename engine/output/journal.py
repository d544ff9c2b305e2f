"""The state journal: which files earlier runs verified, so a rerun never fetches them again.

It lives at {out_dir}/.aep-export/journal.jsonl, one JSON line per verified file. Deleting it is
safe: a rerun then re-checks files already on disk (size, parquet footer, fresh SHA-256)
instead of trusting the journal, and still fetches nothing that is there and valid.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_DIR = ".aep-export"
JOURNAL = "journal.jsonl"


@dataclass(frozen=True)
class Verified:
    path: str  # relative to out_dir
    size: int
    sha256: str
    rows: int | None
    mtime_ns: int


class Journal:
    def __init__(self, out_dir: Path):
        self.path = out_dir / STATE_DIR / JOURNAL
        self._entries: dict[str, Verified] = {}
        self._fh = None
        self._lock = threading.Lock()  # commits record from worker threads

    def load(self) -> None:
        """Read earlier runs' lines; a torn last line (crash mid-append) is ignored."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
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
        """The digest an earlier run verified for this path, whatever happened to the file since."""
        entry = self._entries.get(rel_path)
        return entry.sha256 if entry else None

    def record(self, entry: Verified) -> None:
        line = json.dumps(asdict(entry), separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
            self._fh.write(line)
            self._fh.flush()
            self._entries[entry.path] = entry

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
