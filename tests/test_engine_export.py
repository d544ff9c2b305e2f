"""End-to-end export against the fake platform: every listing/Catalog variant, layout, manifests, report."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from conftest import (
    assert_files_match,
    read_manifest,
    read_report,
    run_export,
    settings_for,
    sha256sum_check,
)

from engine.fake import DatasetSpec, FakeConfig
from engine.fake.data import ExpectedFile
from engine.layout import SUCCESS
from engine.outcome import EXIT_FAILED, EXIT_OK

# One org holding every variant the fake offers (tiny parquet, small pages).
VARIANTS = {
    "plain": DatasetSpec(files_per_dataset_file=3, rows_per_file=40, success_marker=True, batches=3),
    "active_old_metrics_paged": DatasetSpec(files_per_dataset_file=5, rows_per_file=30, page_size=2,
                                            length_as="number", metrics_form="old", status_word="active"),
    "related_bare_array": DatasetSpec(batch_key="related", related_miss="empty", dataset_files=2,
                                      files_per_dataset_file=2, rows_per_file=25, listing_shape="bare_array",
                                      length_as="number"),
    "related_404": DatasetSpec(batch_key="related", related_miss="404", files_per_dataset_file=2, rows_per_file=25),
    "nested": DatasetSpec(nested=True, nested_children=2, files_per_dataset_file=2, rows_per_file=20, page_size=1,
                          success_marker=True),
}


@dataclass
class Exported:
    fp: Any
    out: Path
    run: Any
    ids: dict[str, str]  # variant name -> dataset id
    expected: list[ExpectedFile]

    def batch_folder(self, variant: str) -> Path:
        ds = self.ids[variant]
        return self.out / ds / self.fp.latest_batch(ds).data_id

    def expected_of(self, variant: str) -> list[ExpectedFile]:
        return [e for e in self.expected if e.dataset_id == self.ids[variant]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, fake_data_root: Path) -> Exported:
    from conftest import with_data_dir

    from engine.fake import FakePlatform

    cfg = with_data_dir(FakeConfig(seed=41, page_size=2, datasets=list(VARIANTS.values())), fake_data_root)
    fp = FakePlatform.run_in_thread(cfg)
    try:
        out = tmp_path_factory.mktemp("variants") / "out"
        run = anyio.run(run_export, settings_for(fp, out, concurrency=3))
        ids = dict(zip(VARIANTS, fp.dataset_ids, strict=True))
        yield Exported(fp, out, run, ids, fp.expected_files())
    finally:
        fp.stop()


def test_run_succeeds(exported: Exported) -> None:
    assert exported.run.exit_code == EXIT_OK, read_report(exported.out)
    assert exported.run.status == "ok"


def test_every_expected_file_is_byte_identical_in_the_documented_layout(exported: Exported) -> None:
    assert_files_match(exported.out, exported.expected)
    # the fake's expectation covers every variant (guards against an empty comparison)
    assert {e.dataset_id for e in exported.expected} == set(exported.ids.values())


def test_sha256sum_c_passes_for_every_batch(exported: Exported) -> None:
    for variant in VARIANTS:
        folder = exported.batch_folder(variant)
        res = sha256sum_check(folder)
        assert res.returncode == 0, f"{variant}: {res.stdout}{res.stderr}"
        listed = sorted(line.split("  ", 1)[1] for line in (folder / "_SHA256SUMS").read_text().splitlines())
        want = sorted(f"{e.dataset_file_id}/{e.name}" for e in exported.expected_of(variant))
        assert listed == want


def test_manifest_rows_add_up_to_the_catalog_record_count_and_success_marker(exported: Exported) -> None:
    for variant in VARIANTS:
        folder = exported.batch_folder(variant)
        m = read_manifest(folder)
        catalog_rows = sum(e.rows for e in exported.expected_of(variant))
        assert m["status"] == "ok" and m["errors"] == []
        assert sum(f["rows"] for f in m["files"]) == catalog_rows
        assert m["records_expected"] == catalog_rows == m["records_found"]
        by_path = {f["path"]: f for f in m["files"]}
        for e in exported.expected_of(variant):
            f = by_path[f"{e.dataset_file_id}/{e.name}"]
            assert (f["size"], f["sha256"], f["rows"]) == (e.size, e.sha256, e.rows)
        assert (folder / SUCCESS).is_file() and (folder / SUCCESS).stat().st_size == 0


def test_report_json_totals(exported: Exported) -> None:
    report = read_report(exported.out)
    t = report["totals"]
    n = len(exported.expected)
    total_bytes = sum(e.size for e in exported.expected)
    assert report["exit_code"] == EXIT_OK and report["status"] == "ok" and report["errors"] == []
    assert t["datasets"] == t["batches"] == len(VARIANTS)
    assert (t["files"], t["files_downloaded"], t["files_reused"], t["files_failed"]) == (n, n, 0, 0)
    assert t["bytes"] == total_bytes
    assert t["bytes_fetched"] == total_bytes == exported.fp.stats.bytes_sent  # no fault: each byte once
    for d in report["datasets"]:
        assert d["status"] == "ok" and d["error"] is None and len(d["batches"]) == 1
        b = d["batches"][0]
        exp = [e for e in exported.expected if e.dataset_id == d["dataset_id"]]
        assert b["batch_id"] == exp[0].batch_id
        assert (b["files"], b["files_failed"], b["bytes"]) == (len(exp), 0, sum(e.size for e in exp))
        assert b["records_expected"] == b["records_found"] == sum(e.rows for e in exp)


def test_latest_successful_batch_is_chosen(exported: Exported) -> None:
    fp = exported.fp
    for variant, ds in exported.ids.items():
        batches = fp.model.datasets[ds].batches
        latest = fp.latest_batch(ds)
        # the fixture really offers older successes and newer failed/processing batches
        assert sum(b.status in ("success", "active") for b in batches) >= 2
        assert {"failed", "processing"} <= {b.status for b in batches}
        assert max(batches, key=lambda b: b.created).status == "processing"
        # the one batch folder, and the _LATEST pointer (a reader-skipped name) naming it
        assert sorted(p.name for p in (exported.out / ds).iterdir()) == sorted([latest.data_id, "_LATEST"]), variant
        assert (exported.out / ds / "_LATEST").read_text() == latest.data_id + "\n"
        assert read_manifest(exported.batch_folder(variant))["batch"]["id"] == latest.key


def test_catalog_key_differs_from_data_batch_id(exported: Exported) -> None:
    for variant in ("related_bare_array", "related_404"):
        ds = exported.ids[variant]
        latest = exported.fp.latest_batch(ds)
        assert latest.key != latest.data_id
        assert exported.batch_folder(variant).name == latest.data_id
        assert not (exported.out / ds / latest.key).exists()
        m = read_manifest(exported.batch_folder(variant))
        assert m["batch_id"] == latest.data_id and m["batch"]["id"] == latest.key


def test_success_marker_entries_are_skipped_not_downloaded(exported: Exported) -> None:
    for variant in ("plain", "nested"):
        folder = exported.batch_folder(variant)
        m = read_manifest(folder)
        leaves = {e.dataset_file_id for e in exported.expected_of(variant)}
        assert sorted(m["skipped"]) == sorted(f"{leaf}/_SUCCESS" for leaf in leaves)
        assert not any(p.name == "_SUCCESS" for p in folder.rglob("*") if p.parent != folder)
        assert all("_SUCCESS" not in f["path"] for f in m["files"])
    assert exported.fp.stats.bytes_by_file and not any(k.endswith("/_SUCCESS") for k in exported.fp.stats.bytes_by_file)


def test_paged_and_nested_listings_were_followed(exported: Exported) -> None:
    # page size 2: plain (_SUCCESS + 3 parts) 2 pages, paged (5 parts) 3 pages; bare arrays 1 request
    # per dataSetFile (2); related_404 1 page; nested at page size 1: directory 2 pages + 2 leaves x 3 pages
    stats = exported.fp.stats.requests
    assert stats["export.listing"] == 2 + 3 + 2 + 1 + (2 + 2 * 3)
    nested = exported.expected_of("nested")
    assert len({e.dataset_file_id for e in nested}) == 2 and len(nested) == 4
    assert len(exported.expected_of("active_old_metrics_paged")) == 5


# ----------------------------------------------------------------------------- unknown dataset


async def test_unknown_dataset_fails_alone(tmp_path: Path, make_fake) -> None:
    async with make_fake(FakeConfig.small(n_datasets=2, files=2, rows=30, seed=43)) as fp:
        bogus = "ffffffffffffffffffffffff"
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, datasets=[fp.dataset_ids[0], bogus, fp.dataset_ids[1]]))
        assert run.exit_code == EXIT_FAILED
        report = read_report(out)
        assert report["exit_code"] == EXIT_FAILED and report["status"] == "failed"
        by_id = {d["dataset_id"]: d for d in report["datasets"]}
        assert by_id[bogus]["status"] == "failed" and bogus in by_id[bogus]["error"]
        assert "404" in by_id[bogus]["error"] or "not found" in by_id[bogus]["error"].lower()
        assert not (out / bogus).exists()
        for ds in fp.dataset_ids:
            assert by_id[ds]["status"] == "ok"
        assert_files_match(out, fp.expected_files())
        for ds in fp.dataset_ids:
            folder = out / ds / fp.latest_batch(ds).data_id
            assert (folder / SUCCESS).exists() and sha256sum_check(folder).returncode == 0


# ----------------------------------------------------------------------------- streaming


async def test_downloads_start_before_discovery_ends(tmp_path: Path, make_fake) -> None:
    """The last dataSetFile's listing is held back until a download request arrives: a pipeline
    gets past it, an engine that lists everything before downloading would wait out the timeout
    and fail. (Within one dataSetFile, files wait for its whole listing to hold up: issue #17.)"""
    cfg = FakeConfig(seed=44, datasets=[DatasetSpec(dataset_files=4, files_per_dataset_file=2, rows_per_file=20, page_size=2)])
    fp = make_fake(cfg)
    last_dsf = max(e.dataset_file_id for e in fp.expected_files())
    original = fp.h_files
    download_seen = asyncio.Event()
    events: list[str] = []

    async def h_files(request: web.Request) -> web.StreamResponse:
        if "path" in request.query:
            events.append("download")
            download_seen.set()
            return await original(request)
        resp = await original(request)
        last = request.match_info["id"] == last_dsf
        if last:
            try:
                await asyncio.wait_for(download_seen.wait(), timeout=5)
            except TimeoutError:
                events.append("timeout")
        events.append("last-listing" if last else "listing")  # recorded when the listing is released
        return resp

    fp.h_files = h_files  # routes are bound when the server starts
    async with fp:
        run = await run_export(settings_for(fp, tmp_path / "out", concurrency=2))
    assert run.exit_code == EXIT_OK
    assert "timeout" not in events, events
    assert events.index("download") < events.index("last-listing"), events
    assert events.count("listing") == 3 and events.count("download") == 8
    assert_files_match(tmp_path / "out", fp.expected_files())


async def test_many_datasets_are_discovered_concurrently_with_downloads(tmp_path: Path, make_fake) -> None:
    """Bounded discovery: more datasets than discovery_concurrency still all complete."""
    async with make_fake(FakeConfig.small(n_datasets=5, files=2, rows=20, seed=45)) as fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, concurrency=2, discovery_concurrency=2))
        assert run.exit_code == EXIT_OK
        assert_files_match(out, fp.expected_files())
        # every file fetched exactly once
        assert {k: v for k, v in fp.stats.bytes_by_file.items()} == {
            f"{e.dataset_file_id}/{e.name}": e.size for e in fp.expected_files()}


async def test_many_datasets_cost_one_catalog_query_per_group(tmp_path: Path, make_fake) -> None:
    """30 datasets (each with a newer failed and a processing batch): 2 grouped Catalog queries, right batches."""
    from engine.platform.selection import CATALOG_GROUP

    n = CATALOG_GROUP + 5
    async with make_fake(FakeConfig.small(n_datasets=n, files=1, rows=20, seed=47)) as fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert_files_match(out, fp.expected_files())
        assert fp.stats.requests["catalog.batches"] == 2
        assert fp.stats.requests["catalog.dataSet"] == 0


async def test_datasets_left_out_of_a_grouped_answer_are_asked_one_by_one(tmp_path: Path, make_fake,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A group answer truncated to 2 batches (as by the 100 limit): the rest fall back, outcome unchanged."""
    import engine.platform.catalog

    monkeypatch.setattr(engine.platform.catalog, "CATALOG_MAX_LIMIT", 2)
    n = 8
    async with make_fake(FakeConfig.small(n_datasets=n, files=1, rows=20, seed=48)) as fp:
        unknown = "0" * 24
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, datasets=[*fp.dataset_ids, unknown]))
        assert run.exit_code == EXIT_FAILED  # the unknown dataset, alone
        assert_files_match(out, fp.expected_files())
        # the grouped answer holds the 2 newest downloadable batches: their datasets are covered
        done = sorted((b for b in fp.model.batches_by_key.values() if b.status in ("success", "active")),
                      key=lambda b: (b.created, b.key), reverse=True)
        covered = {b.dataset.id for b in done[:2]}
        # 1 grouped query, one per dataset left out, and the unknown one's unfiltered retry
        assert fp.stats.requests["catalog.batches"] == 1 + (n + 1 - len(covered)) + 1
        failed = [d for d in read_report(out)["datasets"] if d["status"] == "failed"]
        assert [d["dataset_id"] for d in failed] == [unknown]
