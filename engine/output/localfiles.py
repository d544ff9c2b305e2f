"""The batch files of a local export, and its read-only view for `verify` and status.

Writes are atomic (diskio.atomic_write: temp + rename, fsync'ed when durable); every path is proven to stay below
out_dir (`paths.contained`), as for the downloaded files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..checks.integrity import file_digest, parquet_rows
from ..errors import UnsafeNameError
from ..layout import SUCCESS, is_temporary
from .control import held_bytes
from .diskio import atomic_write, make_folders, no_space_is_disk_full, rewrite_in_place
from .journal import Journal
from .paths import contained

FOLDERS_KEPT = 256  # folders remembered as made (a batch's files and lists are written close together)


class LocalFiles:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self._folders: set[Path] = set()  # folders made lately (a cache: at most FOLDERS_KEPT)

    def path(self, rel: str) -> Path:
        return contained(self.out_dir, rel)

    def write_text(self, rel: str, text: str, *, durable: bool = True) -> None:
        """Whole or not at all; no space left is the run's DiskFull, with no temp file left."""
        path = self.path(rel)
        self.make_folder(path.parent)
        atomic_write(path, text, durable=durable)

    def write_pieces(self, rel: str, pieces: Iterable[str], *, durable: bool = True) -> None:
        """As write_text, for a text made piece by piece: written as it comes, never held whole."""
        path = self.path(rel)
        self.make_folder(path.parent)
        atomic_write(path, pieces, durable=durable)

    def make_folder(self, folder: Path) -> None:
        """The folder and its parents, made once per run (known afterwards: no syscall)."""
        if folder not in self._folders:
            with no_space_is_disk_full(folder):
                self.created(make_folders(folder))
            if len(self._folders) >= FOLDERS_KEPT:  # not one per batch of the run: a few cost a mkdir again
                self._folders.clear()
            self._folders.add(folder)

    def created(self, folders: list[Path]) -> None:
        """Folders this run made (a destination that syncs names makes their entries durable)."""

    def rewrite_in_place(self, rel: str, text: str) -> bool:
        """Overwrite a file in its own blocks (no space needed); False when it cannot (diskio)."""
        return rewrite_in_place(self.path(rel), text)

    def read_text(self, rel: str) -> str | None:
        try:
            return self.path(rel).read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def exists(self, rel: str) -> bool:
        """A file is there (a folder of that name is not one of ours: a listed id can make one)."""
        return self.path(rel).is_file()

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def complete_batches(self, dataset_folder: str) -> list[str]:
        """Names of the batch folders in a dataset's folder that hold a `_SUCCESS`."""
        folder = self.path(f"{dataset_folder}/x").parent
        return sorted(p.parent.name for p in folder.glob(f"*/{SUCCESS}") if p.is_file()) if folder.is_dir() else []


class LocalTree(LocalFiles):
    """An export folder as `verify` reads it (and `check`, for what a rerun would keep: output/held.py)."""

    _journal: Journal | None = None

    def recorded(self, rel: str) -> bool:
        """An earlier run recorded this file's digest (a journal, or its batch's checksum list)."""
        if self._journal is None:
            self._journal = Journal(self.out_dir)
            self._journal.load()  # reads every shard's journal; writes nothing
        return self._journal.recorded_sha256(rel) is not None

    def held(self, rel: str, size: int | None) -> int:
        """Bytes of an unfinished download of this file that a rerun would keep (its .part)."""
        return held_bytes(self.path(rel), size)

    def where(self) -> str:
        return str(self.out_dir)

    def batch_folders(self, manifest: str) -> list[str]:
        return [p.parent.relative_to(self.out_dir).as_posix() for p in sorted(self.out_dir.rglob(manifest))]

    def size(self, rel: str) -> int | None:
        try:
            return self.path(rel).stat().st_size
        except (FileNotFoundError, UnsafeNameError):  # a manifest path leaving the folder: not there
            return None

    def sha256(self, rel: str) -> str:
        return file_digest(self.path(rel)).hex()

    def rows(self, rel: str, *, deep: bool) -> int:
        return parquet_rows(self.path(rel), deep=deep)

    def top_level_names(self) -> list[str]:
        """Files directly in the export folder (the run reports)."""
        return sorted(p.name for p in self.out_dir.iterdir() if p.is_file())

    def incomplete(self, folder: str) -> list[str]:
        """Temporary files under a folder ("" for the whole export): files in flight, control files,
        writes never finished, in the hidden folders and where versions before kept them (beside
        the final name; a listed file may be named so too: `verify` leaves out what a manifest lists)."""
        base = os.path.realpath(self.out_dir)  # what `path` resolves folders against
        root = self.path(folder) if folder else base
        found = []
        for dirpath, _, names in os.walk(root):
            found += [os.path.relpath(os.path.join(dirpath, n), base) for n in names if is_temporary(n)]
        return sorted(Path(p).as_posix() for p in found)
