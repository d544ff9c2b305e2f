"""Where a DLZ run's files go, and what of its folder's listing is believed: `layout = "hive"`
honoured like for a Data Access batch; a file below a subfolder of the run's `exportTime=` folder
kept there (never on top of a file of the same name above it); a listing that names a blob twice,
or a blob outside the run's folder, refused (the entry fails alone, nothing of it downloaded)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.dataset as pads
from conftest import assert_files_match, read_report, run_export, settings_for, sha256_of, with_data_dir
from dlz_support import dlz_expected, dlz_fake, with_via
from test_dlz_failures import outcome, start_run_elsewhere

from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.fake.blob import FakeBlobs
from engine.fake.data import ExpectedFile
from engine.layout import HIVE, SUCCESS, batch_folder, file_path
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.output.status import export_status
from engine.output.verify import verify_export


def org(n: int = 2) -> FakeConfig:
    return FakeConfig(seed=232, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=150) for _ in range(n)])


def hive_path(out: Path, e: ExpectedFile) -> Path:
    return out / file_path(e.dataset_id, e.batch_id, e.dataset_file_id, e.name, HIVE)


async def test_a_hive_export_puts_dlz_runs_in_hive_folders(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    async with dlz_fake(org(), azurite, fake_data_root) as fp:
        da, dlz = fp.dataset_ids
        run = await run_export(with_via(settings_for(fp, tmp_path, layout="hive"), {dlz: "dlz"}))
        assert run.exit_code == EXIT_OK, [(d.dataset_id, d.error, [b.errors for b in d.batches]) for d in run.datasets]

        expected = [e for e in fp.expected_files() if e.dataset_id == da] + dlz_expected(fp, dlz)
        for e in expected:  # dataset=…/batch=…/{dataSetFileId or exportTime=…}/{part}, byte-identical
            assert sha256_of(hive_path(tmp_path, e)) == e.sha256, hive_path(tmp_path, e)
        assert not (tmp_path / da).exists() and not (tmp_path / dlz).exists()  # nothing in the plain tree
        for e in expected:
            assert (tmp_path / batch_folder(e.dataset_id, e.batch_id, HIVE) / SUCCESS).is_file()
        assert read_report(tmp_path)["layout"] == "hive"
        status = export_status(tmp_path)
        assert status.complete and status.layout == "hive"
        checked = verify_export(tmp_path)
        assert not checked.problems and checked.batches == 2

        # The run's own `exportTime=…` folder is key=value too: readers infer it as a column (README).
        (dlz_file,) = {e.dataset_file_id for e in dlz_expected(fp, dlz)}
        columns = pads.dataset(tmp_path / f"dataset={dlz}", partitioning="hive").schema.names
        assert {"batch", "exportTime"} <= set(columns) and dlz_file.startswith("exportTime=")


async def test_a_file_in_a_subfolder_of_the_run_folder_keeps_its_place(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    """`…/exportTime=X/sub/exportTime=X/p.parquet` beside `…/exportTime=X/p.parquet`: two files,
    two places (before, both went to `exportTime=X/p.parquet`)."""
    async with dlz_fake(org(1), azurite, fake_data_root) as fp:
        (dlz,) = fp.dataset_ids
        await start_run_elsewhere(fp, dlz)  # the run the export will reuse, written before it lists
        (theirs,) = fp.dlz_runs(dlz)
        name = theirs.files[0][0]
        stamp = theirs.folder.rstrip("/").rsplit("/", 1)[-1]
        nested = f"{theirs.folder}sub/{stamp}/{name.rsplit('/', 1)[-1]}"
        other, _, rows = theirs.files[1]
        data = theirs.written[other].read_bytes()  # another file's bytes, under the first one's name
        await fp.blobs.replace(nested, data)
        theirs.files.append((nested, len(data), rows))  # the run's counts include it: the listing is honest

        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}))
        assert run.exit_code == EXIT_OK, [(d.dataset_id, d.error, [b.errors for b in d.batches]) for d in run.datasets]
        *above, _ = dlz_expected(fp, dlz)  # the last: the nested file, which dlz_expected would put on top
        below = ExpectedFile(dlz, theirs.id, stamp, f"sub/{stamp}/{name.rsplit('/', 1)[-1]}", len(data),
                             hashlib.sha256(data).hexdigest(), rows, Path(nested))
        assert_files_match(tmp_path, [*above, below])


class LyingBlobs(FakeBlobs):
    """The fake's Blob origin, listing more after some blobs than is under the asked prefix."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.also: dict[str, list[str]] = {}  # a listed name -> the names listed right after it

    def _entry(self, name: str) -> str:
        return "".join(super(LyingBlobs, self)._entry(n) for n in [name, *self.also.get(name, [])])


def lying_fake(fake_data_root: Path) -> FakePlatform:
    return FakePlatform(with_data_dir(org(), fake_data_root), host="127.0.0.1", port=0, blobs=LyingBlobs(232))


async def test_a_listing_naming_a_blob_twice_fails_the_entry_alone(tmp_path: Path, fake_data_root: Path) -> None:
    async with lying_fake(fake_data_root) as fp:
        da, dlz = fp.dataset_ids
        await start_run_elsewhere(fp, dlz)
        (theirs,) = fp.dlz_runs(dlz)
        first = theirs.files[0]
        fp.blobs.also[first[0]] = [first[0]]
        theirs.files.append(first)  # the run's counts agree with the listing: only the repeat gives it away

        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}))
        assert run.exit_code == EXIT_FAILED and outcome(run, da).status == "ok"
        (batch,) = outcome(run, dlz).batches
        assert batch.status == "failed"
        errors = " ".join(str(e) for e in batch.errors)
        assert f"lists {first[0]!r} twice" in errors and "which entry is right cannot be known" in errors, errors
        assert not list((tmp_path / dlz).rglob("*.parquet"))  # nothing of the run downloaded
        assert_files_match(tmp_path, [e for e in fp.expected_files() if e.dataset_id == da])


async def test_a_listing_naming_a_blob_outside_the_run_folder_fails_the_entry_alone(tmp_path: Path,
                                                                                   fake_data_root: Path) -> None:
    """Another dataset's export (same id length, same minute) listed as if it were under this one's prefix."""
    async with lying_fake(fake_data_root) as fp:
        da, dlz = fp.dataset_ids
        await start_run_elsewhere(fp, dlz)
        (theirs,) = fp.dlz_runs(dlz)
        name = theirs.files[0][0]
        foreign = name.replace(dlz, da).replace("part-00000", "part-09999")
        data = theirs.written[theirs.files[1][0]].read_bytes()  # a good parquet file: only where it is gives it away
        await fp.blobs.replace(foreign, data)
        fp.blobs.also[name] = [foreign]
        theirs.files.append((foreign, len(data), theirs.files[1][2]))

        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}))
        assert run.exit_code == EXIT_FAILED and outcome(run, da).status == "ok"
        error = outcome(run, dlz).error
        assert error is not None and error.kind == "listing_untrusted", error
        assert f"holds the blob {foreign!r}, outside it" in error
        assert not list((tmp_path / dlz).rglob("*.parquet"))
        assert {d["dataset_id"]: d["status"] for d in read_report(tmp_path)["datasets"]} == {da: "ok", dlz: "failed"}
