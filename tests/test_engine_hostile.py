"""Server-sent names that would escape the output directory are refused and reported."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from conftest import assert_files_match, files_under, read_manifest, read_report, run_export, settings_for

from engine.fake import DatasetSpec, FakeConfig
from engine.fake.data import HOSTILE_NAMES
from engine.layout import SUCCESS
from engine.outcome import EXIT_FAILED


async def test_hostile_names_refused_others_exported(tmp_path: Path, make_fake) -> None:
    cfg = FakeConfig(seed=61, datasets=[
        DatasetSpec(hostile_names=True, files_per_dataset_file=6, rows_per_file=20),
        DatasetSpec(files_per_dataset_file=2, rows_per_file=20),
    ])
    async with make_fake(cfg) as fp:
        # deep enough that '../../evil.parquet' from a dataSetFile folder would still land inside tmp_path
        out = tmp_path / "a" / "b" / "c" / "out"
        before = files_under(tmp_path)
        run = await run_export(settings_for(fp, out))

        hostile_ds, good_ds = fp.dataset_ids
        expected = fp.expected_files()
        hostile = [e for e in expected if e.name in HOSTILE_NAMES]
        safe = [e for e in expected if e.name not in HOSTILE_NAMES]
        assert len(hostile) == len(HOSTILE_NAMES) and any(e.dataset_id == hostile_ds for e in safe)

        assert run.exit_code == EXIT_FAILED
        # nothing written outside out_dir, nothing with an unsafe name anywhere
        new = files_under(tmp_path) - before
        assert new and all(out in p.parents for p in new), sorted(map(str, new - {p for p in new if out in p.parents}))
        assert not any("evil" in p.name for p in files_under(tmp_path))
        assert not Path("/etc/evil-absolute.parquet").exists()
        for p in out.rglob("*"):
            assert not any(unicodedata.category(ch) == "Cc" for ch in p.name), repr(p.name)
            assert "\\" not in p.name
        # the safe files (also those of the hostile batch) are exported byte-identical
        assert_files_match(out, safe)

        folder = out / hostile_ds / fp.latest_batch(hostile_ds).data_id
        assert not (folder / SUCCESS).exists()
        manifest = read_manifest(folder)
        assert manifest["status"] == "failed"
        for name in HOSTILE_NAMES:
            assert any(name in err for err in manifest["errors"]), (name, manifest["errors"])

        report = read_report(out)
        by_id = {d["dataset_id"]: d for d in report["datasets"]}
        assert by_id[hostile_ds]["status"] == "failed" and by_id[good_ds]["status"] == "ok"
        b = by_id[hostile_ds]["batches"][0]
        assert b["files_failed"] == len(HOSTILE_NAMES) and b["files"] == len(safe) - 2
        assert all(any("refused" in err and name in err for err in b["errors"]) for name in HOSTILE_NAMES)
        assert report["totals"]["files_failed"] == len(HOSTILE_NAMES)
        good_folder = out / good_ds / fp.latest_batch(good_ds).data_id
        assert (good_folder / SUCCESS).exists()
        # no download request was made for a refused name
        assert not any(k.split("/", 1)[1] in HOSTILE_NAMES for k in fp.stats.bytes_by_file)


async def test_symlinked_folder_escaping_out_dir_fails_the_files_not_the_run(tmp_path: Path, make_fake) -> None:
    """A symlink planted inside out_dir must not make the engine write outside it, nor crash it."""
    async with make_fake(FakeConfig.small(n_datasets=2, files=2, rows=20, seed=62)) as fp:
        out = tmp_path / "out"
        outside = tmp_path / "outside"
        outside.mkdir()
        out.mkdir()
        bad_ds, good_ds = fp.dataset_ids
        (out / bad_ds).symlink_to(outside, target_is_directory=True)

        crash: BaseException | None = None
        try:
            run = await run_export(settings_for(fp, out))
        except BaseException as exc:  # noqa: BLE001 - checked below, after the containment check
            crash = exc

        written_outside = sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*") if p.is_file())
        assert written_outside == [], f"written outside out_dir: {written_outside}"
        assert crash is None, f"the run crashed: {crash!r}"
        assert run.exit_code == EXIT_FAILED
        report = read_report(out)
        by_id = {d["dataset_id"]: d for d in report["datasets"]}
        assert by_id[bad_ds]["status"] == "failed" and by_id[good_ds]["status"] == "ok"
        assert_files_match(out, [e for e in fp.expected_files() if e.dataset_id == good_ds])


async def test_unwritable_file_path_fails_the_file_not_the_run(tmp_path: Path, make_fake) -> None:
    async with make_fake(FakeConfig.small(n_datasets=2, files=2, rows=20, seed=63)) as fp:
        out = tmp_path / "out"
        bad_ds, good_ds = fp.dataset_ids
        victim = next(e for e in fp.expected_files() if e.dataset_id == bad_ds)
        blocker = out / victim.dataset_id / victim.batch_id / victim.dataset_file_id
        blocker.parent.mkdir(parents=True)
        blocker.write_text("not a folder")

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_FAILED
        by_id = {d["dataset_id"]: d for d in read_report(out)["datasets"]}
        assert by_id[bad_ds]["status"] == "failed" and by_id[good_ds]["status"] == "ok"
        assert_files_match(out, [e for e in fp.expected_files() if e.dataset_id == good_ds])
