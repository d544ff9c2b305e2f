"""Memory flat in the number of files (issue #20): per-file state lives only while a file is in flight.

One export of many tiny files, its Python heap measured side by side at two points of the same run
(tracemalloc, the fake platform's allocations left out): when a quarter of the batches are done and
when all but the last few are. Four times the finished files must leave the heap about where it
was. Before, every file's result, journal entry and listed path stayed for the whole run, and the
Catalog object of every batch. (Whole-process peak RSS by number of files, which also counts the
allocator's own growth: `python -m bench.memory --files 3000 10000`.)
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from conftest import run_export, settings_for

from engine import exporter
from engine.fake import FakeConfig
from engine.fake.config import DatasetSpec
from engine.outcome import EXIT_OK

DATASETS, FILES_PER_BATCH = 120, 8
GROWTH = 0.10  # heap growth from a quarter of the batches done to all of them, over the heap at a quarter
NOT_THE_ENGINE = [tracemalloc.Filter(False, pattern, all_frames=True)
                  for pattern in ("*/engine/fake/*", "*/aiohttp/web_*", "*/tracemalloc.py", "*/tests/*")]


def heap(snapshot: tracemalloc.Snapshot) -> int:
    return sum(s.size for s in snapshot.filter_traces(NOT_THE_ENGINE).statistics("filename"))


async def test_the_heap_does_not_grow_with_the_files_done(tmp_path: Path, make_fake, monkeypatch) -> None:
    cfg = FakeConfig(seed=81, datasets=[DatasetSpec(files_per_dataset_file=FILES_PER_BATCH, rows_per_file=20)
                                        for _ in range(DATASETS)])
    marks = {DATASETS // 4: "quarter", DATASETS - 4: "end"}
    heaps: dict[str, int] = {}
    finalized = 0
    real = exporter.Exporter._maybe_finalize

    async def measured(self: exporter.Exporter, bo) -> None:
        nonlocal finalized
        was = bo.status
        await real(self, bo)
        if was == "running" and bo.status != "running":
            finalized += 1
            if finalized in marks:
                gc.collect()
                heaps[marks[finalized]] = heap(tracemalloc.take_snapshot())

    monkeypatch.setattr(exporter.Exporter, "_maybe_finalize", measured)
    async with make_fake(cfg) as fp:
        tracemalloc.start(5)
        try:
            run = await run_export(settings_for(fp, tmp_path / "out", concurrency=8))
        finally:
            tracemalloc.stop()
    assert run.exit_code == EXIT_OK and run.totals["files"] == DATASETS * FILES_PER_BATCH
    files_between = (marks_files := (DATASETS - 4 - DATASETS // 4) * FILES_PER_BATCH)
    growth = heaps["end"] - heaps["quarter"]
    assert growth / heaps["quarter"] <= GROWTH, (
        f"heap {heaps['quarter'] / 2**20:.2f} MiB at a quarter of the batches, {heaps['end'] / 2**20:.2f} MiB "
        f"{marks_files} files later: {growth / files_between:.0f} bytes more per file")


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
