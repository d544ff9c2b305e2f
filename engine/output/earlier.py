"""What an earlier run's report says that decides whether this run may write here at all.

Light on purpose (the layout names and json): the CLI asks it before the engine is imported, to
send a run's early token request only when the run will not be refused (engine/cli.py, export);
the exporter asks it again once the destination is open (report.layout_switch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from ..layout import HIVE, PLAIN, old_report_name, recorded_layout, report_name


class Files(Protocol):
    """What is read here of a destination's files (destination.Files has it)."""

    def read_text(self, rel: str) -> str | None: ...


def layout_refusal(files: Files, layout: str, shard: str | None) -> str | None:
    """Why a run in `layout` is refused here (a ConfigError: exit 2, nothing written), or None: the
    destination holds an export of the other layout, and the same batches under two trees would be
    read twice by any reader of the root. The layout is the one the earlier run's report records
    (reports written before layouts existed: plain)."""
    earlier = _layout_written(files, shard)
    if earlier is None or earlier == layout:
        return None
    shapes = {PLAIN: "{dataset}/{batch}/…", HIVE: "dataset={dataset}/batch={batch}/…"}
    return (f"the output directory holds an export in the {earlier} layout ({shapes.get(earlier, '?')}), this run "
            f"asks for the {layout} layout ({shapes[layout]}): export.layout must stay {earlier} there, or use another out_dir")


def _layout_written(files: Files, shard: str | None) -> str | None:
    for name in dict.fromkeys((report_name(shard), old_report_name(shard), report_name(), old_report_name())):
        try:
            body = json.loads(files.read_text(name) or "null")
        except ValueError:
            continue
        if isinstance(body, dict):
            return recorded_layout(body)
    return None


class FolderReports:
    """A local folder's reports as `layout_refusal` reads them, without the batch-file machinery."""

    def __init__(self, root: Path):
        self.root = root

    def read_text(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return None
