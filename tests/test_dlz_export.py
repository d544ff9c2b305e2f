"""Issue #23: one export mixing Data Access and DLZ entries, the DLZ served by Azurite (a real
Blob server): byte-identical output with every check passing, the SAS kept a secret, and a rerun
that reuses the run and fetches nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import assert_files_match, files_under, read_manifest, read_report, run_export, settings_for, sha256sum_check
from dlz_support import dlz_expected, dlz_fake, with_via

from engine.fake import DatasetSpec, FakeConfig
from engine.layout import SUCCESS
from engine.outcome import EXIT_OK
from engine.output.status import export_status
from engine.output.verify import verify_export


def mixed_config() -> FakeConfig:
    return FakeConfig(seed=23, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=300) for _ in range(3)])


async def test_mixed_export_is_byte_identical_and_checked(tmp_path: Path, azurite, fake_data_root: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with dlz_fake(mixed_config(), azurite, fake_data_root) as fp:
        da, dlz_a, dlz_b = fp.dataset_ids
        settings = with_via(settings_for(fp, tmp_path), {dlz_a: "dlz", dlz_b: "dlz"})
        run = await run_export(settings)
        assert (run.exit_code, run.status) == (EXIT_OK, "ok"), [(d.dataset_id, d.error, [b.errors for b in d.batches])
                                                                 for d in run.datasets]

        expected_dlz = dlz_expected(fp, dlz_a) + dlz_expected(fp, dlz_b)
        assert all(e.name.endswith(".gz.parquet") for e in expected_dlz)  # GZIP-codec parquet, as Adobe writes it
        assert_files_match(tmp_path, [e for e in fp.expected_files() if e.dataset_id == da] + expected_dlz)
        for dataset in (da, dlz_a, dlz_b):
            (batch,) = [b for d in run.datasets if d.dataset_id == dataset for b in d.batches]
            folder = tmp_path / dataset / batch.batch.batch_id
            assert (folder / SUCCESS).is_file()
            assert sha256sum_check(folder).returncode == 0
            manifest = read_manifest(folder)
            assert manifest["records_found"] == manifest["records_expected"] > 0  # outputRecordCount, from the parquet rows
        checked = verify_export(tmp_path)
        assert not checked.problems and checked.batches == 3
        assert export_status(tmp_path).complete
        assert {d["dataset_id"]: d["status"] for d in read_report(tmp_path)["datasets"]} == {da: "ok", dlz_a: "ok", dlz_b: "ok"}

        # One dataflow per DLZ dataset, one ad hoc run each; the credentials never crossed over.
        assert len(fp.dlz_flows()) == 2 and fp.adhoc_requests == 2
        assert not fp.gateway_saw_sas
        sas = fp.sas_issued[0]
        signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
        text = "\n".join(r.getMessage() + json.dumps(r.msg if isinstance(r.msg, dict) else {}, default=str)
                         for r in caplog.records)
        written = "".join(p.read_text(errors="replace") for p in files_under(tmp_path) if p.suffix != ".parquet")
        for where in (text, written):
            assert signature not in where and sas not in where

        # A rerun: the run is younger than reuse_run_within, so the same files; nothing fetched, nothing started.
        again = await run_export(settings)
        assert again.exit_code == EXIT_OK
        assert again.totals["bytes_fetched"] == 0 and again.totals["files_reused"] == again.totals["files"]
        assert len(fp.dlz_flows()) == 2 and fp.adhoc_requests == 2


@pytest.mark.parametrize("reuse", ["1s", None])
async def test_an_old_run_is_not_reused(tmp_path: Path, azurite, fake_data_root: Path, reuse: str | None) -> None:
    """reuse_run_within: a run older than it starts a new ad hoc run (into a new folder); the default (24h) reuses it."""

    async with dlz_fake(mixed_config(), azurite, fake_data_root) as fp:
        dataset = fp.dataset_ids[1]
        extra = {"reuse_run_within": reuse} if reuse else {}
        settings = with_via(settings_for(fp, tmp_path, [dataset]), {dataset: "dlz"}, **extra)
        assert (await run_export(settings)).exit_code == EXIT_OK
        for run in fp.dlz_runs():  # the run was made long ago
            run.created_ms -= 2_000 if reuse else 0
        again = await run_export(settings)
        assert again.exit_code == EXIT_OK
        assert fp.adhoc_requests == (2 if reuse else 1)
        assert len({b.batch.batch_id for d in again.datasets for b in d.batches}) == 1
        assert_files_match(tmp_path, dlz_expected(fp, dataset))


async def test_gateway_credentials_never_reach_the_blob_origin_nor_the_sas_the_gateway(tmp_path: Path, make_fake) -> None:
    """Against the fake's own Blob origin (what `demo` uses), which records the headers it gets."""
    async with make_fake(mixed_config()) as fp:
        da, dlz_a, _ = fp.dataset_ids
        run = await run_export(with_via(settings_for(fp, tmp_path, [da, dlz_a]), {dlz_a: "dlz"}))
        assert run.exit_code == EXIT_OK
        assert_files_match(tmp_path, [e for e in fp.expected_files() if e.dataset_id == da] + fp.dlz_expected_files())
        assert fp.blobs.requests >= 1 + len(fp.dlz_expected_files())  # the listing and every file came from there
        assert not fp.blobs.saw_gateway_credentials  # no Authorization, no x-api-key
        assert not fp.gateway_saw_sas and fp.sas_issued
