"""Group commit (issue #20): the syncs are shared, the durability order is not traded away.

Every fsync and rename of a real export is observed (os.fsync / os.replace wrapped in-process) and
the order the README promises is checked for each batch: a file's bytes are fsynced before its
journal line and its final name, the folder that gained the name is fsynced before the batch's
`_SUCCESS`, and so are the batch's lists (fsynced, renamed, their folder fsynced) — a power loss at
any point can lose a `_SUCCESS`, never keep one ahead of what it vouches for.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import assert_files_match, expected_path, run_export, settings_for

from engine.fake import FakeConfig
from engine.layout import MANIFEST, STATE_DIR, SUCCESS, SUMS, part_path, write_temp
from engine.outcome import EXIT_OK


class DiskLog:
    """What reached the disk calls, in order: ("fsync", path), ("replace", src, dst) and ("mkdir", path)."""

    def __init__(self, journal: Path):
        self.events: list[tuple[str, ...]] = []
        self.journal_at_rename: dict[str, str] = {}  # final path -> the journal's text when it got its name
        self._journal = journal
        self._lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_fsync, real_replace, real_mkdir = os.fsync, os.replace, os.mkdir

        def fsync(fd: int) -> None:
            real_fsync(fd)
            with self._lock:
                self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

        def replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
            with self._lock:
                if Path(src).parent.name == STATE_DIR and Path(dst).parent.name != STATE_DIR:  # a data file's commit
                    self.journal_at_rename[str(dst)] = self._journal.read_text() if self._journal.exists() else ""
                real_replace(src, dst)
                self.events.append(("replace", str(src), str(dst)))

        def mkdir(path: os.PathLike[str] | str, *args: object, **kwargs: object) -> None:
            real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]
            with self._lock:
                self.events.append(("mkdir", str(path)))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "mkdir", mkdir)

    def renamed_to(self, dst: Path) -> int:
        found = [i for i, e in enumerate(self.events) if e[0] == "replace" and e[2] == str(dst)]
        assert len(found) == 1, f"{dst} renamed {len(found)} times"
        return found[0]

    def made(self, folder: Path) -> int | None:
        found = [i for i, e in enumerate(self.events) if e == ("mkdir", str(folder))]
        return found[0] if found else None

    def synced(self, path: Path, after: int = -1, before: int | None = None) -> bool:
        end = len(self.events) if before is None else before
        return any(e == ("fsync", str(path)) for e in self.events[after + 1:end])


async def recorded_export(fp, out: Path, monkeypatch: pytest.MonkeyPatch) -> DiskLog:
    """A complete export of `fp` into `out` (8 connections) with every fsync, rename and mkdir logged."""
    disk = DiskLog(out / STATE_DIR / "journal.jsonl")
    disk.install(monkeypatch)
    run = await run_export(settings_for(fp, out, concurrency=8))
    monkeypatch.undo()
    assert run.exit_code == EXIT_OK
    return disk


async def test_each_batch_is_durable_in_the_promised_order(tmp_path: Path, make_fake, monkeypatch) -> None:
    async with make_fake(FakeConfig.small(n_datasets=3, files=4, rows=40, seed=71)) as fp:
        out = (tmp_path / "out").resolve()
        disk = await recorded_export(fp, out, monkeypatch)
        expected = fp.expected_files()
        assert_files_match(out, expected)
        for batch in {expected_path(out, e).parents[1] for e in expected}:
            success = disk.renamed_to(batch / SUCCESS)
            for name in (SUMS, MANIFEST):  # the lists: bytes synced, renamed, the folder synced, then _SUCCESS
                renamed = disk.renamed_to(batch / name)
                assert disk.synced(write_temp(batch / name), before=renamed), f"{name} renamed before its bytes were synced"
                assert disk.synced(batch, after=renamed, before=success), f"{batch.name}: {name}'s name not synced before {SUCCESS}"
            for e in (e for e in expected if expected_path(out, e).parents[1] == batch):
                final = expected_path(out, e)
                renamed = disk.renamed_to(final)
                assert disk.synced(part_path(final), before=renamed), f"{final.name} renamed before its bytes were synced"
                assert f'"path":"{final.relative_to(out).as_posix()}"' in disk.journal_at_rename[str(final)], \
                    f"{final.name} got its name before its journal line was written"
                assert disk.synced(final.parent, after=renamed, before=success), \
                    f"{final.name}: its folder was not synced between its rename and the batch's {SUCCESS}"


async def test_a_new_batch_folder_is_durable_in_its_parent_before_its_success(tmp_path: Path, make_fake,
                                                                               monkeypatch) -> None:
    """A folder's entry lives in its parent: every folder a run makes on the way to a file (the
    dataset's, the batch's, the dataSetFile's) has its parent fsynced after it was made and before
    the batch's `_SUCCESS`, else a power loss can take the whole batch folder, `_SUCCESS` and all."""
    async with make_fake(FakeConfig.small(n_datasets=3, files=2, rows=40, seed=73)) as fp:
        out = (tmp_path / "out").resolve()
        out.mkdir()
        disk = await recorded_export(fp, out, monkeypatch)
        expected = fp.expected_files()
        for e in expected:
            final = expected_path(out, e)
            success = disk.renamed_to(final.parents[1] / SUCCESS)
            for folder in final.parents[:3]:  # the dataSetFile's, the batch's and the dataset's folders
                made = disk.made(folder)
                assert made is not None and made < success, f"{folder} was not made by this run before its {SUCCESS}"
                assert disk.synced(folder.parent, after=made, before=success), \
                    f"{folder.relative_to(out)}: its entry in {folder.parent.name} was not synced before the batch's {SUCCESS}"


async def test_a_rerun_over_a_finished_batch_leaves_its_files_as_they_are(tmp_path: Path, make_fake) -> None:
    """Nothing to fetch and nothing changed: the batch files are not written (nor synced) again."""
    async with make_fake(FakeConfig.small(n_datasets=2, files=3, rows=40, seed=72)) as fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
        batches = {expected_path(out, e).parents[1] for e in fp.expected_files()}
        before = {b / n: (b / n).stat().st_ino for b in batches for n in (SUMS, MANIFEST, SUCCESS)}
        fp.reset_stats()

        rerun = await run_export(settings_for(fp, out))

        assert rerun.exit_code == EXIT_OK and fp.stats.requests["export.download"] == 0
        assert {p: p.stat().st_ino for p in before} == before, "a finished batch's files were written again"
        assert_files_match(out, fp.expected_files())


async def test_a_small_file_is_checked_from_the_bytes_it_was_written_from(tmp_path: Path, make_fake,
                                                                          monkeypatch) -> None:
    """Per-file cost (issue #20): a file that arrives whole in one response has its footer, row
    count and page headers checked from the bytes in memory, not read back from its `.part` (a
    pread per page header, each a thread waiting for the GIL again): no `.part` is read at all."""
    reads: list[str] = []
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith(".part"):
            reads.append(path)
        return real_pread(fd, n, offset)

    async with make_fake(FakeConfig.small(n_datasets=2, files=3, rows=40, seed=74)) as fp:
        out = tmp_path / "out"
        monkeypatch.setattr(os, "pread", pread)
        run = await run_export(settings_for(fp, out, concurrency=4))
        monkeypatch.undo()

        assert run.exit_code == EXIT_OK
        assert_files_match(out, fp.expected_files())
        assert run.totals["files_downloaded"] == len(fp.expected_files())
        assert reads == [], f"{len(reads)} reads of .part files to check them"
