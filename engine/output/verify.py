"""`aep-export verify DIR|s3://…`: re-check an export against its manifests, saying what is wrong.

It reads the export through a tree (`localfiles.LocalTree` for a folder, `buckettree.BucketTree`
for a bucket prefix), so both are checked by the same rules. Exports made before the Hadoop/Spark
naming are read too (checksums in `SHA256SUMS`). Temporary files, where they are now and where
earlier versions kept them (engine/layout.py), are problems: a run stopped or failed there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import IntegrityError
from ..layout import LATEST, MANIFEST, PART, SUCCESS, SUMS, SUMS_NAMES, is_temporary, parse_latest, parse_sums
from .localfiles import LocalTree


class ExportTree(Protocol):
    """Read access to an export, by paths relative to its root."""

    def batch_folders(self, manifest: str) -> list[str]: ...

    def read_text(self, rel: str) -> str | None: ...

    def exists(self, rel: str) -> bool: ...

    def size(self, rel: str) -> int | None: ...

    def sha256(self, rel: str) -> str: ...

    def rows(self, rel: str, *, deep: bool) -> int: ...

    def incomplete(self, folder: str) -> list[str]:
        """Temporary files (files in flight, control files, unfinished writes) under a folder."""

    def top_level_names(self) -> list[str]: ...


@dataclass(frozen=True)
class Problem:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class VerifyResult:
    batches: int = 0
    files: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)


def verify_export(root: Path | ExportTree, *, deep: bool = False) -> VerifyResult:
    # resolved once here: the tree's paths are real paths, so a relative root could not contain them
    tree = LocalTree(root.resolve()) if isinstance(root, Path) else root
    result = VerifyResult(problems=[])
    folders = tree.batch_folders(MANIFEST)
    temporary = tree.incomplete("")
    seen: set[str] = set()  # already reported, or data a manifest lists under a name that looks temporary
    for rel_folder in folders:
        result.batches += 1
        _verify_batch(tree, rel_folder, result, deep, [t for t in temporary if t.startswith(rel_folder + "/")], seen)
    for dataset in sorted({rel.rpartition("/")[0] for rel in folders}):
        _verify_pointer(tree, dataset, result.problems)
    result.problems += [_leftover(t) for t in temporary if t not in seen]  # outside the batches verified
    return result


def _in_flight(rel: str) -> bool:
    """A file being fetched (a `.part`; in a bucket, the file an upload is for), not a control file
    or a write that never finished."""
    return rel.endswith(PART) or not is_temporary(rel)


def _leftover(rel: str) -> Problem:
    if _in_flight(rel):
        return Problem(rel, "incomplete download (rerun the export to finish it)")
    return Problem(rel, "temporary file left behind by a run that stopped (rerun the export, or delete it "
                        "while no run writes here)")


def _verify_pointer(tree: ExportTree, dataset: str, problems: list[Problem]) -> None:
    """`_LATEST`, where there is one, must name a complete batch folder beside it."""
    text = tree.read_text(f"{dataset}/{LATEST}")
    if text is None:
        return
    name = parse_latest(text)
    if name is None:
        problems.append(Problem(f"{dataset}/{LATEST}", "unreadable pointer"))
    elif not tree.exists(f"{dataset}/{name}/{SUCCESS}"):
        problems.append(Problem(f"{dataset}/{LATEST}", f"points at {name}, which is not a complete batch ({SUCCESS} missing)"))


def _verify_batch(tree: ExportTree, rel_folder: str, result: VerifyResult, deep: bool,
                  temporary: list[str], seen: set[str]) -> None:
    problems = result.problems
    assert problems is not None
    try:
        manifest = json.loads(tree.read_text(f"{rel_folder}/{MANIFEST}") or "")
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(Problem(f"{rel_folder}/{MANIFEST}", f"unreadable manifest: {exc}"))
        return
    sums_shown, listed = _read_sums(tree, rel_folder, problems)
    batch_ok = True
    for entry in files:
        rel = entry.get("path", "")
        shown = f"{rel_folder}/{rel}"
        ok = _verify_file(tree, shown, entry, problems, deep)
        batch_ok &= ok
        result.files += 1
        result.bytes += entry.get("size") or 0
        if listed.get(rel) != entry.get("sha256"):
            problems.append(Problem(sums_shown, f"entry for {rel} missing or different from the manifest"))
            batch_ok = False
    seen.update(f"{rel_folder}/{e.get('path', '')}" for e in files if is_temporary(str(e.get("path", ""))))
    for leftover in (_leftover(t) for t in temporary if t not in seen):
        problems.append(leftover)
        seen.add(leftover.path)
        batch_ok &= not _in_flight(leftover.path)
    success = tree.exists(f"{rel_folder}/{SUCCESS}")
    if manifest.get("status") == "ok" and not success:
        problems.append(Problem(rel_folder, f"manifest says ok but {SUCCESS} is missing"))
    if manifest.get("status") != "ok":
        problems.append(Problem(rel_folder, f"batch status is {manifest.get('status')!r}: {'; '.join(manifest.get('errors', [])[:3])}"))
    elif not batch_ok and success:
        problems.append(Problem(rel_folder, f"{SUCCESS} present but files do not verify"))


def _verify_file(tree: ExportTree, shown: str, entry: dict[str, Any], problems: list[Problem], deep: bool) -> bool:
    size = tree.size(shown)
    if size is None:
        problems.append(Problem(shown, "missing"))
        return False
    if size != entry.get("size"):
        problems.append(Problem(shown, f"size {size}, manifest says {entry.get('size')}"))
        return False
    if tree.sha256(shown) != entry.get("sha256"):
        problems.append(Problem(shown, "SHA-256 differs from the manifest"))
        return False
    if shown.endswith(".parquet"):
        try:
            rows = tree.rows(shown, deep=deep)
        except IntegrityError as exc:
            problems.append(Problem(shown, str(exc)))
            return False
        if entry.get("rows") is not None and rows != entry["rows"]:
            problems.append(Problem(shown, f"{rows} rows, manifest says {entry['rows']}"))
            return False
    return True


def _read_sums(tree: ExportTree, rel_folder: str, problems: list[Problem]) -> tuple[str, dict[str, str]]:
    """(the list's name as shown, {path: sha256}) from `_SHA256SUMS`, else the old `SHA256SUMS`."""
    for name in SUMS_NAMES:
        text = tree.read_text(f"{rel_folder}/{name}")
        if text is not None:
            return f"{rel_folder}/{name}", parse_sums(text)
    problems.append(Problem(f"{rel_folder}/{SUMS}", "missing"))
    return f"{rel_folder}/{SUMS}", {}
