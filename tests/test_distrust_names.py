"""Names from the server never reach our own namespace (issue #17, cases 2 and 5).

Our temporary and control files live in a hidden folder beside the data, named from a hash
(engine/layout.py), so no listed name can be one of them and none passes NAME_MAX; a listed
id that would be one of our own files fails its batch alone, in one line. `verify` flags any
temporary file left behind, and `status` never calls a failed batch done.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from conftest import assert_files_match, expected_path, read_report, run_cli, run_export, settings_for, sha256_of, toml_config
from liar.names import rename_dataset_file, rename_files

from engine.fake import DatasetSpec, FakeConfig
from engine.fake.server import ThreadedFakePlatform
from engine.layout import MANIFEST, STATE_DIR, SUCCESS, SUMS
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.output.status import DONE, FAILED, export_status
from engine.output.verify import verify_export


def _victim_batch(fp, dataset_id: str):
    return fp.latest_batch(dataset_id)


def test_a_dataset_file_id_named_like_our_marker_fails_its_batch_alone(tmp_path: Path, make_fake) -> None:
    """Case 5: a dataSetFileId `_SUCCESS`. Before: a 73-line traceback, the other dataset cancelled,
    and `status` called the bad batch done (its `_SUCCESS` was the dataSetFile's folder)."""
    fp = make_fake(FakeConfig(seed=171, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=300, dataset_files=2),
                                                   DatasetSpec(files_per_dataset_file=3, rows_per_file=300)]))
    victim_ds, other_ds = fp.dataset_ids
    batch = _victim_batch(fp, victim_ds)
    renamed = rename_dataset_file(fp, batch.files[0].id, SUCCESS)
    threaded = ThreadedFakePlatform(fp)
    try:
        out = tmp_path / "out"
        config = tmp_path / "c.toml"
        config.write_text(toml_config(fp, out))
        proc = run_cli("run", "--config", str(config), "--no-progress", cwd=tmp_path)
    finally:
        threaded.stop()

    assert renamed, "the listing was never renamed"
    assert proc.returncode == EXIT_FAILED, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    report = read_report(out)
    by_id = {d["dataset_id"]: d for d in report["datasets"]}
    assert by_id[other_ds]["status"] == "ok"  # the other dataset is exported in full
    assert_files_match(out, [e for e in fp.expected_files() if e.dataset_id == other_ds])
    (bad,) = by_id[victim_ds]["batches"]
    assert bad["status"] == "failed"
    assert len(bad["errors"]) == 1 and SUCCESS in bad["errors"][0] and "aep-export" in bad["errors"][0], bad["errors"]
    folder = out / victim_ds / batch.data_id
    assert not (folder / SUCCESS).exists()  # neither our marker nor a folder of that name
    kept = [e for e in fp.expected_files() if e.dataset_id == victim_ds and e.dataset_file_id != batch.files[0].id]
    assert kept and all(sha256_of(expected_path(out, e)) == e.sha256 for e in kept)  # the rest of the batch is there

    rows = {(r.dataset, r.batch): r for r in export_status(out).rows}
    assert rows[(victim_ds, batch.data_id)].state == FAILED
    assert rows[(other_ds, fp.latest_batch(other_ds).data_id)].state == DONE


@pytest.mark.parametrize("listed_id", [STATE_DIR, MANIFEST, SUMS, "SHA256SUMS", "_LATEST", "_success", f"{SUCCESS}.tmp"])
async def test_every_name_of_ours_is_refused_as_a_dataset_file_id(listed_id: str, tmp_path: Path, make_fake) -> None:
    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=200, seed=172))
    batch = _victim_batch(fp, fp.dataset_ids[0])
    renamed = rename_dataset_file(fp, batch.files[0].id, listed_id)
    async with fp:
        run = await run_export(settings_for(fp, tmp_path / "out"))
    assert renamed
    assert run.exit_code == EXIT_FAILED
    (bad,) = run.datasets[0].batches
    assert bad.status == "failed" and listed_id in bad.errors[0], bad.errors
    taken = tmp_path / "out" / fp.dataset_ids[0] / batch.data_id / listed_id
    assert not any(p.suffix == ".parquet" for p in taken.rglob("*"))  # no data where our names are


async def test_a_name_and_that_name_plus_part_are_two_files(tmp_path: Path, make_fake) -> None:
    """Case 2: `x.parquet` and `x.parquet.part` in one listing. Before: exit 0, `_SUCCESS`, and
    `x.parquet` held the other file's bytes (its .part was the other's final name)."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=3000, seed=173))
    first, second = sorted(fp.expected_files(), key=lambda e: e.name)
    renamed = rename_files(fp, first.dataset_file_id, {first.name: "x.parquet", second.name: "x.parquet.part"})
    async with fp:
        first, second = sorted(fp.expected_files(), key=lambda e: e.name)  # digests known once started
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))
        assert renamed
        assert run.exit_code == EXIT_OK, read_report(out)
        folder = expected_path(out, first).parent
        assert sha256_of(folder / "x.parquet") == first.sha256
        assert sha256_of(folder / "x.parquet.part") == second.sha256
        assert verify_export(out).problems == []

        again = await run_export(settings_for(fp, out))  # the rerun reuses both, each as itself
    assert again.exit_code == EXIT_OK and again.totals["files_reused"] == 2
    assert sha256_of(folder / "x.parquet") == first.sha256 and sha256_of(folder / "x.parquet.part") == second.sha256


async def test_a_valid_name_of_250_bytes_exports(tmp_path: Path, make_fake) -> None:
    """Case 5: a 250-byte name is valid (NAME_MAX is 255), so it must export; before, its
    `.part.ctl` (259 bytes) failed on `File name too long`."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=30000, seed=174))
    victim = max(fp.expected_files(), key=lambda e: e.size)
    long_name = "é" * 100 + "s" * 42 + ".parquet"  # 250 bytes in UTF-8
    assert len(long_name.encode()) == 250
    renamed = rename_files(fp, victim.dataset_file_id, {victim.name: long_name})
    async with fp:
        victim = max(fp.expected_files(), key=lambda e: e.size)
        out = tmp_path / "out"
        # split into ranges, so that the file has a control file while it is fetched
        run = await run_export(settings_for(fp, out, concurrency=8))
    assert renamed
    assert run.exit_code == EXIT_OK, read_report(out)
    assert sha256_of(expected_path(out, victim).with_name(long_name)) == victim.sha256


async def test_temporary_files_are_hidden_from_readers_and_named_within_name_max(tmp_path: Path, make_fake) -> None:
    """A run stopped mid-file leaves its .part and control file where `pyarrow.dataset` (and
    `**/*.parquet`) never sees them, under names of fixed length."""
    from engine.layout import control_path, part_path
    from engine.output.control import write_control

    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=2000, seed=175))
    async with fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
    victim = fp.expected_files()[0]
    final = expected_path(out, victim)
    part = part_path(final)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(final.read_bytes()[:1000])
    write_control(final, victim.size, [[0, 1000]], [])
    for path in (part, control_path(final)):
        assert path.exists() and path.parent.name == STATE_DIR and len(path.name) < 64
    table = pads.dataset(out / victim.dataset_id, format="parquet").to_table()  # a .part would break it
    assert table.num_rows == sum(e.rows for e in fp.expected_files())


def _leftover_forms(final: Path) -> list[Path]:
    from engine.layout import control_path, part_path

    batch = final.parent.parent
    return [part_path(final), control_path(final), control_path(final).with_name(control_path(final).name + ".tmp"),
            final.with_name(final.name + ".part"), final.with_name(final.name + ".part.ctl"),
            final.with_name(final.name + ".part.ctl.tmp"), final.with_name(final.name + ".part.split"),
            batch / f"{SUCCESS}.tmp", batch / f"{MANIFEST}.tmp", batch.parent / "_LATEST.tmp",
            batch.parent.parent / "_report.json.tmp", batch.parent.parent / "report.json.tmp"]


async def test_verify_flags_every_leftover_temporary_file(tmp_path: Path, make_fake) -> None:
    """A leftover `.part`, `.ctl` or `.tmp`, in its place before this layout or now, is a problem
    `verify` names (before, only `*.part` was)."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=200, seed=176))
    async with fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
    assert verify_export(out).problems == []
    final = expected_path(out, fp.expected_files()[0])
    for leftover in _leftover_forms(final):
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"")
        problems = [str(p) for p in verify_export(out).problems]
        shown = leftover.relative_to(out).as_posix()
        assert any(p.startswith(shown + ":") for p in problems), (shown, problems)
        leftover.unlink()


async def test_a_part_left_beside_its_final_name_by_the_previous_version_resumes(tmp_path: Path, make_fake) -> None:
    """Compatibility: `<final>.part` and `<final>.part.ctl` beside the final name (the layout before)
    resume from exactly the ranges they hold, then leave nothing behind."""
    from engine.ranges import RangeSet
    from engine.validators import resume_windows

    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=30000, seed=177))
    out = tmp_path / "out"
    async with fp:
        first, second = sorted(fp.expected_files(), key=lambda e: e.name)
        for e in (first, second):
            expected_path(out, e).parent.mkdir(parents=True, exist_ok=True)
        # first: a contiguous prefix without control file; second: two ranges and a hole, with one
        src1, src2 = first.source_path.read_bytes(), second.source_path.read_bytes()
        prefix = len(src1) // 2
        expected_path(out, first).with_name(first.name + ".part").write_bytes(src1[:prefix])
        held = RangeSet([(0, len(src2) // 4), (len(src2) // 2, 3 * len(src2) // 4)])
        data = bytearray(len(src2) * 3 // 4)
        for a, b in held:
            data[a:b] = src2[a:b]
        final2 = expected_path(out, second)
        final2.with_name(second.name + ".part").write_bytes(bytes(data))
        state = {"v": 1, "size": second.size, "done": held.as_list(), "synced": held.as_list(), "boot": None}
        final2.with_name(second.name + ".part.ctl").write_text(json.dumps(state))
        run = await run_export(settings_for(fp, out))
    assert run.exit_code == EXIT_OK, read_report(out)
    assert_files_match(out, fp.expected_files())
    sent = fp.stats.bytes_by_file
    def confirmed(held: RangeSet, size: int) -> int:  # held bytes asked again to confirm them (validators)
        return sum(b - a for a, b in resume_windows(held, size))
    assert sent[f"{first.dataset_file_id}/{first.name}"] == len(src1) - prefix + confirmed(RangeSet([(0, prefix)]), len(src1))
    assert sent[f"{second.dataset_file_id}/{second.name}"] == len(src2) - held.total + confirmed(held, len(src2))
    assert not [p for p in out.rglob("*") if p.is_file() and p.name.endswith((".part", ".ctl", ".tmp"))]


async def test_a_committed_name_plus_part_is_never_taken_for_a_part_of_the_previous_version(tmp_path: Path, make_fake) -> None:
    """`x.parquet.part` verified by an earlier run is that file, not a leftover `.part` of
    `x.parquet`: a rerun that must fetch `x.parquet` again neither builds on it nor moves it.
    Before, it did both (the smaller file starts like parquet: a prefix that fits)."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=3000, seed=178))
    async with fp:
        small, large = sorted(fp.expected_files(), key=lambda e: e.size)
    assert small.size < large.size
    rename_files(fp, small.dataset_file_id, {large.name: "x.parquet", small.name: "x.parquet.part"})
    async with fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
        folder = expected_path(out, small).parent
        (folder / "x.parquet").unlink()
        run = await run_export(settings_for(fp, out))
    assert run.exit_code == EXIT_OK, read_report(out)
    assert sha256_of(folder / "x.parquet") == large.sha256
    assert sha256_of(folder / "x.parquet.part") == small.sha256
    assert fp.stats.bytes_by_file[f"{small.dataset_file_id}/{large.name}"] == 2 * large.size  # fetched whole, twice


async def test_a_finished_run_leaves_no_hidden_folder_beside_the_data(tmp_path: Path, make_fake) -> None:
    fp = make_fake(FakeConfig.small(n_datasets=2, files=3, rows=2000, seed=179))
    async with fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out, concurrency=8))).exit_code == EXIT_OK
    assert [p.relative_to(out).as_posix() for p in out.rglob(STATE_DIR)] == [STATE_DIR]  # the journal's only


def test_status_never_calls_a_batch_the_report_says_failed_done(tmp_path: Path) -> None:
    """The folder of a batch may still look complete (`_SUCCESS`, an ok manifest: a finalize cut
    short, or files removed since): the report's failure wins."""
    out = tmp_path / "out"
    folder = out / "ds" / "b1"
    folder.mkdir(parents=True)
    (folder / SUCCESS).write_text("")
    (folder / SUMS).write_text("")
    (folder / MANIFEST).write_text(json.dumps({"status": "ok", "files": [], "errors": []}))
    batch = {"batch_id": "b1", "status": "failed", "files": 0, "errors": ["x: refused: one of ours"]}
    (out / "report.json").write_text(json.dumps({"status": "failed", "started_at": "t", "datasets": [
        {"dataset_id": "ds", "source": "dataset", "status": "failed", "batches": [batch]}]}))
    (row,) = export_status(out).rows
    assert (row.state, row.note) == (FAILED, "x: refused: one of ours")
    batch["status"] = "ok"
    (out / "report.json").write_text(json.dumps({"status": "ok", "started_at": "t", "datasets": [
        {"dataset_id": "ds", "source": "dataset", "status": "ok", "batches": [batch]}]}))
    assert export_status(out).rows[0].state == DONE
    (folder / SUCCESS).unlink()
    (folder / SUCCESS).mkdir()  # a folder of that name (a dataSetFile listed so) is no marker
    assert export_status(out).rows[0].state != DONE
