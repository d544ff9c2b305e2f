"""The `--json` documents: one JSON object on stdout per command, for scripts (README, "JSON results").

Every document starts with `schema` ("aep-export/<command>/<version>") and has `ok`, `exit_code`
and `errors` (each `{"kind", "message"}`, kinds from engine/errors.py); the other keys are the
command's own. Within a version keys are only ever added; removing or changing the meaning of one
makes a new version. A command that cannot run at all (configuration, credentials, an unreachable
platform) still writes its document: those four keys only.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .output.report import RunOutcome
    from .output.status import ExportStatus
    from .output.verify import VerifyResult
    from .plan import EntryPlan
    from .platform.listing import DatasetRow

VERSION = 1


def schema(command: str) -> str:
    return f"aep-export/{command}/{VERSION}"


def emit(doc: dict[str, Any]) -> None:
    """The document on stdout, alone (logs go to stderr)."""
    print(json.dumps(doc, indent=2))


def error_json(error: Any) -> dict[str, str]:
    """An error text as data: its kind when it carries one (errors.Failure), "error" otherwise."""
    return {"kind": getattr(error, "kind", "error"), "message": str(error)}


def document(command: str, exit_code: int, errors: Any = (), **fields: Any) -> dict[str, Any]:
    return {"schema": schema(command), "ok": exit_code == 0, "exit_code": exit_code, **fields,
            "errors": [error_json(e) for e in errors]}


def run_document(run: RunOutcome, report: Any) -> dict[str, Any]:
    """_report.json's figures, per dataset and batch, with every error's kind (schema aep-export/run/1)."""
    from .output.report import report_body

    body = report_body(run)
    for dataset in body["datasets"]:
        dataset["error"] = error_json(dataset["error"]) if dataset["error"] else None
        for batch in dataset["batches"]:
            batch["errors"] = [error_json(e) for e in batch["errors"]]
    errors = body.pop("errors")
    for key in ("tool", "exit_code"):
        body.pop(key)
    return document("run", run.exit_code, errors, report=str(report), **body, layout=run.layout)


def check_document(plans: list[EntryPlan], exit_code: int, command: str = "check", destination: str | None = None,
                   layout: str | None = None) -> dict[str, Any]:
    """What a run would export, per entry and batch, and what the destination already holds of it,
    per file, and the layout (export.layout) it would write in (schema aep-export/check/1)."""
    from dataclasses import asdict

    from .output.held import Tally

    entries = [{
        "entry": p.label,
        "dataset_id": p.dataset_id,
        "error": error_json(p.error) if p.error else None,
        "actions": p.actions,
        "batches": [{"batch_id": b.batch_id, "files": b.files, "bytes": b.bytes, "unsized_files": b.unsized,
                     "error": error_json(b.error) if b.error else None, **asdict(b.tally),
                     "file_states": [{"path": f.path, "size": f.size, "state": f.state, "held_bytes": f.held, "note": f.note}
                                     for f in b.held]} for b in p.batches],
        "replaced": [{"batch_id": r.key, "by": r.by, "reason": r.reason} for r in p.replaced],
        "left_out": dict(sorted(p.left_out.items())),
    } for p in plans]
    good = [b for p in plans for b in p.batches if b.error is None]
    totals = {"entries": len(plans), "entries_with_errors": sum(not p.ok for p in plans), "batches": len(good),
              "files": sum(b.files for b in good), "bytes": sum(b.bytes for b in good),
              **asdict(Tally().add(f for b in good for f in b.held))}
    return document(command, exit_code, destination=destination, entries=entries, totals=totals, layout=layout)


def verify_document(result: VerifyResult, where: str, exit_code: int, layout: str | None = None) -> dict[str, Any]:
    """What `verify` checked, every problem it found, and the export's layout (schema aep-export/verify/1)."""
    return document("verify", exit_code, where=where, batches=result.batches, files=result.files, bytes=result.bytes,
                    problems=[{"path": p.path, "what": p.what} for p in result.problems or []], layout=layout)


def status_document(status: ExportStatus, exit_code: int) -> dict[str, Any]:
    """`status --json` as it always was (complete, shards, reports, ignored_reports, rows; later
    counts, layout), plus the keys every document has (schema aep-export/status/1)."""
    return document("status", exit_code, **status.as_dict())


def list_document(rows: list[DatasetRow], sandbox: str, name_filter: str | None) -> dict[str, Any]:
    """The sandbox's datasets (schema aep-export/list/1)."""
    datasets = [{
        "id": r.id, "name": r.name, "created": iso(r.created),
        "last_batch": None if r.batch_id is None else {
            "id": r.batch_id, "created": iso(r.batch_created), "bytes": r.bytes, "records": r.records},
        "error": error_json(r.error) if r.error else None,
    } for r in rows]
    return document("list", 0, sandbox=sandbox, name_filter=name_filter, datasets=datasets)


def iso(ms: int | None) -> str | None:
    """Catalog epoch milliseconds as ISO 8601 UTC (seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if ms is not None else None
