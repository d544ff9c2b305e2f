"""`aep-export status OUT`: is the whole export complete, across every shard that writes into OUT?

It reads what the runs left: the run reports (_report.json, _report.shard-I-of-N.json, or the names
versions before used: report.json, …), and per batch the manifest and `_SUCCESS`, in the layout
the newest report records (plain for reports written before layouts). Each batch a report names
is *done* (its folder has `_SUCCESS` and an ok manifest), *failed* (the run gave up on it), *not
started* (the run stopped, interrupted or on a fatal error, before any file of it was attempted)
or *missing* (not finished: interrupted mid-batch, still running, or a shard that left no report
at all). Only the newest set of reports counts:
reports of an earlier run with another shard count are listed as ignored.

It reads through the same tree as `verify` (a folder, or a bucket prefix).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..layout import (
    LATEST,
    MANIFEST,
    PLAIN,
    SUCCESS,
    SUMS_NAMES,
    batch_folder,
    dataset_folder,
    folder_layout,
    parse_report_name,
    recorded_layout,
    report_name,
    split_batch_folder,
)
from .localfiles import LocalTree
from .verify import ExportTree

DONE, FAILED, NOT_STARTED, MISSING = "done", "failed", "not_started", "missing"
STATES = (DONE, FAILED, NOT_STARTED, MISSING)
NOT_STARTED_NOTE = "the run stopped before it began: rerun to export it"


@dataclass
class Row:
    shard: str  # "I/N", or "-" for an unsharded run
    dataset: str
    batch: str
    state: str  # done | failed | not_started | missing
    note: str = ""
    files: int | None = None


@dataclass
class ExportStatus:
    tree: ExportTree
    shards: int | None = None  # N of the runs read; None when unsharded
    reports: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    layout: str = PLAIN  # as the newest report records it (export_layout)

    @property
    def complete(self) -> bool:
        return bool(self.reports) and bool(self.rows) and all(r.state == DONE for r in self.rows)

    def count(self, state: str) -> int:
        return sum(1 for r in self.rows if r.state == state)

    def as_dict(self) -> dict[str, Any]:
        return {"complete": self.complete, "shards": self.shards, "reports": self.reports,
                "ignored_reports": self.ignored, "rows": [asdict(r) for r in self.rows],
                "counts": {state: self.count(state) for state in STATES}, "layout": self.layout}


def export_status(root: Path | ExportTree) -> ExportStatus:
    tree = _tree(root)
    status = ExportStatus(tree)
    reports = _reports(tree)
    status.layout = _layout(tree, reports)
    if not reports:
        status.rows = _rows_from_manifests(tree)
        return status
    newest = _newest(reports)
    count = newest["_count"]
    status.shards = count
    status.ignored = sorted(r["_name"] for r in reports.values() if r["_count"] != count)
    indices: list[int | None] = list(range(count)) if count else [None]
    for index in indices:
        label = "-" if index is None else f"{index}/{count}"
        report = reports.get(report_name(None if index is None else f"{index}/{count}"))
        if report is None:
            status.rows.append(Row(label, "-", "-", MISSING, "no report: this shard has not run (or was killed before it began)"))
            continue
        status.reports.append(report["_name"])
        status.rows += _rows_of_report(tree, label, report, status.layout)
    return status


def export_layout(root: Path | ExportTree) -> str:
    """The layout an export is written in (`status`, `verify`)."""
    tree = _tree(root)
    return _layout(tree, _reports(tree))


def _tree(root: Path | ExportTree) -> ExportTree:
    # resolved once here: the tree's paths are real paths, so a relative root could not contain them
    return LocalTree(root.resolve()) if isinstance(root, Path) else root


def _layout(tree: ExportTree, reports: dict[str, dict[str, Any]]) -> str:
    """As the newest report records it; with no report, as the batch folders show it."""
    if reports:
        return recorded_layout(_newest(reports))
    folders = tree.batch_folders(MANIFEST)
    return folder_layout(folders[0]) if folders else PLAIN


def _newest(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return max(reports.values(), key=lambda r: (r["_started"], r["_name"]))


def _reports(tree: ExportTree) -> dict[str, dict[str, Any]]:
    """{the report's name: its body} of every run report; one written under the name versions
    before used counts under the new name, unless the new one is there too (it wins)."""
    found: dict[str, dict[str, Any]] = {}
    for name in tree.top_level_names():
        parsed = parse_report_name(name)
        if parsed is None:
            continue
        old, index, count = parsed
        key = report_name(None if index is None else f"{index}/{count}")
        if old and key in found:
            continue
        try:
            body = json.loads(tree.read_text(name) or "")
            assert isinstance(body, dict)
        except (OSError, ValueError, AssertionError):
            body = {"status": "unreadable"}
        body["_name"] = name
        body["_count"] = count
        body["_started"] = str(body.get("started_at") or "")
        found[key] = body
    return found


def _rows_of_report(tree: ExportTree, shard: str, report: dict[str, Any], layout: str) -> list[Row]:
    if report.get("status") in ("running", "unreadable"):
        note = ("run in progress, or stopped without concluding (killed): rerun it"
                if report.get("status") == "running" else "report unreadable: rerun it")
        entries = report.get("entries") or ["-"]
        return [Row(shard, str(e), "-", MISSING, note) for e in entries]
    if not report.get("datasets"):  # stopped before any entry was reached
        return [Row(shard, str(e), "-", NOT_STARTED, NOT_STARTED_NOTE) for e in report.get("entries") or []]
    rows = []
    for d in report.get("datasets") or []:
        label = d.get("dataset_id", "?") if d.get("source", "dataset") == "dataset" else f"{d.get('dataset_id')} ({d.get('source')})"
        for b in d.get("batches") or []:
            rows.append(_batch_row(tree, shard, label, batch_folder(d.get("dataset_id", ""), str(b.get("batch_id", "?")), layout), b))
        for g in d.get("delegated") or []:
            state, note = _disk_state(tree, batch_folder(g["dataset_id"], g["batch_id"], layout))
            rows.append(Row(shard, label, g["batch_id"], DONE if state == DONE else MISSING,
                            f"exported by shard {g['shard']}" + (f" ({note})" if note else "")))
        if not d.get("batches") and not d.get("delegated"):
            rows.append(_empty_dataset_row(shard, label, d))
    return rows


def _empty_dataset_row(shard: str, label: str, d: dict[str, Any]) -> Row:
    """A dataset without batches: failed with its own error; not started when the run concluded
    without reaching it (no error of its own); missing while a run may still be at it."""
    if d.get("error"):
        return Row(shard, label, "-", FAILED if d.get("status") == "failed" else MISSING, d["error"])
    if d.get("status") in ("failed", "cancelled"):
        return Row(shard, label, "-", NOT_STARTED, NOT_STARTED_NOTE)
    return Row(shard, label, "-", MISSING, f"dataset {d.get('status')}")


def _batch_row(tree: ExportTree, shard: str, label: str, folder: str, b: dict[str, Any]) -> Row:
    """Done only when the folder says so (`_SUCCESS` and an ok manifest) and the report does not
    say the run failed or left it: a report's failure wins over what the folder shows."""
    batch = str(b.get("batch_id", "?"))
    state, why = _disk_state(tree, folder)
    reported = b.get("status")
    errors = "; ".join((b.get("errors") or [])[:2])
    if b.get("attempted") is False and reported in ("failed", "cancelled") and state != DONE:
        return Row(shard, label, batch, NOT_STARTED, f"{NOT_STARTED_NOTE} ({errors})" if errors else NOT_STARTED_NOTE, b.get("files"))
    if reported == "failed" or state == FAILED:
        return Row(shard, label, batch, FAILED, errors or why, b.get("files"))
    if state == DONE and reported != "cancelled":
        return Row(shard, label, batch, DONE, why, b.get("files"))
    return Row(shard, label, batch, MISSING, f"{reported}: {errors or why}", b.get("files"))


def _disk_state(tree: ExportTree, folder: str) -> tuple[str, str]:
    """(done|failed|missing, why) from the batch folder alone."""
    try:
        manifest = json.loads(tree.read_text(f"{folder}/{MANIFEST}") or "")
    except (OSError, ValueError):
        return MISSING, "no manifest"
    if manifest.get("status") == "ok" and tree.exists(f"{folder}/{SUCCESS}"):
        listed = any(tree.exists(f"{folder}/{name}") for name in SUMS_NAMES)
        return (DONE, "") if listed else (DONE, "checksum list missing")
    if manifest.get("status") == "failed":
        return FAILED, "; ".join(manifest.get("errors", [])[:2])
    return MISSING, f"batch {manifest.get('status')}"


def _rows_from_manifests(tree: ExportTree) -> list[Row]:
    """No run report: what the batch folders say (the export's scope is unknown, so never complete)."""
    rows = []
    for folder in tree.batch_folders(MANIFEST):
        state, note = _disk_state(tree, folder)
        dataset, batch = split_batch_folder(folder)
        rows.append(Row("-", dataset or "?", batch, state, note or "no run report"))
    return rows


def render_status(status: ExportStatus) -> str:
    header = ("shard", "dataset", "batch", "state", "note")
    rows = [header, *((r.shard, r.dataset, r.batch, r.state.replace("_", " "), r.note) for r in status.rows)]
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)] + [r[-1]]).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ----")
    for name in status.ignored:
        lines.append(f"ignored: {name} (an earlier run with another shard count)")
    pointers = sorted({r.dataset.split(" ")[0] for r in status.rows if r.state == DONE})
    for ds in pointers:
        pointer = f"{dataset_folder(ds, status.layout)}/{LATEST}"
        latest = (status.tree.read_text(pointer) or "").strip()
        if latest:
            lines.append(f"{ds}: newest complete batch {latest} ({pointer})")
    done, failed, not_started, missing = (status.count(state) for state in STATES)
    scope = f"{status.shards} shards, {len(status.reports)} reports" if status.shards else f"{len(status.reports)} report"
    if not status.reports:
        scope = "no run report: only what the batch folders say"
    verdict = "complete" if status.complete else "INCOMPLETE"
    unstarted = f"{not_started} not started, " if not_started else ""
    lines.append(f"{verdict}: {done} done, {failed} failed, {unstarted}{missing} missing ({scope})")
    return "\n".join(lines)
