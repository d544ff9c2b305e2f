"""Reruns: a finished export fetches nothing; without the journal files are re-checked, not trusted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import (
    assert_files_match,
    expected_path,
    journal_path,
    read_manifest,
    read_report,
    run_export,
    settings_for,
    sha256_of,
    sha256sum_check,
)

from engine.fake import FakeConfig
from engine.layout import SUCCESS
from engine.outcome import EXIT_OK
from engine.output.control import BOOT_ID
from engine.ranges import RangeSet
from engine.validators import resume_windows


def window_bytes(held: list[tuple[int, int]], size: int) -> int:
    """Held bytes asked again to confirm them (the fake sends no validator)."""
    return sum(end - start for start, end in resume_windows(RangeSet(held), size))


def _cfg() -> FakeConfig:
    return FakeConfig.small(n_datasets=2, files=3, rows=60, seed=51)


async def _first_run(fp, out: Path):
    run = await run_export(settings_for(fp, out))
    assert run.exit_code == EXIT_OK
    assert_files_match(out, fp.expected_files())
    fp.reset_stats()
    return run


async def test_rerun_of_finished_export_fetches_nothing(tmp_path: Path, make_fake) -> None:
    async with make_fake(_cfg()) as fp:
        out = tmp_path / "out"
        await _first_run(fp, out)
        n = len(fp.expected_files())
        mtimes = {e.name: expected_path(out, e).stat().st_mtime_ns for e in fp.expected_files()}

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert fp.stats.bytes_sent == 0 and fp.stats.requests["export.download"] == 0
        t = read_report(out)["totals"]
        assert (t["files"], t["files_reused"], t["files_downloaded"], t["bytes_fetched"]) == (n, n, 0, 0)
        assert all(r.status.value == "reused" for b in run.batches() for r in b.results)
        assert {e.name: expected_path(out, e).stat().st_mtime_ns for e in fp.expected_files()} == mtimes
        assert_files_match(out, fp.expected_files())
        for ds in fp.dataset_ids:
            folder = out / ds / fp.latest_batch(ds).data_id
            assert (folder / SUCCESS).exists() and sha256sum_check(folder).returncode == 0


async def test_rerun_without_journal_rechecks_and_fetches_nothing(tmp_path: Path, make_fake) -> None:
    async with make_fake(_cfg()) as fp:
        out = tmp_path / "out"
        await _first_run(fp, out)
        journal_path(out).unlink()

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert fp.stats.bytes_sent == 0 and fp.stats.requests["export.download"] == 0
        t = read_report(out)["totals"]
        assert t["files_reused"] == len(fp.expected_files()) and t["files_downloaded"] == 0
        # re-checked files are journalled again (so a third run trusts them)
        recorded = journal_path(out).read_text().splitlines()
        assert len(recorded) == len(fp.expected_files())
        for ds in fp.dataset_ids:
            folder = out / ds / fp.latest_batch(ds).data_id
            assert sha256sum_check(folder).returncode == 0


async def test_truncated_final_file_is_fetched_again(tmp_path: Path, make_fake) -> None:
    async with make_fake(_cfg()) as fp:
        out = tmp_path / "out"
        await _first_run(fp, out)
        victim = fp.expected_files()[0]
        path = expected_path(out, victim)
        path.write_bytes(path.read_bytes()[:-100])
        journal_path(out).unlink()

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert fp.stats.bytes_by_file == {f"{victim.dataset_file_id}/{victim.name}": victim.size}
        assert_files_match(out, fp.expected_files())


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("journal", ["deleted", "kept"])
async def test_corrupted_final_file_is_not_trusted(tmp_path: Path, make_fake, journal: str) -> None:
    async with make_fake(_cfg()) as fp:
        out = tmp_path / "out"
        await _first_run(fp, out)
        victim = fp.expected_files()[1]
        path = expected_path(out, victim)
        size = path.stat().st_size
        _flip_middle_byte(path)
        assert path.stat().st_size == size and sha256_of(path) != victim.sha256
        if journal == "deleted":
            journal_path(out).unlink()

        run = await run_export(settings_for(fp, out))

        folder = out / victim.dataset_id / victim.batch_id
        repaired = sha256_of(path) == victim.sha256
        flagged = run.exit_code != EXIT_OK and not (folder / SUCCESS).exists()
        assert repaired or flagged, "a corrupted file was kept and the batch still claims success"
        if repaired:
            assert sha256sum_check(folder).returncode == 0
        manifest_sha = {f["path"]: f["sha256"] for f in read_manifest(folder)["files"]}
        assert manifest_sha.get(f"{victim.dataset_file_id}/{victim.name}") in (victim.sha256, None)


async def test_leftover_part_file_is_resumed_or_replaced(tmp_path: Path, make_fake) -> None:
    """A .part left by an interrupted run never ends up as the final file unless it verifies."""
    async with make_fake(_cfg()) as fp:
        out = tmp_path / "out"
        victim = fp.expected_files()[0]
        final = expected_path(out, victim)
        final.parent.mkdir(parents=True)
        src = victim.source_path.read_bytes()
        final.with_name(final.name + ".part").write_bytes(src[: len(src) // 2])

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert_files_match(out, fp.expected_files())
        assert not list(out.rglob("*.part"))
        # resumed: the first half was not fetched again, but for the window that confirms it
        half = len(src) // 2
        refetched = fp.stats.bytes_by_file[f"{victim.dataset_file_id}/{victim.name}"]
        assert refetched <= victim.size - half + window_bytes([(0, half)], victim.size)
        assert os.path.getsize(final) == victim.size


def write_ctl(final: Path, size: int, done: list, synced: list | None = None, boot: str | None = BOOT_ID) -> None:
    """A control file as a run on this machine (this boot, unless told otherwise) leaves it."""
    state = {"v": 1, "size": size, "done": done, "synced": synced or [], "boot": boot}
    final.with_name(final.name + ".part.ctl").write_text(json.dumps(state))


async def test_a_part_held_whole_is_committed_without_a_request(tmp_path: Path, make_fake) -> None:
    """The state a kill between the journal entry and the rename leaves: the rerun re-checks the
    held bytes and commits them; nothing is fetched."""
    async with make_fake(_cfg()) as fp:
        out = tmp_path / "out"
        victim = fp.expected_files()[0]
        final = expected_path(out, victim)
        final.parent.mkdir(parents=True)
        final.with_name(final.name + ".part").write_bytes(victim.source_path.read_bytes())
        write_ctl(final, victim.size, done=[[0, victim.size]])

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert fp.stats.bytes_by_file[f"{victim.dataset_file_id}/{victim.name}"] == 0
        assert_files_match(out, fp.expected_files())
        assert not list(out.rglob("*.part*"))


async def test_held_ranges_are_kept_and_only_the_gaps_fetched(tmp_path: Path, make_fake) -> None:
    """A .part holding two ranges (parallel streams when the run died): only the rest is fetched."""
    async with make_fake(FakeConfig.small(n_datasets=1, files=1, rows=40000, seed=52)) as fp:
        out = tmp_path / "out"
        victim = fp.expected_files()[0]
        src = victim.source_path.read_bytes()
        a, b, c = len(src) // 4, len(src) // 2, 3 * len(src) // 4
        final = expected_path(out, victim)
        final.parent.mkdir(parents=True)
        held = bytearray(len(src))
        held[:a], held[b:c] = src[:a], src[b:c]
        final.with_name(final.name + ".part").write_bytes(bytes(held[:c]))
        write_ctl(final, len(src), done=[[0, a], [b, c]])

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert_files_match(out, fp.expected_files())
        assert fp.stats.bytes_by_file[f"{victim.dataset_file_id}/{victim.name}"] == (
            (b - a) + (len(src) - c) + window_bytes([(0, a), (b, c)], len(src)))


async def test_a_control_file_that_claims_more_than_the_part_holds_is_not_trusted(tmp_path: Path, make_fake) -> None:
    async with make_fake(_cfg()) as fp:
        out = tmp_path / "out"
        victim = fp.expected_files()[0]
        final = expected_path(out, victim)
        final.parent.mkdir(parents=True)
        final.with_name(final.name + ".part").write_bytes(victim.source_path.read_bytes()[:100])
        write_ctl(final, victim.size, done=[[0, victim.size]])

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert_files_match(out, fp.expected_files())
        assert fp.stats.bytes_by_file[f"{victim.dataset_file_id}/{victim.name}"] == victim.size


@pytest.mark.skipif(BOOT_ID is None, reason="no boot id on this system: only synced ranges are ever trusted")
async def test_after_a_reboot_only_the_synced_ranges_are_trusted(tmp_path: Path, make_fake) -> None:
    """Bytes written but never fdatasync'ed may not have survived a node crash: a control file
    from another boot keeps only what the last fdatasync covered."""
    async with make_fake(FakeConfig.small(n_datasets=1, files=1, rows=40000, seed=53)) as fp:
        out = tmp_path / "out"
        victim = fp.expected_files()[0]
        src = victim.source_path.read_bytes()
        synced, written = len(src) // 4, 3 * len(src) // 4
        final = expected_path(out, victim)
        final.parent.mkdir(parents=True)
        final.with_name(final.name + ".part").write_bytes(src[:synced] + b"\0" * (written - synced))  # lost in the crash
        write_ctl(final, len(src), done=[[0, written]], synced=[[0, synced]], boot="another-boot")

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert_files_match(out, fp.expected_files())
        assert fp.stats.bytes_by_file[f"{victim.dataset_file_id}/{victim.name}"] == (
            len(src) - synced + window_bytes([(0, synced)], len(src)))
