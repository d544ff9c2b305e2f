"""What makes a .part safe to resume from, checked where a kill test cannot reach deterministically.

A .part without a control file is trusted as a contiguous prefix (output/control.py). So a second
stream must never write past the prefix before a control file exists: a kill in that window would
leave a hole the rerun takes for data, and the file would be committed with the hole in it (a
parquet footer and the row counts do not see it). The kill tests only kill once a control file
exists, so they cannot catch a regression here; this test checks the rule at every write.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from conftest import assert_files_match, expected_path, journal_path, read_report, run_export, settings_for, sha256_of

from engine.fake import DatasetSpec, FakeConfig, Faults
from engine.layout import control_path, part_path
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.output import local


async def test_no_stream_writes_past_the_prefix_of_a_part_that_has_no_control_file(tmp_path: Path, make_fake, monkeypatch) -> None:
    # Periodic control writes off: only the writes the rule requires remain, whatever the timing.
    monkeypatch.setattr(local, "CONTROL_INTERVAL", 1e9)
    beyond_prefix: list[tuple[str, int, int]] = []
    violations: list[tuple[str, int, int]] = []
    original, original_control = local.LocalTarget.flush, local.write_control
    durable_controls: set[str] = set()  # files whose control file was fsynced with its folder

    def recorded_control(final, size, done, synced, durable=False, **kw):
        original_control(final, size, done, synced, durable=durable, **kw)
        if durable:
            durable_controls.add(final.name)

    async def checked_flush(self, offset, chunks, download):
        length = os.fstat(self.fd).st_size
        if offset != length:  # not appending to the prefix
            beyond_prefix.append((self.final.name, offset, length))
            # durable too: after a node crash a .part with holes must not be left without one
            if not control_path(self.final).exists() or self.final.name not in durable_controls:
                violations.append((self.final.name, offset, length))
        await original(self, offset, chunks, download)

    monkeypatch.setattr(local.LocalTarget, "flush", checked_flush)
    monkeypatch.setattr(local, "write_control", recorded_control)
    cfg = FakeConfig(seed=12, faults=Faults(bandwidth_bps=4e6),
                     datasets=[DatasetSpec(files_per_dataset_file=1, file_mb=8, batches=1, failed_batch=False,
                                           processing_batch=False)])
    async with make_fake(cfg) as fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, concurrency=4))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert run.totals["split_files"] == 1  # the lone file was fetched by several streams...
        assert beyond_prefix, "no write landed past the prefix: the rule was never exercised"  # ...writing out of order
        assert violations == [], f"written past the prefix with no durable control file beside the .part: {violations[:3]}"
        assert_files_match(out, fp.expected_files())


async def test_a_control_file_written_for_another_size_is_not_trusted(tmp_path: Path, make_fake) -> None:
    """A .part and control file left by another file of that name (listed with another size):
    none of its bytes are used, even though they start like parquet and fit the listed size."""
    async with make_fake(FakeConfig.small(n_datasets=1, files=2, rows=30000, seed=53)) as fp:
        out = tmp_path / "out"
        victim, other = sorted(fp.expected_files(), key=lambda e: e.size, reverse=True)
        assert other.size != victim.size
        stale = other.source_path.read_bytes()[: other.size // 2]
        final = expected_path(out, victim)
        control_path(final).parent.mkdir(parents=True)
        part_path(final).write_bytes(stale)
        control_path(final).write_text(f'{{"v":1,"size":{other.size},"done":[[0,{len(stale)}]]}}')

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK, read_report(out)
        assert sha256_of(final) == victim.sha256, "bytes of another file were kept"
        assert fp.stats.bytes_by_file[f"{victim.dataset_file_id}/{victim.name}"] == victim.size
        assert_files_match(out, fp.expected_files())


async def test_a_disk_that_fills_mid_write_stops_the_run_as_disk_full(tmp_path: Path, make_fake, monkeypatch) -> None:
    """The free-space check at open passes, then a write fails with ENOSPC (another writer filled the
    disk): the run stops with the disk-full status and message, and a rerun finishes the export."""
    writes = {"n": 0}
    original = local.pwrite_all

    def fills_up(fd, chunks, offset):
        writes["n"] += 1
        if writes["n"] > 1:  # the first write lands, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(fd, chunks, offset)

    monkeypatch.setattr(local, "pwrite_all", fills_up)
    async with make_fake(FakeConfig.small(n_datasets=2, files=3, rows=3000, seed=54)) as fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, concurrency=2))
        assert writes["n"] > 1, "no write failed: the test did not simulate a full disk"
        report = read_report(out)
        assert run.exit_code == EXIT_FAILED and report["status"] == "disk_full", report["status"]
        assert "free space and rerun" in report["errors"][0], report["errors"]

        monkeypatch.setattr(local, "pwrite_all", original)  # room again
        rerun = await run_export(settings_for(fp, out))
        assert rerun.exit_code == EXIT_OK
        assert_files_match(out, fp.expected_files())


async def test_a_journal_line_torn_by_a_crash_is_ignored(tmp_path: Path, make_fake) -> None:
    """A crash (or power loss) mid-append leaves half a line at the end of the journal: the rerun
    reads the rest and fetches nothing that was verified."""
    async with make_fake(FakeConfig.small(n_datasets=1, files=3, rows=40, seed=58)) as fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
        journal = journal_path(out)
        last = journal.read_text().splitlines()[-1]
        with journal.open("a") as fh:
            fh.write(last[: len(last) // 2])  # no newline: the append was cut
        fp.reset_stats()

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK, read_report(out)
        assert fp.stats.requests["export.download"] == 0
        assert run.totals["files_reused"] == len(fp.expected_files())


def test_an_entry_recorded_after_a_torn_line_is_not_lost(tmp_path: Path) -> None:
    from engine.output.journal import Journal, Verified

    first = Journal(tmp_path)
    first.record(Verified("ds/b/f-1/a.parquet", 10, "a" * 64, 1, 1))
    first.close()
    with first.path.open("a") as fh:
        fh.write('{"path":"ds/b/f-1/b.parq')  # a crash cut this append
    second = Journal(tmp_path)
    second.load()
    second.record(Verified("ds/b/f-1/c.parquet", 30, "c" * 64, 3, 3))
    second.close()
    third = Journal(tmp_path)
    third.load()
    assert third.recorded_sha256("ds/b/f-1/c.parquet") == "c" * 64  # not glued to the torn line
    assert third.recorded_sha256("ds/b/f-1/a.parquet") == "a" * 64
