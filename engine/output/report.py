"""What a run leaves behind: per batch _manifest.json, _SHA256SUMS and _SUCCESS, per dataset the
_LATEST pointer; _report.json (one per shard); a summary. Names and layout: layout.py.

_SUCCESS is written only when every file of the batch is verified and the rows add up, so a
consumer can trust a batch folder that has it; _LATEST is written after it and only ever names
such a folder.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import DiskFull, Failure, StoreError, UnsafeNameError, kind_of
from ..layout import (
    LATEST,
    MANIFEST,
    OLD_SUMS,
    PLAIN,
    SUCCESS,
    SUMS,
    batch_folder,
    batch_name,
    dataset_folder,
    old_report_name,
    report_name,
    safe_relative,
)
from ..model import BatchRef, FileResult, FileStatus, Listing, catalog_created
from ..units import human_bytes
from .earlier import Files as ReportReader
from .earlier import layout_refusal
from .localfiles import LocalFiles

if TYPE_CHECKING:
    from .destination import Files

log = structlog.get_logger("aep_export.output")


@dataclass(slots=True)  # slots: kept per batch for the whole run (memory flat in files), as below
class Tally:
    """A batch's file outcomes as counts, kept once its results are let go (memory flat in files)."""

    seen: int = 0
    ok: int = 0
    reused: int = 0
    downloaded: int = 0
    cancelled: int = 0  # interrupted (counted as failed too)
    bytes: int = 0
    bytes_fetched: int = 0

    def add(self, r: FileResult) -> None:
        self.seen += 1
        self.ok += r.ok
        self.reused += r.status is FileStatus.REUSED
        self.downloaded += r.status is FileStatus.DOWNLOADED
        self.cancelled += r.status is FileStatus.CANCELLED
        self.bytes += r.size if r.ok else 0
        self.bytes_fetched += r.bytes_fetched

    @property
    def failed(self) -> int:
        return self.seen - self.ok


@dataclass(slots=True)
class BatchOutcome:
    batch: BatchRef
    started: float = field(default_factory=time.monotonic)
    results: list[FileResult] = field(default_factory=list)  # until the batch is finalized (then the failed ones)
    tally: Tally = field(default_factory=Tally)
    listing: Listing | None = None  # set once the listing is complete
    status: str = "running"
    errors: list[str] = field(default_factory=list)
    records_found: int | None = None
    seconds: float = 0.0
    dataset_name: str | None = None  # for the manifest
    hook: dict[str, Any] | None = None  # the completion hook run for it, if any (engine/hooks.py)

    def add(self, result: FileResult) -> None:
        self.results.append(result)
        self.tally.add(result)

    @property
    def all_in(self) -> bool:
        return self.listing is not None and self.tally.seen >= self.listing.files

    @property
    def bytes(self) -> int:
        return self.tally.bytes

    @property
    def attempted(self) -> bool:
        """The run began on it: a file attempted, or an error of its own (not only the run stopping first)."""
        return bool(self.tally.seen) or any(getattr(e, "kind", None) not in NOT_REACHED for e in self.errors)


NOT_REACHED = frozenset({"not_attempted", "listing_incomplete"})  # a batch's errors when the run stopped before it


@dataclass(slots=True)
class DatasetOutcome:
    dataset_id: str
    source: str = "dataset"
    status: str = "running"
    name: str | None = None  # the Catalog's name of the dataset, when known
    error: str | None = None
    batches: list[BatchOutcome] = field(default_factory=list)
    # (dataset id, batch id, shard) of batches left to the shard that exports that dataset
    delegated: list[tuple[str, str, str]] = field(default_factory=list)


def _files(out: Path | Files) -> Files:
    """A local folder's batch files, or the destination's own (object storage)."""
    return LocalFiles(out) if isinstance(out, Path) else out


def finalize_batch(out_dir: Path | Files, outcome: BatchOutcome, *, durable: bool = True) -> None:
    """Write the manifest and _SHA256SUMS, check record counts, mark success, repoint _LATEST. Blocking I/O."""
    outcome.seconds = time.monotonic() - outcome.started
    files = _files(out_dir)
    try:
        folder = safe_relative(batch_folder(outcome.batch.dataset_id, outcome.batch.batch_id, outcome.batch.layout), "batch folder")
    except UnsafeNameError as exc:
        outcome.status, outcome.errors = "failed", [Failure(exc.kind, str(exc))]
        return  # nothing may be written there
    ok_files = sorted((r for r in outcome.results if r.ok), key=lambda r: r.task.rel_in_batch)
    errors: list[str] = [Failure(_file_error_kind(r), f"{r.task.rel_in_batch}: {r.error or r.status.value}")
                         for r in outcome.results if not r.ok]
    assert outcome.listing is not None
    errors += [Failure("unsafe_name", f"{name}: refused: {why}") for name, why in outcome.listing.refused]
    if outcome.listing.untrusted:  # the cause of every other error here: said first
        errors.insert(0, Failure("listing_untrusted", f"listing not trusted: {outcome.listing.untrusted}"))
    if missing := outcome.listing.files - outcome.tally.seen:
        errors.append(Failure("not_attempted", f"{missing} files not attempted"))
    outcome.records_found = _records(ok_files)
    expected = outcome.batch.expected_records
    if not errors and expected is not None and outcome.records_found is not None and outcome.records_found != expected:
        errors.append(Failure("record_count", f"record count mismatch: the batch states {expected} records, "
                                              f"the parquet files hold {outcome.records_found}"))
    outcome.errors = errors
    cancelled = any(r.status is FileStatus.CANCELLED for r in outcome.results)
    outcome.status = "ok" if not errors else "cancelled" if cancelled else "failed"

    try:
        if outcome.status != "ok":
            files.delete(f"{folder}/{SUCCESS}")  # first: whatever fails below, no _SUCCESS vouches for it
        lists = [(f"{folder}/{SUMS}", "".join(f"{r.sha256}  {r.task.rel_in_batch}\n" for r in ok_files)),
                 (f"{folder}/{MANIFEST}", json.dumps(_manifest(outcome, ok_files), indent=2) + "\n")]
        if not (outcome.status == "ok" and _finished_before(files, folder, lists)):
            _write_lists(files, lists, durable)
            files.delete(f"{folder}/{OLD_SUMS}")  # an earlier version's name: data readers trip on it
            if outcome.status == "ok":
                # Not fsynced (nor is _LATEST): written after the data and lists are durable, they can
                # only be lost in a crash, never be ahead of what they vouch for; the rerun writes them.
                files.write_text(f"{folder}/{SUCCESS}", "", durable=False)
        update_latest(files, outcome.batch.dataset_id, outcome, outcome.batch.layout)
    except (UnsafeNameError, StoreError) as exc:  # a folder leading outside out_dir; a bucket that failed
        outcome.status, outcome.errors = "failed", [Failure(kind_of(exc), str(exc))]
    except DiskFull as exc:  # the batch is not finished; the run stops (the caller's DiskFull)
        outcome.status, outcome.errors = "failed", [*outcome.errors, Failure(kind_of(exc), f"batch files not written: {exc}")]
        raise


def _finished_before(files: Files, folder: str, lists: list[tuple[str, str]]) -> bool:
    """A rerun over a batch an earlier run finished, with nothing changed: the same lists are there
    under its `_SUCCESS` (written durably before it) and stay as they are, `written_at` included."""
    if not files.exists(f"{folder}/{SUCCESS}") or files.exists(f"{folder}/{OLD_SUMS}"):
        return False
    (sums, new_sums), (manifest, new_manifest) = lists
    if files.read_text(sums) != new_sums:
        return False
    try:
        old, new = json.loads(files.read_text(manifest) or ""), json.loads(new_manifest)
    except ValueError:
        return False
    return isinstance(old, dict) and {**old, "written_at": None} == {**new, "written_at": None}


def _write_lists(files: Files, texts: list[tuple[str, str]], durable: bool) -> None:
    """A batch's lists, durable before its `_SUCCESS`: in a local folder together, sharing their
    syncs with whatever else commits at that time (output/groupcommit.py); else one by one."""
    together = getattr(files, "write_texts", None)
    if together is not None:
        together(texts, durable=durable)
        return
    for rel, text in texts:
        files.write_text(rel, text, durable=durable)


def _file_error_kind(r: FileResult) -> str:
    if r.status is FileStatus.CANCELLED:
        return "interrupted"
    return r.error.kind if isinstance(r.error, Failure) else "file_failed"


_pointer_locks = tuple(threading.Lock() for _ in range(64))  # by the dataset's folder: a fixed few, not one per dataset ever seen


def update_latest(files: Files, dataset_id: str, batch: BatchOutcome | None = None, layout: str = PLAIN) -> None:
    """Point the dataset's `_LATEST` at its newest complete batch's folder name (by the Catalog's
    `created`, then by name), or remove it when none is complete; rewritten only on change. Given
    the batch just finalized, only it and the current pointer are compared; without, every complete batch.

    The lock is the dataset's (shared with a few others) and per process: a dataset is exported by one shard only."""
    folder = dataset_folder(dataset_id, layout)
    with _pointer_locks[hash(folder) % len(_pointer_locks)]:
        pointer = f"{folder}/{LATEST}"
        current = (files.read_text(pointer) or "").strip() or None
        name = batch_name(batch.batch.batch_id, layout) if batch is not None else None
        if batch is not None and batch.status == "ok":
            mine = (_created(batch.batch.catalog), str(name))
            if current is not None and (current == name or _complete_key(files, folder, current) >= mine):
                return
            newest: str | None = name
        elif batch is not None and current != name:
            return  # a batch that is not complete and not named by the pointer changes nothing
        else:
            found = [_complete_key(files, folder, b) for b in files.complete_batches(folder)]
            newest = max(found)[1] if found else None
        if newest is None:
            files.delete(pointer)
        elif newest != current:
            files.write_text(pointer, newest + "\n", durable=False)
            log.debug("latest_pointer", dataset=dataset_id, batch=newest)


def _complete_key(files: Files, dataset_folder: str, name: str) -> tuple[int, str]:
    """(Catalog created time, folder name) of a complete batch; (-1, name) when it is not complete."""
    if not files.exists(f"{dataset_folder}/{name}/{SUCCESS}"):
        return -1, name
    try:
        manifest = json.loads(files.read_text(f"{dataset_folder}/{name}/{MANIFEST}") or "{}")
    except ValueError:
        manifest = {}
    return _created(manifest.get("batch") if isinstance(manifest, dict) else None), name


def _created(catalog: Any) -> int:
    return catalog_created(catalog) or 0


def _records(files: list[FileResult]) -> int | None:
    """Sum of parquet rows, or None when some file has no row count (not parquet, or unchecked)."""
    if not files or any(r.rows is None for r in files):
        return None
    return sum(r.rows or 0 for r in files)


def _manifest(outcome: BatchOutcome, files: list[FileResult]) -> dict[str, Any]:
    b = outcome.batch
    listing = outcome.listing
    return {
        "dataset_id": b.dataset_id,
        "dataset_name": outcome.dataset_name,
        "batch_id": b.batch_id,
        "source": b.source,
        "status": outcome.status,
        "batch": b.catalog,  # the Catalog object as the platform sent it (metadata and metrics)
        "records_expected": b.expected_records,
        "records_found": outcome.records_found,
        "files": [
            {"path": r.task.rel_in_batch, "dataSetFileId": r.task.dataset_file_id, "name": r.task.name,
             "size": r.size, "sha256": r.sha256, "rows": r.rows}
            for r in files
        ],
        "skipped": listing.skipped if listing else [],
        "errors": outcome.errors,
        "written_at": _now(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunOutcome:
    started_at: str = field(default_factory=_now)
    started: float = field(default_factory=time.monotonic)
    datasets: list[DatasetOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exit_code: int = 0
    status: str = "running"
    totals: dict[str, int] = field(default_factory=dict)
    shard: str | None = None  # "I/N" for `run --shard I/N`
    entries: list[str] = field(default_factory=list)  # the config entries this run (shard) exports
    report_error: str | None = None  # why the report could not be written (the disk was full), if so
    layout: str = PLAIN  # export.layout the run writes (recorded in the report: a later run must use the same)

    def batches(self) -> list[BatchOutcome]:
        """Each batch once, even when two sources (dataset and audience) share it."""
        return list({id(b): b for d in self.datasets for b in d.batches}.values())


def report_path(out_dir: Any, run: RunOutcome) -> Any:
    """Where the run's report is: a path in a folder, a URL in a bucket."""
    return out_dir / report_name(run.shard)


REPORT_ROOM = 64 << 10  # bytes the start-of-run report holds on a local disk (see write_report)


def write_report(out_dir: Path | Files, run: RunOutcome) -> str:
    """_report.json, or _report.shard-I-of-N.json for a shard (written at the start with status
    "running", so a shard killed mid-run never leaves an earlier run's report looking current).
    The same report under the name versions before used (`report.json`, which parquet readers take
    for data) is removed once the new one is written.

    In a local folder the start-of-run report is padded with spaces to REPORT_ROOM bytes (JSON
    ignores them): when the disk is full at the end, the final report is written into that room
    in place (shortened if it must be), so a full disk still leaves a report that says so.
    Raises DiskFull when even that fails."""
    name = report_name(run.shard)
    files = _files(out_dir)
    in_place = getattr(files, "rewrite_in_place", None)  # a local folder's
    in_pieces = getattr(files, "write_pieces", None)  # a local folder's
    try:
        if run.status == "running" and in_place is not None:
            files.write_text(name, "".join(report_text(run)).ljust(REPORT_ROOM - 1) + "\n")
        elif in_pieces is not None:
            in_pieces(name, report_text(run))  # a dataset at a time (thousands of them: memory flat)
        else:
            files.write_text(name, "".join(report_text(run)))
    except DiskFull:
        body = {**report_body(run), "layout": run.layout}
        if in_place is None or not any(in_place(name, json.dumps(b, indent=2) + "\n") for b in _shorter(body)):
            raise
        log.warning("report_written_in_place", report=name, note="no space for a new copy: written over the start-of-run report")
    if run.status == "running":
        files.delete(old_report_name(run.shard))
    return name


def layout_switch(out_dir: Path | ReportReader, layout: str, shard: str | None) -> str | None:
    """Why a run in `layout` is refused here, or None (earlier.py holds the rule). `out_dir`: a
    folder, a destination's Files, or `check`'s view of a bucket (plan.py)."""
    return layout_refusal(LocalFiles(out_dir) if isinstance(out_dir, Path) else out_dir, layout, shard)


def _shorter(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The report, then shorter forms of it: without the batches, without the datasets."""
    yield body
    yield {**body, "datasets": [{k: v for k, v in d.items() if k != "batches"} for d in body["datasets"]],
           "shortened": "the disk was full: per-batch details left out"}
    yield {**body, "datasets": [], "shortened": "the disk was full: per-dataset details left out"}


def report_text(run: RunOutcome) -> Iterator[str]:
    """_report.json's text, `json.dumps(body, indent=2)` plus a newline, made an entry and a dataset
    at a time: the body of every dataset and batch (and the encoder's pieces of all of them) is never
    held at once. The body adds "layout" to report_body: what a later run over it must keep (layout_switch)."""
    text = json.dumps({**_body(run, [], []), "layout": run.layout}, indent=2) + "\n"
    per_entry = {"entries": (json.dumps(e) for e in run.entries),
                 "datasets": (json.dumps(dataset_row(d), indent=2) for d in run.datasets)}
    for key, items in per_entry.items():  # in the body's order
        empty = f'\n  "{key}": []'  # at indent 2 only a top-level key can be there
        head, _, text = text.partition(empty)
        yield head
        opening = f'\n  "{key}": ['
        for item in items:
            yield opening + "\n    " + item.replace("\n", "\n    ")  # JSON strings hold no newline
            opening = ","
        yield "\n  ]" if opening == "," else empty
    yield text


def report_body(run: RunOutcome) -> dict[str, Any]:
    """The report's content (also the base of `run --json`). Error texts may be `Failure`s: plain
    strings in _report.json, `{"kind", "message"}` in the --json document."""
    return _body(run, run.entries, [dataset_row(d) for d in run.datasets])


def _body(run: RunOutcome, entries: list[str], datasets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tool": "aep-export",
        "started_at": run.started_at,
        "finished_at": None if run.status == "running" else _now(),
        "duration_s": round(time.monotonic() - run.started, 3),
        "status": run.status,
        "exit_code": None if run.status == "running" else run.exit_code,
        "shard": run.shard,
        "entries": entries,
        "totals": run.totals,
        "datasets": datasets,
        "errors": run.errors,
    }


def dataset_row(d: DatasetOutcome) -> dict[str, Any]:
    """One dataset of the report, with its batches."""
    return {
        "dataset_id": d.dataset_id,
        "name": d.name,
        "source": d.source,
        "status": d.status,
        "error": d.error,
        "delegated": [{"dataset_id": ds, "batch_id": b, "shard": sh} for ds, b, sh in d.delegated],
        "batches": [
            {
                "batch_id": b.batch.batch_id,
                "status": b.status,
                "attempted": b.attempted,  # false: the run stopped before it (status: not started)
                "files": b.tally.ok,
                "files_failed": b.tally.failed + (len(b.listing.refused) if b.listing else 0),
                "files_reused": b.tally.reused,
                "bytes": b.bytes,
                "bytes_fetched": b.tally.bytes_fetched,
                "records_expected": b.batch.expected_records,
                "records_found": b.records_found,
                "seconds": round(b.seconds, 3),
                "errors": b.errors,
                **({"hook": b.hook} if b.hook else {}),
            }
            for b in d.batches
        ],
    }


def summary_event(run: RunOutcome, report: Path) -> dict[str, Any]:
    """The fields of the closing `run_summary` log event: what the summary table shows, as data."""
    batches = run.batches()
    by_status = {s: sum(1 for b in batches if b.status == s) for s in ("ok", "failed", "cancelled")}
    return {
        "status": run.status, "exit_code": run.exit_code, "shard": run.shard, "report": str(report),
        "duration_s": round(time.monotonic() - run.started, 3),
        "batches_ok": by_status["ok"], "batches_failed": by_status["failed"], "batches_cancelled": by_status["cancelled"],
        **run.totals, "errors": run.errors[:5],
    }


def summary_rows(run: RunOutcome) -> list[tuple[str, str, str, str, str, str, str]]:
    """(dataset, name, batch, status, files, bytes, note) per batch (per dataset when it has none)."""
    rows = []
    for d in run.datasets:
        label = d.dataset_id if d.source == "dataset" else f"{d.dataset_id} ({d.source})"
        name = d.name or "-"
        for ds, batch, shard in d.delegated:
            rows.append((label, name, batch, "delegated", "-", "-", f"exported by shard {shard} with dataset {ds}"))
        if not d.batches and not d.delegated:
            rows.append((label, name, "-", d.status, "0", "0 B", d.error or ""))
        for b in d.batches:
            note = b.errors[0] if b.errors else ""
            if len(b.errors) > 1:
                note += f" (+{len(b.errors) - 1} more)"
            rows.append((label, name, b.batch.batch_id, b.status, str(b.tally.ok), human_bytes(b.bytes), note))
    return rows
