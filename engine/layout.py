"""Names of what an export leaves on disk, and the small readers other modules share.

Everything beside the data follows the Hadoop/Spark convention that readers skip names starting
with `_` or `.`, so `pyarrow.dataset`, Spark or DuckDB can read `{out}/{dataset}` as it is:

    {out}/{dataset}/{batch}/{dataSetFileId}/{part}.parquet   the data ("plain", the default layout)
    {out}/{dataset}/{batch}/{dataSetFileId}/.aep-export/     files in flight (below)
    {out}/{dataset}/{batch}/_SHA256SUMS                      `sha256sum -c _SHA256SUMS` in that folder
    {out}/{dataset}/{batch}/_manifest.json                   batch metadata, per file size/sha256/rows
    {out}/{dataset}/{batch}/_SUCCESS                         every file of the batch verified
    {out}/{dataset}/_LATEST                                  the newest complete batch's folder name
    {out}/_report.json | _report.shard-I-of-N.json           the run (one per shard)
    {out}/.aep-export/journal.jsonl | journal.shard-I-of-N.jsonl   resume state (one per shard)
    {out}/.aep-export/lock | lock.shard-I-of-N                     held while a run writes (runlock.py)

With `export.layout = "hive"` the dataset and batch folders are `dataset={dataset}` and
`batch={batch}` (`key=value`: readers infer both as columns; the dataSetFileId folder below them
stays bare, which every reader tested skips when inferring partitions), and `_LATEST` holds the
batch folder's name (`batch={batch}`); everything else is the same. `dataset_folder`,
`batch_folder` and `file_path` are the only places that build these paths.

A file in flight is `{folder}/.aep-export/{h}.part`, with its control file `{h}.part.ctl`, in a
hidden folder beside the final name, `h` from a hash of that name: no listed name can reach them
(a listed name leading into `.aep-export` is refused), they never pass NAME_MAX whatever the
final name's length, and readers skip the folder. The files above are written atomically through
`<name>.tmp` beside them (hidden too, and short); a dataset, batch or dataSetFile id that is one
of these names, or one of them + `.tmp`, would take their place and is refused (`is_own_name`).
The S3 destination keeps its multipart uploads under `{prefix}/.aep-export/uploads/`.

Exports made before this layout listed checksums in `SHA256SUMS`, and before `_report.json` the
run report was `report.json` (which pyarrow, pandas and Spark read as data): every reader here
still accepts those names (the new one wins when both exist), and a run replaces them. Versions
before kept the files in flight beside the final name (`<final>.part`, `.part.ctl`,
`.part.ctl.tmp`, `.part.split`): a rerun resumes such a `.part` (`legacy_part`), and `verify`
flags any temporary file left behind, there or here (`is_temporary`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import UnsafeNameError

MANIFEST = "_manifest.json"
SUMS = "_SHA256SUMS"
OLD_SUMS = "SHA256SUMS"  # before the Hadoop/Spark naming; still read, replaced on the next finalize
SUCCESS = "_SUCCESS"
LATEST = "_LATEST"
REPORT = "_report.json"
OLD_REPORT = "report.json"  # before the reader-skipped name; still read, replaced by the next run
PLAIN, HIVE = "plain", "hive"  # export.layout: {dataset}/{batch}/… or dataset={dataset}/batch={batch}/…
LAYOUTS = (PLAIN, HIVE)
STATE_DIR = ".aep-export"
UPLOADS = f"{STATE_DIR}/uploads"  # the S3 destination's files in flight

PART, CONTROL, SPLIT, TMP = ".part", ".part.ctl", ".part.split", ".tmp"
_TEMPORARY = (PART, ".ctl", ".split", TMP)  # every temporary name ends so, in its old place and now
_HASHED = 32  # hex digits of the name's SHA-256: short of NAME_MAX whatever the name's length


# -- temporary files ---------------------------------------------------------------------------------


def temp_folder(folder: Path) -> Path:
    """The hidden folder holding the temporary files of the files in `folder`."""
    return folder / STATE_DIR


def _hashed(final: Path, suffix: str) -> Path:
    digest = hashlib.sha256(final.name.encode("utf-8", "surrogateescape")).hexdigest()[:_HASHED]
    return temp_folder(final.parent) / (digest + suffix)


def part_path(final: Path) -> Path:
    """Where the bytes of a file in flight are written until it is verified and renamed to `final`."""
    return _hashed(final, PART)


def control_path(final: Path) -> Path:
    """The control file of `part_path(final)`: the byte ranges it holds (output/control.py)."""
    return _hashed(final, CONTROL)


def split_marker(final: Path) -> Path:
    """A legacy split marker once moved beside `part_path(final)` (versions before the control file)."""
    return _hashed(final, SPLIT)


def write_temp(path: Path) -> Path:
    """Where an atomic write of one of our files is prepared (temp + rename): beside it. Its name is
    ours (`is_own_name`), or it is in the hidden folder already (a control file)."""
    return path.with_name(path.name + TMP)


def legacy_part(final: Path) -> tuple[Path, Path, Path]:
    """(.part, .part.ctl, .part.split) where versions before this layout kept them: beside `final`."""
    return tuple(final.with_name(final.name + suffix) for suffix in (PART, CONTROL, SPLIT))  # type: ignore[return-value]


def is_temporary(name: str) -> bool:
    """A name our temporary files have (now in a hidden folder; before, beside the final name).
    Beside the data it may also be a listed file's name: callers exclude what the manifest lists."""
    return name.endswith(_TEMPORARY)


# -- names that are ours -----------------------------------------------------------------------------

SUMS_NAMES = (SUMS, OLD_SUMS)  # where a batch's checksum list is read from: the new name wins
OWN_NAMES = frozenset(n.casefold() for n in (MANIFEST, SUMS, OLD_SUMS, SUCCESS, LATEST, STATE_DIR))
_REPORT = re.compile(r"_?report(\.shard-(\d+)-of-(\d+))?\.json")  # the report's name, or its old one


def is_own_name(name: str) -> bool:
    """A name this export gives its own files and folders, or their temporary names while written
    (the case ignored: some file systems do). A dataset, batch or dataSetFile id that is one would
    put the data in their place."""
    folded = name.casefold().removesuffix(TMP)
    return folded in OWN_NAMES or _REPORT.fullmatch(folded) is not None


def shard_suffix(shard: str | None) -> str:
    """'' for an unsharded run; '.shard-1-of-3' for `--shard 1/3` (index as given, 0-based)."""
    if not shard:
        return ""
    index, _, count = shard.partition("/")
    return f".shard-{index}-of-{count}"


def report_name(shard: str | None = None) -> str:
    """`_report.json`, or `_report.shard-I-of-N.json` for a shard."""
    return f"_report{shard_suffix(shard)}.json"


def old_report_name(shard: str | None = None) -> str:
    """Where versions before kept the same report (`report.json`): read, and replaced by a run."""
    return report_name(shard).removeprefix("_")


def parse_report_name(name: str) -> tuple[bool, int | None, int | None] | None:
    """(is the old name, shard index, shard count) of a run report's file name; None when it is not
    one. An unsharded report has (None, None)."""
    m = _REPORT.fullmatch(name)
    if m is None:
        return None
    index, count = m.group(2), m.group(3)
    return not name.startswith("_"), None if index is None else int(index), None if count is None else int(count)


def dataset_folder(dataset_id: str, layout: str = PLAIN) -> str:
    """`{dataset}` (plain) or `dataset={dataset}` (hive): a dataset's folder below the export's root."""
    return f"dataset={dataset_id}" if layout == HIVE else dataset_id


def batch_name(batch_id: str, layout: str = PLAIN) -> str:
    """`{batch}` (plain) or `batch={batch}` (hive): a batch's folder name in its dataset's folder,
    and what `_LATEST` holds."""
    return f"batch={batch_id}" if layout == HIVE else batch_id


def batch_folder(dataset_id: str, batch_id: str, layout: str = PLAIN) -> str:
    """`{dataset}/{batch}` (or `dataset=…/batch=…`): a batch's folder, relative to the export's root."""
    return f"{dataset_folder(dataset_id, layout)}/{batch_name(batch_id, layout)}"


def file_path(dataset_id: str, batch_id: str, dataset_file_id: str, name: str, layout: str = PLAIN) -> str:
    """`{batch folder}/{dataSetFileId}/{name}`: a data file, relative to the export's root."""
    return f"{batch_folder(dataset_id, batch_id, layout)}/{dataset_file_id}/{name}"


def split_batch_folder(folder: str) -> tuple[str, str]:
    """(dataset id, batch id) of a batch folder of either layout (`a/b` or `dataset=a/batch=b`)."""
    dataset, _, batch = folder.rpartition("/")
    if folder_layout(folder) == HIVE:
        return dataset.removeprefix("dataset="), batch.removeprefix("batch=")
    return dataset, batch


def folder_layout(folder: str) -> str:
    """The layout a batch folder (relative to the export's root) was written in."""
    dataset, _, batch = folder.rpartition("/")
    return HIVE if dataset.startswith("dataset=") and batch.startswith("batch=") else PLAIN


def recorded_layout(report: dict[str, Any]) -> str:
    """The layout a run report records; plain for a report written before layouts existed."""
    return str(report.get("layout") or PLAIN)


def sums_path(batch_folder: Path) -> Path | None:
    """The checksum list of a batch folder: the new name, else the old one, else None."""
    for name in SUMS_NAMES:
        path = batch_folder / name
        if path.is_file():
            return path
    return None


def read_sums(batch_folder: Path) -> dict[str, str]:
    """{path relative to the batch folder: sha256 hex} from `_SHA256SUMS` (or the old `SHA256SUMS`).

    Empty when the folder has neither (a batch never finalized). A line that is not
    `<digest>  <path>` (sha256sum's text format) is ignored.
    """
    path = sums_path(batch_folder)
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    return parse_sums(text)


def parse_sums(text: str) -> dict[str, str]:
    """{path: sha256 hex} from a checksum list's text; a line that is not `<64 hex>  <path>` is ignored."""
    sums = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if sep and len(digest) == 64:
            sums[name] = digest
    return sums


def read_latest(dataset_folder: Path) -> str | None:
    """The folder name of the dataset's newest complete batch, from its `_LATEST` pointer."""
    try:
        return parse_latest((dataset_folder / LATEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def parse_latest(text: str) -> str | None:
    """A `_LATEST` pointer's batch folder name, or None when it names no folder beside it."""
    name = text.strip()
    return name if name and "/" not in name and name not in (".", "..") else None


def lock_name(shard: str | None = None) -> str:
    """The destination's lock (`lock`), or shard I of N's own (`lock.shard-I-of-N`): runlock.py."""
    return f"lock{shard_suffix(shard)}"


# -- server-sent names: each a place in this layout that can never leave it --------------------

_MAX_COMPONENT = 255


def safe_component(value: str, what: str) -> str:
    """A single path component: no separators, no dot-dirs, no control characters."""
    if not value or value in (".", ".."):
        raise UnsafeNameError(f"{what} {value!r} is not a usable file name")
    if "/" in value or "\\" in value:
        raise UnsafeNameError(f"{what} {value!r} contains a path separator")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise UnsafeNameError(f"{what} {value!r} contains control characters")
    if len(value.encode()) > _MAX_COMPONENT:
        raise UnsafeNameError(f"{what} {value[:40]!r}… is longer than {_MAX_COMPONENT} bytes")
    return value


def safe_relative(name: str, what: str = "file name") -> str:
    """A relative POSIX path whose every component is safe ('a/b.parquet' is fine, '../x' is not)."""
    if "\\" in name:
        raise UnsafeNameError(f"{what} {name!r} contains a backslash")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise UnsafeNameError(f"{what} {name!r} is an absolute path")
    parts = name.split("/")
    for part in parts:
        safe_component(part, what)
    return "/".join(parts)


def folder_id(value: str, what: str, layout: str = PLAIN) -> str:
    """A dataset, batch or dataSetFile id as the folder it names: one safe component, and none of
    the names of our own files (`_SUCCESS`, `_manifest.json`, `.aep-export`, …), which it would
    otherwise take the place of, or share a folder with; in the hive layout, also a value readers
    read back as it is (`hive_value`)."""
    safe_component(value, what)
    if is_own_name(value):
        raise UnsafeNameError(f"{what} {value!r} is the name of one of aep-export's own files")
    return hive_value(value, what) if layout == HIVE else value


_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # the value hive readers take for null
_HIVE_SPECIAL = ("=", "%")  # '=' splits key=value, '%XX' is decoded (pyarrow, Spark, DuckDB)


def hive_value(value: str, what: str) -> str:
    """An id as the value of a `key=value` folder (`dataset=…`, `batch=…`) or a folder below them:
    refused when readers would not read it back as it is. '=' makes the folder ambiguous (and in a
    dataSetFile's folder, another column), '%2F' comes back as '/', and `__HIVE_DEFAULT_PARTITION__`
    as null (measured with pyarrow 26: `dataset=a%2Fb/batch=x=y` reads as dataset 'a/b')."""
    special = [ch for ch in _HIVE_SPECIAL if ch in value]
    if special or value == _HIVE_NULL:
        why = f"contains {special[0]!r}" if special else "is the name hive readers read as null"
        raise UnsafeNameError(f"{what} {value!r} {why}: with export.layout = \"hive\" readers would not read its "
                              "key=value folder back as that id (plain layout folders can hold it)")
    return value


def listed_name(name: str) -> str:
    """A file name from a listing as a path below its dataSetFile's folder: safe, and never into the
    hidden folder where our temporary files are (above)."""
    rel = safe_relative(name)
    if any(part.casefold() == STATE_DIR for part in rel.split("/")):
        raise UnsafeNameError(f"file name {name!r} leads into aep-export's own folder {STATE_DIR}")
    return rel
