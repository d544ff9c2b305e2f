"""Names of what an export leaves on disk, and the small readers other modules share.

Everything beside the data follows the Hadoop/Spark convention that readers skip names starting
with `_` or `.`, so `pyarrow.dataset`, Spark or DuckDB can read `{out}/{dataset}` as it is:

    {out}/{dataset}/{batch}/{dataSetFileId}/{part}.parquet   the data
    {out}/{dataset}/{batch}/_SHA256SUMS                      `sha256sum -c _SHA256SUMS` in that folder
    {out}/{dataset}/{batch}/_manifest.json                   batch metadata, per file size/sha256/rows
    {out}/{dataset}/{batch}/_SUCCESS                         every file of the batch verified
    {out}/{dataset}/_LATEST                                  the newest complete batch's folder name
    {out}/report.json | report.shard-I-of-N.json             the run (one per shard)
    {out}/.aep-export/journal.jsonl | journal.shard-I-of-N.jsonl   resume state (one per shard)
    {out}/.aep-export/lock | lock.shard-I-of-N                     held while a run writes (runlock.py)

Exports made before this layout listed checksums in `SHA256SUMS`: every reader here still
accepts that name (the new one wins when both exist).
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "_manifest.json"
SUMS = "_SHA256SUMS"
OLD_SUMS = "SHA256SUMS"  # before the Hadoop/Spark naming; still read, replaced on the next finalize
SUCCESS = "_SUCCESS"
LATEST = "_LATEST"
REPORT = "report.json"
STATE_DIR = ".aep-export"


def shard_suffix(shard: str | None) -> str:
    """'' for an unsharded run; '.shard-1-of-3' for `--shard 1/3` (index as given, 0-based)."""
    if not shard:
        return ""
    index, _, count = shard.partition("/")
    return f".shard-{index}-of-{count}"


def report_name(shard: str | None = None) -> str:
    return f"report{shard_suffix(shard)}.json"


def sums_path(batch_folder: Path) -> Path | None:
    """The checksum list of a batch folder: the new name, else the old one, else None."""
    for name in (SUMS, OLD_SUMS):
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
