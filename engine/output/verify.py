"""`aep-export verify DIR`: re-check an export on disk against its manifests, saying what is wrong.

Reads exports made before the Hadoop/Spark naming too (checksums in `SHA256SUMS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError
from ..checks.integrity import file_digest, parquet_rows
from .layout import LATEST, MANIFEST, SUCCESS, SUMS, read_latest, read_sums, sums_path


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
    problems: list[Problem] | None = None


def verify_export(root: Path, *, deep: bool = False) -> VerifyResult:
    result = VerifyResult(problems=[])
    for manifest_path in sorted(root.rglob(MANIFEST)):
        result.batches += 1
        _verify_batch(root, manifest_path.parent, result, deep)
    for pointer in sorted(root.rglob(LATEST)):
        _verify_pointer(root, pointer.parent, result.problems)
    return result


def _verify_pointer(root: Path, dataset_folder: Path, problems: list[Problem]) -> None:
    """`_LATEST` must name a complete batch folder beside it."""
    shown = f"{dataset_folder.relative_to(root).as_posix()}/{LATEST}"
    name = read_latest(dataset_folder)
    if name is None:
        problems.append(Problem(shown, "unreadable pointer"))
    elif not (dataset_folder / name / SUCCESS).is_file():
        problems.append(Problem(shown, f"points at {name}, which is not a complete batch ({SUCCESS} missing)"))


def _verify_batch(root: Path, folder: Path, result: VerifyResult, deep: bool) -> None:
    problems = result.problems
    assert problems is not None
    rel_folder = folder.relative_to(root).as_posix()
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(Problem(f"{rel_folder}/{MANIFEST}", f"unreadable manifest: {exc}"))
        return
    sums = sums_path(folder)
    sums_shown = f"{rel_folder}/{sums.name if sums else SUMS}"
    listed = read_sums(folder)
    if sums is None:
        problems.append(Problem(sums_shown, "missing"))
    batch_ok = True
    for entry in files:
        rel = entry.get("path", "")
        shown = f"{rel_folder}/{rel}"
        path = folder / rel
        ok = _verify_file(path, entry, shown, problems, deep)
        batch_ok &= ok
        result.files += 1
        result.bytes += entry.get("size") or 0
        if listed.get(rel) != entry.get("sha256"):
            problems.append(Problem(sums_shown, f"entry for {rel} missing or different from the manifest"))
            batch_ok = False
    for part in folder.rglob("*.part"):
        problems.append(Problem(part.relative_to(root).as_posix(), "incomplete download (rerun the export to finish it)"))
        batch_ok = False
    success = (folder / SUCCESS).exists()
    if manifest.get("status") == "ok" and not success:
        problems.append(Problem(rel_folder, f"manifest says ok but {SUCCESS} is missing"))
    if manifest.get("status") != "ok":
        problems.append(Problem(rel_folder, f"batch status is {manifest.get('status')!r}: {'; '.join(manifest.get('errors', [])[:3])}"))
    elif not batch_ok and success:
        problems.append(Problem(rel_folder, f"{SUCCESS} present but files do not verify"))


def _verify_file(path: Path, entry: dict, shown: str, problems: list[Problem], deep: bool) -> bool:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        problems.append(Problem(shown, "missing"))
        return False
    if size != entry.get("size"):
        problems.append(Problem(shown, f"size {size}, manifest says {entry.get('size')}"))
        return False
    if file_digest(path).hex() != entry.get("sha256"):
        problems.append(Problem(shown, "SHA-256 differs from the manifest"))
        return False
    if path.name.endswith(".parquet"):
        try:
            rows = parquet_rows(path, deep=deep)
        except IntegrityError as exc:
            problems.append(Problem(shown, str(exc)))
            return False
        if entry.get("rows") is not None and rows != entry["rows"]:
            problems.append(Problem(shown, f"{rows} rows, manifest says {entry['rows']}"))
            return False
    return True
