"""Choosing batches: latest, "all", since/until windows, pinned ids, names, replaced batches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import assert_files_match, clean_env, read_report, run_cli, run_export, toml_config

from engine.config import Settings
from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.fake.data import Batch
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.platform.auth import TokenProvider
from engine.platform.client import PlatformClient, make_session
from engine.platform.discovery import Discovery
from engine.platform.selection import drop_replaced
from engine.retry import RetryPolicy


def settings(fp: Any, out: Path, datasets: list[Any], **export: Any) -> Settings:
    return Settings.model_validate({
        "platform": {"url": fp.url, "org_id": fp.org_id, "sandbox": fp.sandbox},
        "auth": {"client_id": fp.client_id, "client_secret": fp.client_secret, "ims_url": fp.ims_url},
        "export": {"out_dir": out, "concurrency": 4, "backoff_base": 0.01, "backoff_cap": 0.05, **export},
        "datasets": datasets,
    })


@asynccontextmanager
async def discovery_for(fp: FakePlatform) -> AsyncIterator[Discovery]:
    s = settings(fp, Path("unused"), [fp.dataset_ids[0]])
    policy = RetryPolicy(max_attempts=2, base=0.01, cap=0.05)
    async with make_session(s) as session:
        yield Discovery(PlatformClient(s, session, TokenProvider(s.auth, session, policy), policy))


def successful(fp: FakePlatform, ds: str) -> list[Batch]:
    return [b for b in fp.model.datasets[ds].batches if b.status in ("success", "active")]


def exported_batch_folders(out: Path, ds: str) -> set[str]:
    return {p.name for p in (out / ds).iterdir() if p.is_dir()} if (out / ds).exists() else set()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------- "all"


async def test_all_exports_every_successful_batch_once(tmp_path: Path, make_fake) -> None:
    async with make_fake(FakeConfig(seed=81, datasets=[DatasetSpec(batches=4, files_per_dataset_file=2, rows_per_file=20)])) as fp:
        ds = fp.dataset_ids[0]
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, [{"id": ds, "batches": "all"}]))
        assert run.exit_code == EXIT_OK, read_report(out)
        expected = fp.expected_files(all_batches=True)
        assert len({e.batch_id for e in expected}) == 4
        assert_files_match(out, expected)
        assert exported_batch_folders(out, ds) == {b.data_id for b in successful(fp, ds)}  # not the failed or processing one
        assert dict(fp.stats.bytes_by_file) == {f"{e.dataset_file_id}/{e.name}": e.size for e in expected}  # each once
        (dataset,) = read_report(out)["datasets"]
        assert dataset["status"] == "ok" and [b["status"] for b in dataset["batches"]] == ["ok"] * 4


# Created times (ms after the dataset's): 5 batches share 4000 (more than a page of 4), two share
# 6000 across a page edge. Pages of 4 (CATALOG_MAX_LIMIT patched) put edges inside both groups.
OFFSETS = (1000, 2000, 3000, 4000, 4000, 4000, 4000, 4000, 5000, 6000, 6000, 7000)


@pytest.fixture
def pages_of_4(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.platform.catalog

    monkeypatch.setattr(engine.platform.catalog, "CATALOG_MAX_LIMIT", 4)


@pytest.fixture
async def shared_ms(make_fake, pages_of_4) -> AsyncIterator[FakePlatform]:
    cfg = FakeConfig(seed=82, datasets=[DatasetSpec(batches=len(OFFSETS), created_offsets_ms=OFFSETS,
                                                    files_per_dataset_file=1, rows_per_file=10)])
    async with make_fake(cfg) as fp:
        yield fp


async def test_paging_through_shared_milliseconds_misses_and_doubles_nothing(shared_ms: FakePlatform) -> None:
    fp = shared_ms
    ds = fp.dataset_ids[0]
    every = fp.model.datasets[ds].batches
    async with discovery_for(fp) as discovery:
        got = await discovery.catalog.batches_created(ds)
    keys = [key for key, _ in got]
    assert len(keys) == len(set(keys)) == len(every) == 14  # 12 successful, 1 failed, 1 processing
    assert set(keys) == {b.key for b in every}
    assert [obj["created"] for _, obj in got] == sorted(b.created for b in every)
    assert fp.stats.requests["catalog.batches"] >= 5  # it really paged (pages of 4)


def _ms(fp: FakePlatform, offset: int) -> int:
    return fp.model.datasets[fp.dataset_ids[0]].created + offset


@pytest.mark.parametrize("since, until", [
    (4000, None), (None, 4000), (4000, 6000), (3000, 6001), (4001, 6000), (6000, 7000), (1000, 1001),
])
async def test_windows_whose_edges_fall_on_page_boundaries(shared_ms: FakePlatform, since: int | None, until: int | None) -> None:
    fp = shared_ms
    ds = fp.dataset_ids[0]
    lo = _ms(fp, since) if since is not None else None
    hi = _ms(fp, until) if until is not None else None
    after, before = (lo - 1 if lo is not None else None), hi  # since inclusive, until exclusive (config.window_ms)
    async with discovery_for(fp) as discovery:
        got = [key for key, _ in await discovery.catalog.batches_created(ds, after, before)]
    want = {b.key for b in fp.model.datasets[ds].batches if (lo is None or b.created >= lo) and (hi is None or b.created < hi)}
    assert want and len(got) == len(set(got)) and set(got) == want


async def test_a_window_in_the_config_exports_exactly_its_batches(shared_ms: FakePlatform, tmp_path: Path) -> None:
    fp = shared_ms
    ds = fp.dataset_ids[0]
    out = tmp_path / "out"
    window = {"since": iso(_ms(fp, 4000)), "until": iso(_ms(fp, 6000))}
    run = await run_export(settings(fp, out, [{"id": ds, "batches": "all", **window}]))
    assert run.exit_code == EXIT_OK, read_report(out)
    inside = [b for b in successful(fp, ds) if _ms(fp, 4000) <= b.created < _ms(fp, 6000)]
    assert len(inside) == 6 and exported_batch_folders(out, ds) == {b.data_id for b in inside}
    # "latest" in the same window: the newest batch inside it, not the dataset's newest
    out2 = tmp_path / "out2"
    run = await run_export(settings(fp, out2, [{"id": ds, **window}]))
    assert run.exit_code == EXIT_OK
    newest = max(inside, key=lambda b: (b.created, b.key))
    assert exported_batch_folders(out2, ds) == {newest.data_id} and newest.key != fp.latest_batch(ds).key


async def test_batches_created_while_paging_are_listed_once(make_fake, pages_of_4) -> None:
    """The two newest batches appear only after the first Catalog page was served, as if created
    meanwhile: offset paging newest-first would shift every later page and list some twice."""
    fp = make_fake(FakeConfig(seed=82, datasets=[DatasetSpec(batches=len(OFFSETS), created_offsets_ms=OFFSETS,
                                                             files_per_dataset_file=1, rows_per_file=10)]))
    ds = fp.dataset_ids[0]
    late = sorted(fp.model.datasets[ds].batches, key=lambda b: b.created)[-2:]
    fp.hidden_batches.update(b.key for b in late)
    original = fp.h_batches
    served: list[int] = []

    async def h_batches(request: web.Request) -> web.Response:
        resp = await original(request)
        served.append(len(json.loads(resp.body)))
        fp.hidden_batches.clear()  # created now, after this page
        return resp

    fp.h_batches = h_batches  # routes are bound when the server starts
    async with fp, discovery_for(fp) as discovery:
        keys = [key for key, _ in await discovery.catalog.batches_created(ds)]
    assert len(served) >= 2 and served[0] == 4
    assert len(keys) == len(set(keys)) == 14 and {b.key for b in late} <= set(keys)


# ----------------------------------------------------------------------------- pinned, replaced, names


async def test_pinned_batches_and_the_legacy_batch_key(tmp_path: Path, make_fake) -> None:
    cfg = FakeConfig(seed=83, datasets=[DatasetSpec(batches=3, files_per_dataset_file=1, rows_per_file=20),
                                        DatasetSpec(files_per_dataset_file=1, rows_per_file=20)])
    async with make_fake(cfg) as fp:
        ds, other = fp.dataset_ids
        b0, b1, b2 = successful(fp, ds)
        out = tmp_path / "out"
        chosen = [{"id": ds, "batches": [b0.key, b2.key]}, {"id": other, "batch": fp.latest_batch(other).key}]
        run = await run_export(settings(fp, out, chosen))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert exported_batch_folders(out, ds) == {b0.data_id, b2.data_id}
        assert exported_batch_folders(out, other) == {fp.latest_batch(other).data_id}
        # a pinned id of another dataset is an error, not a silent export into the wrong folder
        out2 = tmp_path / "out2"
        run = await run_export(settings(fp, out2, [{"id": other, "batches": [b1.key]}]))
        assert run.exit_code == EXIT_FAILED
        (dataset,) = read_report(out2)["datasets"]
        assert f"batch {b1.key} belongs to dataset {ds}, not to {other}" in dataset["error"]
        assert not (out2 / other).exists() and not (out2 / ds).exists()


async def test_a_replaced_batch_is_reported_not_exported(tmp_path: Path, make_fake) -> None:
    cfg = FakeConfig(seed=84, datasets=[DatasetSpec(batches=3, replacement=True, files_per_dataset_file=2, rows_per_file=20)])
    async with make_fake(cfg) as fp:
        ds = fp.dataset_ids[0]
        b0, replaced, replacement = sorted(successful(fp, ds), key=lambda b: b.created)
        assert replacement.replaces == replaced.key
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, [{"id": ds, "batches": "all"}]))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert exported_batch_folders(out, ds) == {b0.data_id, replacement.data_id}
        (dataset,) = read_report(out)["datasets"]
        by_id = {b["batch_id"]: b for b in dataset["batches"]}
        assert dataset["status"] == "ok" and by_id[replaced.key]["status"] == "replaced"
        assert by_id[replaced.key]["errors"][0].startswith(f"replaced by {replacement.key} (Replacing for ")
        assert not any(k.startswith(f"{replaced.data_id}-") for k in fp.stats.bytes_by_file)  # never fetched


def test_only_a_newer_batch_replaces_and_external_ids_count() -> None:
    a = ("A", {"created": 1, "externalId": "ext-a"})
    b = ("B", {"created": 2, "replay": {"predecessorsByExternalId": ["ext-a"]}})
    kept, replaced = drop_replaced([a, b])
    assert [k for k, _ in kept] == ["B"] and [(r.key, r.by) for r in replaced] == [("A", "B")]
    # a malformed cycle (each names the other) must not drop both
    c = ("C", {"created": 1, "replay": {"predecessors": ["D"]}})
    d = ("D", {"created": 2, "replay": {"predecessors": ["C"]}})
    kept, replaced = drop_replaced([c, d])
    assert [k for k, _ in kept] == ["D"] and [r.key for r in replaced] == ["C"]


NAMES = ["Customer AI scores (churn)", "Twin", "Twin"]


@pytest.fixture
async def named(make_fake) -> AsyncIterator[FakePlatform]:
    cfg = FakeConfig(seed=85, datasets=[DatasetSpec(name=n, files_per_dataset_file=1, rows_per_file=20) for n in NAMES])
    async with make_fake(cfg) as fp:
        yield fp


async def test_a_dataset_by_name(named: FakePlatform, tmp_path: Path) -> None:
    fp, out = named, tmp_path / "out"
    run = await run_export(settings(fp, out, [{"name": NAMES[0]}]))
    assert run.exit_code == EXIT_OK, read_report(out)
    assert_files_match(out, [e for e in fp.expected_files() if e.dataset_id == fp.dataset_ids[0]])
    assert read_report(out)["datasets"][0]["dataset_id"] == fp.dataset_ids[0]
    assert fp.stats.requests["catalog.dataSets"] == 1


@pytest.mark.parametrize("name, words", [
    ("Customer AI scores", ["no dataset is named 'Customer AI scores'"]),  # a prefix is not a match
    ("customer ai scores (churn)", ["no dataset is named", "case included"]),
    ("Twin", ["2 datasets are named 'Twin'"]),
])
async def test_a_name_with_no_or_several_matches_is_a_clear_error(named: FakePlatform, tmp_path: Path, name: str, words: list[str]) -> None:
    fp, out = named, tmp_path / "out"
    run = await run_export(settings(fp, out, [{"name": name}, fp.dataset_ids[0]]))
    assert run.exit_code == EXIT_FAILED
    failed, ok = read_report(out)["datasets"]
    assert failed["status"] == "failed" and ok["status"] == "ok"  # the rest of the run goes on
    assert all(w in failed["error"] for w in words), failed["error"]
    if name == "Twin":
        assert fp.dataset_ids[1] in failed["error"] and fp.dataset_ids[2] in failed["error"]


def test_cli_dataset_names_and_a_datasets_file(tmp_path: Path, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig(seed=86, datasets=[DatasetSpec(name=n, files_per_dataset_file=1, rows_per_file=20)
                                                     for n in ("Scores A", "Scores B", "Scores C")]))
    a, b, c = fp.dataset_ids
    out = tmp_path / "out"
    (tmp_path / "c.toml").write_text(toml_config(fp, out, datasets=[]))
    (tmp_path / "list.txt").write_text(f"# exports of the week\n{a}\n\n  Scores B  \n")
    p = run_cli("run", "--config", str(tmp_path / "c.toml"), "--datasets-file", str(tmp_path / "list.txt"),
                "--dataset", "Scores C", cwd=tmp_path, env=clean_env())
    assert p.returncode == EXIT_OK, p.stdout + p.stderr
    assert {d["dataset_id"] for d in read_report(out)["datasets"]} == {a, b, c}
    assert_files_match(out, fp.expected_files())
    p = run_cli("run", "--config", str(tmp_path / "c.toml"), "--datasets-file", str(tmp_path / "missing.txt"), cwd=tmp_path)
    assert p.returncode == 2 and "missing.txt does not exist" in p.stderr and "Traceback" not in p.stderr


# ----------------------------------------------------------------------------- Data Access fallbacks


@pytest.mark.parametrize("answer", ["400", "422", "404"])
async def test_data_access_refusing_the_catalog_key_falls_back_to_the_related_batch(tmp_path: Path, make_fake, answer: str) -> None:
    cfg = FakeConfig(seed=87, datasets=[DatasetSpec(batch_key="related", related_miss=answer, files_per_dataset_file=2, rows_per_file=20)])
    async with make_fake(cfg) as fp:
        out = tmp_path / "out"
        run = await run_export(settings(fp, out, fp.dataset_ids))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert_files_match(out, fp.expected_files())
        assert fp.stats.statuses[int(answer)] == 1
