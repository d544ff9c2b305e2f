"""What the destination already holds of the files a run would fetch: for `check` and `run --dry-run`.

Read only, through the trees `verify` and `status` read (a folder: localfiles.LocalTree; a bucket
prefix: buckettree.BucketTree). Per listed file, what a run would do with it:

- *verified*: there at its listed size, with a digest an earlier run recorded: kept, nothing fetched
  (the run re-hashes a local file whose journal entry no longer matches; that is not done here);
- *partial*: an unfinished download (a `.part`, an upload in progress): resumed, its held bytes kept;
- *replaced*: something else is under its name (another size, no recorded digest): fetched again,
  and it replaces that file once verified;
- *fetch*: nothing there.

Nothing is read but names, sizes and the small state files (journal, control files, upload parts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import UnsafeNameError

VERIFIED, PARTIAL, REPLACED, FETCH = "verified", "partial", "replaced", "fetch"


class HeldTree(Protocol):
    def size(self, rel: str) -> int | None: ...

    def recorded(self, rel: str) -> bool: ...

    def held(self, rel: str, size: int | None) -> int: ...


@dataclass(frozen=True)
class FileHeld:
    path: str  # in its batch folder
    size: int | None  # as listed
    state: str  # verified | partial | replaced | fetch
    held: int = 0  # bytes the run keeps (all of a verified file; a partial one's held bytes)
    note: str = ""

    @property
    def to_fetch(self) -> int:
        return max(0, (self.size or 0) - self.held)


def holding(tree: HeldTree, rel: str, path: str, size: int | None) -> FileHeld:
    """One file: `rel` from the export's root, `path` within its batch folder."""
    try:
        there = tree.size(rel)
        if there is not None:
            if size is not None and there != size:
                return FileHeld(path, size, REPLACED, note=f"size {there} there, {size} listed")
            if not tree.recorded(rel):
                return FileHeld(path, size, REPLACED, note="no digest recorded by an earlier run to check it against")
            return FileHeld(path, size, VERIFIED, there)
        held = tree.held(rel, size)
    except UnsafeNameError:  # refused by the listing already: a run fetches nothing of it either
        return FileHeld(path, size, FETCH)
    return FileHeld(path, size, PARTIAL, held) if held else FileHeld(path, size, FETCH)


@dataclass
class Tally:
    """Counts of one batch or of the whole plan."""

    fetch_files: int = 0  # files a run would download (all or part of them)
    fetch_bytes: int = 0
    verified_files: int = 0
    verified_bytes: int = 0
    partial_files: int = 0
    held_bytes: int = 0  # bytes partial files hold
    replaced_files: int = 0

    def add(self, files: Iterable[FileHeld]) -> Tally:
        for f in files:
            if f.state == VERIFIED:
                self.verified_files += 1
                self.verified_bytes += f.held
                continue
            self.fetch_files += 1
            self.fetch_bytes += f.to_fetch
            self.partial_files += f.state == PARTIAL
            self.held_bytes += f.held if f.state == PARTIAL else 0
            self.replaced_files += f.state == REPLACED
        return self

    @property
    def holds_anything(self) -> bool:
        return bool(self.verified_files or self.partial_files or self.replaced_files)
