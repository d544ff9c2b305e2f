"""Output that data tools read as it is: pyarrow.dataset and DuckDB over a dataset folder, only the
newest batch through `_LATEST`, and exports made with the old `SHA256SUMS` name still read."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from conftest import assert_files_match, journal_path, read_report, run_cli, run_export, settings_for, sha256sum_check, with_data_dir

from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.layout import LATEST, OLD_SUMS, REPORT, SUMS, parse_latest, parse_sums, read_latest, read_sums
from engine.outcome import EXIT_OK

OLD_REPORT = "report.json"  # the run report's name before _report.json (spelled out: this file runs against both)


def rows_of(batch) -> int:
    return sum(p.rows for _, p in batch.parts if not p.is_marker)


def count_rows(glob: str) -> int:
    with duckdb.connect() as con:
        return con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]


def successes(fp, ds: str) -> list[Any]:
    """The dataset's successful batches, oldest first."""
    return sorted((b for b in fp.model.datasets[ds].batches if b.status == "success"), key=lambda b: b.created)


@dataclass
class TwoBatches:
    fp: Any
    out: Path
    ds: str  # exported twice: the older batch (pinned) and then the latest


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory: pytest.TempPathFactory, fake_data_root: Path):
    """Dataset A exported as it was (older batch pinned), then as it is now (latest); B once."""
    cfg = with_data_dir(FakeConfig(seed=77, datasets=[
        DatasetSpec(files_per_dataset_file=3, rows_per_file=700, old_batch_rows=90, success_marker=True),
        DatasetSpec(files_per_dataset_file=2, rows_per_file=500)]), fake_data_root)
    fp = FakePlatform.run_in_thread(cfg)
    try:
        out = tmp_path_factory.mktemp("layout") / "out"
        a = fp.dataset_ids[0]
        older = successes(fp, a)[0]
        pinned = settings_for(fp, out, datasets=[a])
        pinned.datasets[0].batch = older.key
        assert anyio.run(run_export, pinned).exit_code == EXIT_OK
        assert anyio.run(run_export, settings_for(fp, out)).exit_code == EXIT_OK
        yield TwoBatches(fp, out, a)
    finally:
        fp.stop()


def test_pyarrow_dataset_reads_a_dataset_folder_with_exact_rows(two_batches: TwoBatches) -> None:
    fp, out, ds = two_batches.fp, two_batches.out, two_batches.ds
    older, latest = successes(fp, ds)[0], fp.latest_batch(ds)
    assert older.key != latest.key and rows_of(older) != rows_of(latest)
    table = pads.dataset(out / ds, format="parquet").to_table()  # skips _SHA256SUMS, _manifest.json, _SUCCESS, _LATEST
    assert table.num_rows == rows_of(older) + rows_of(latest)
    sources = [pq.read_table(p) for b in (older, latest) for _, p in ((d, p.path) for d, p in b.parts if not p.is_marker)]
    assert sorted(table.column("ecid").to_pylist()) == sorted(v for t in sources for v in t.column("ecid").to_pylist())


def test_duckdb_reads_a_dataset_folder_with_exact_rows(two_batches: TwoBatches) -> None:
    fp, out = two_batches.fp, two_batches.out
    for ds in fp.dataset_ids:
        want = sum(rows_of(b) for b in successes(fp, ds) if (out / ds / b.data_id).is_dir())
        got = count_rows(f"{out}/{ds}/**/*.parquet")
        assert got == want, ds


def test_latest_pointer_reads_only_the_newest_batch(two_batches: TwoBatches) -> None:
    fp, out, ds = two_batches.fp, two_batches.out, two_batches.ds
    latest = fp.latest_batch(ds)
    assert (out / ds / LATEST).read_text() == f"{latest.data_id}\n"
    newest = out / ds / read_latest(out / ds)
    assert pads.dataset(newest, format="parquet").to_table().num_rows == rows_of(latest)
    got = count_rows(f"{newest}/**/*.parquet")
    assert got == rows_of(latest)


def test_only_data_files_lack_a_reader_skipped_prefix(two_batches: TwoBatches) -> None:
    """The Hadoop/Spark convention: every name a reader must not read starts with _ or ."""
    for path in two_batches.out.rglob("*"):
        rel = path.relative_to(two_batches.out)
        if path.is_file() and len(rel.parts) > 1 and not path.name.endswith(".parquet"):
            assert any(part.startswith(("_", ".")) for part in rel.parts), rel


def test_checksum_list_works_with_sha256sum(two_batches: TwoBatches) -> None:
    for ds in two_batches.fp.dataset_ids:
        folder = two_batches.out / ds / read_latest(two_batches.out / ds)
        assert (folder / SUMS).is_file() and not (folder / OLD_SUMS).exists()
        assert sha256sum_check(folder).returncode == 0


async def test_pointer_stays_on_the_newest_batch_when_an_older_one_is_exported_later(tmp_path: Path, make_fake) -> None:
    async with make_fake(FakeConfig(seed=78, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=50)])) as fp:
        ds = fp.dataset_ids[0]
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
        backfill = settings_for(fp, out)
        backfill.datasets[0].batch = successes(fp, ds)[0].key
        assert (await run_export(backfill)).exit_code == EXIT_OK
        assert read_latest(out / ds) == fp.latest_batch(ds).data_id  # by the Catalog's created time, not by run order
        # the newest batch stops being complete: the pointer falls back to the older complete one
        shutil.rmtree(out / ds / fp.latest_batch(ds).data_id)
        (out / ds / fp.latest_batch(ds).data_id).mkdir()
        from engine.output.localfiles import LocalFiles
        from engine.output.report import update_latest

        update_latest(LocalFiles(out), ds)  # without a batch: every complete batch is compared
        assert read_latest(out / ds) == successes(fp, ds)[0].data_id


# ----------------------------------------------------------------------------- older exports


def _to_old_layout(out: Path) -> int:
    """What an export made before the renames looks like: SHA256SUMS, report.json, no _LATEST."""
    n = 0
    if (out / REPORT).exists():
        (out / REPORT).rename(out / OLD_REPORT)
    for sums in out.rglob(SUMS):
        sums.rename(sums.with_name(OLD_SUMS))
        n += 1
    for pointer in out.rglob(LATEST):
        pointer.unlink()
    return n


def test_verify_and_status_read_an_export_made_before(two_batches: TwoBatches, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(two_batches.out, old)
    assert _to_old_layout(old) == 3
    verify = run_cli("verify", str(old), cwd=tmp_path)
    assert verify.returncode == 0 and verify.stdout.startswith("OK: 3 batches"), verify.stdout
    status = run_cli("status", str(old), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stdout
    assert json.loads(status.stdout)["reports"] == [OLD_REPORT]
    folder = next(old.rglob(OLD_SUMS)).parent
    assert read_sums(folder) and read_sums(folder) == {
        line.split("  ")[1]: line.split("  ")[0] for line in (folder / OLD_SUMS).read_text().splitlines()}


async def test_rerun_over_an_export_made_before_fetches_nothing_and_renames(tmp_path: Path, make_fake) -> None:
    async with make_fake(FakeConfig(seed=79, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=60)])) as fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
        _to_old_layout(out)
        journal_path(out).unlink()  # only the old checksum list vouches for the files now
        fp.reset_stats()

        run = await run_export(settings_for(fp, out))

        assert run.exit_code == EXIT_OK
        assert fp.stats.requests["export.download"] == 0 and run.totals["files_reused"] == 3
        assert_files_match(out, fp.expected_files())
        assert not list(out.rglob(OLD_SUMS)) and len(list(out.rglob(SUMS))) == 1
        assert not (out / OLD_REPORT).exists() and read_report(out)["status"] == "ok"  # readers took report.json for data
        ds = fp.dataset_ids[0]
        assert read_latest(out / ds) == fp.latest_batch(ds).data_id
        assert pads.dataset(out / ds, format="parquet").to_table().num_rows == rows_of(fp.latest_batch(ds))


# ----------------------------------------------------------------------------- status


def test_status_of_a_complete_unsharded_export(two_batches: TwoBatches, tmp_path: Path) -> None:
    p = run_cli("status", str(two_batches.out), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    body = json.loads(p.stdout)
    assert body["complete"] and body["shards"] is None and body["reports"] == ["_report.json"]
    assert [(r["dataset"], r["state"]) for r in body["rows"]] == [(d, "done") for d in two_batches.fp.dataset_ids]


def test_status_says_missing_when_a_batch_lost_its_success_marker(two_batches: TwoBatches, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(two_batches.out, out)
    ds = two_batches.ds
    (out / ds / read_latest(out / ds) / "_SUCCESS").unlink()
    p = run_cli("status", str(out), cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    row = next(ln for ln in p.stdout.splitlines() if ln.split()[1:2] == [ds])
    assert row.split()[3] == "missing", row
    assert p.stdout.splitlines()[-1].startswith("INCOMPLETE: 1 done, 0 failed, 1 missing")


async def test_status_says_failed_for_an_unknown_dataset(tmp_path: Path, make_fake) -> None:
    async with make_fake(FakeConfig(seed=80, datasets=[DatasetSpec(files_per_dataset_file=1, rows_per_file=20)])) as fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, datasets=[fp.dataset_ids[0], "0123456789abcdef01234567"]))
        assert run.exit_code == 1
    p = await anyio.to_thread.run_sync(lambda: run_cli("status", str(out), "--json", cwd=tmp_path))
    assert p.returncode == 1
    states = {r["dataset"]: r["state"] for r in json.loads(p.stdout)["rows"]}
    assert states == {fp.dataset_ids[0]: "done", "0123456789abcdef01234567": "failed"}


def test_status_without_any_report_is_never_complete(two_batches: TwoBatches, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(two_batches.out, out)
    (out / "_report.json").unlink()
    p = run_cli("status", str(out), cwd=tmp_path)
    assert p.returncode == 1 and "no run report" in p.stdout, p.stdout


def test_status_of_a_folder_that_is_no_export_is_a_usage_error(tmp_path: Path) -> None:
    p = run_cli("status", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "report" in p.stderr and "Traceback" not in p.stderr


def test_a_pointer_or_checksum_line_that_names_nothing_beside_it_is_refused() -> None:
    """One reader for `_LATEST` and for checksum lines (resume, verify and the bucket share it)."""
    assert parse_latest("b1\n") == "b1"
    for bad in ("", "\n", "..", ".", "../other/b1", "a/b"):
        assert parse_latest(bad) is None, bad
    good = "a" * 64
    assert parse_sums(f"{good}  x/1.parquet\nabc  x/2.parquet\n{good} x/3.parquet\n") == {"x/1.parquet": good}


@pytest.mark.parametrize("pointer", ["../../elsewhere", ""])
def test_verify_reports_a_pointer_that_leads_outside_its_dataset(two_batches: TwoBatches, tmp_path: Path, pointer: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(two_batches.out, copy)
    (copy / two_batches.ds / LATEST).write_text(pointer + "\n")
    verify = run_cli("verify", str(copy), cwd=tmp_path)
    assert verify.returncode != 0 and f"{two_batches.ds}/{LATEST}: unreadable pointer" in verify.stdout, verify.stdout
