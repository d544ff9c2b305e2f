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
import json
import pathlib
import tracemalloc
from pathlib import Path

import pytest
from conftest import run_export, settings_for

from engine import exporter
from engine.errors import Failure
from engine.fake import FakeConfig
from engine.fake.config import DatasetSpec
from engine.model import BatchRef, Listing
from engine.outcome import EXIT_OK
from engine.output import report
from engine.output.journal import Journal, Verified
from engine.output.localfiles import LocalFiles
from engine.output.report import BatchOutcome, DatasetOutcome, RunOutcome, Tally

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


def a_finished_run(datasets: int) -> RunOutcome:
    """A run's outcome as it concludes: one ok batch per dataset (as the bench's files axis has)."""
    run = RunOutcome(entries=[f"dataset:{n:024x}" for n in range(datasets)], status="ok", totals={"files": 3 * datasets})
    for n in range(datasets):
        outcome = DatasetOutcome(f"{n:024x}", name=f"Scores ñ {n}", status="ok")
        batch = BatchOutcome(BatchRef(outcome.dataset_id, f"01{n:024X}", expected_records=1100), listing=Listing(files=3),
                             status="ok", records_found=1100, errors=[Failure("record_count", "a \u2028 note")] if n % 7 == 0 else [])
        batch.tally = Tally(seen=3, ok=3, reused=3, bytes=60_000)
        outcome.batches.append(batch)
        run.datasets.append(outcome)
    return run


def report_peak(folder: Path, run: RunOutcome) -> int:
    """The heap's peak while the run's final report is written (tracemalloc), after checking that
    its text is the whole body dumped at once."""
    whole = json.dumps({**report.report_body(run), "layout": run.layout}, indent=2) + "\n"
    folder.mkdir()
    tracemalloc.start()
    try:
        report.write_report(folder, run)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (folder / "_report.json").read_text(encoding="utf-8") == whole
    return peak


def test_the_final_report_is_written_a_dataset_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """_report.json is the same text as the whole body dumped at once, but writing it holds neither
    that text nor the body: ten times the datasets leave its peak heap where it was. Before, the
    body, the encoder's pieces of it, the text and its bytes were all held at the end of a run (at
    10,000 datasets, about 40 MiB of peak RSS for a 6.5 MB report)."""
    monkeypatch.setattr(report.time, "monotonic", lambda: 1000.0)  # duration_s the same in both texts
    small, large = (report_peak(tmp_path / str(n), a_finished_run(n)) for n in (400, 4000))
    assert large <= 1.5 * small, f"{small / 2**10:.0f} KiB at 400 datasets, {large / 2**10:.0f} KiB at 4,000"


def test_finishing_a_batch_keeps_nothing_of_it_in_the_destination(tmp_path: Path) -> None:
    """Writing a batch's lists, `_SUCCESS` and `_LATEST` leaves nothing behind per batch in the
    destination's caches: from 600 batches finished to 2,400 the heap stays where it was (the
    outcomes themselves are let go here). Before, every dataset and batch folder made stayed
    remembered (a Path each, ~0.9 KiB per dataset), every dataset kept a lock for its `_LATEST`,
    and the resolved-folder cache grew to 4,096 folders."""
    files = LocalFiles(tmp_path)

    def finish(first: int, last: int) -> None:
        for n in range(first, last):
            bo = BatchOutcome(BatchRef(f"{n:024x}", f"01{n:024X}"), listing=Listing())
            report.finalize_batch(files, bo, durable=False)
            assert bo.status == "ok"

    def held() -> int:
        """The heap, but for the interpreter's table of interned strings (pathlib interns every
        name it parses): it grows in steps, at a size set by all the tests run before this one."""
        gc.collect()
        return sum(t.size for t in tracemalloc.take_snapshot().traces
                   if not (t.size >= 1 << 20 and t.traceback[0].filename == pathlib.__file__))

    finish(0, 50)  # module-level state made once (imports, first folders)
    tracemalloc.start()
    try:
        finish(50, 600)
        at_600 = held()
        finish(600, 2400)
        at_2400 = held()
    finally:
        tracemalloc.stop()
    assert at_2400 - at_600 <= 64 << 10, f"{(at_2400 - at_600) / 1800:.0f} bytes kept per batch finished"


def test_a_rerun_reads_the_journal_a_line_at_a_time(tmp_path: Path) -> None:
    """Loading the journal of a large export (the rerun's start) keeps its index, and while it
    reads holds little more: never the whole journal and a bytes object per line. Before, a rerun
    over 30,000 files peaked higher than the export itself (105 vs 97 MiB) partly for this."""
    written = Journal(tmp_path)
    written.record_many([Verified(f"{n:024x}/01{n:024X}/{n:024x}/part-{n:05}.parquet", 20_000 + n, f"{n:064x}", 370, n)
                         for n in range(20_000)])
    written.close()
    tracemalloc.start()
    try:
        journal = Journal(tmp_path)
        journal.load()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert journal.entry(f"{19_999:024x}/01{19_999:024X}/{19_999:024x}/part-19999.parquet") is not None
    size = journal.path.stat().st_size
    assert peak - kept <= size / 4, (f"loading a {size / 2**20:.1f} MiB journal peaked {(peak - kept) / 2**20:.1f} MiB "
                                     f"above the {kept / 2**20:.1f} MiB it keeps")
