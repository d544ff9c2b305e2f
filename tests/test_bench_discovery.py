"""bench/discovery.py: the peers' own listing finds exactly the expected files, through every listing variant."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import harness
from bench.discovery import PeerDiscovery, discover
from bench.profiles import build
from bench.runner import list_for_peer, run_figures
from bench.tools import RunContext
from engine.fake import DatasetSpec, FakeConfig, Faults


def as_bench_fake(fp: Any) -> harness.Fake:
    expected = [harness.ExpectedFile(e.dataset_id, e.batch_id, e.dataset_file_id, e.name, e.size, e.sha256)
                for e in fp.expected_files()]
    return harness.Fake(args=[], proc=None, info=fp.info(), log=Path("/dev/null"), expected=expected)  # type: ignore[arg-type]


def test_lists_every_variant_the_demo_org_has(threaded_fake: Callable[[FakeConfig], Any]) -> None:
    # paged listings, bare arrays, nested dataSetFiles, a Catalog key that is not the batch id, _SUCCESS markers
    fake = as_bench_fake(threaded_fake(FakeConfig.demo()))
    found = discover(fake, concurrency=4)
    assert [f.rel_path for f in found.files] == [e.rel_path for e in fake.expected]
    assert [f.size for f in found.files] == [e.size for e in fake.expected]
    assert all("?path=" in f.url and f.url.startswith(fake.url) for f in found.files)
    assert found.requests > len(fake.info["datasets"]) and found.wall_s > 0
    assert found.headers["Authorization"].startswith("Bearer ") and found.headers["x-api-key"] == fake.info["client_id"]


def test_many_datasets_take_one_catalog_query_per_25(threaded_fake: Callable[[FakeConfig], Any]) -> None:
    fp = threaded_fake(FakeConfig(datasets=[DatasetSpec(files_per_dataset_file=1, rows_per_file=20) for _ in range(30)]))
    found = discover(as_bench_fake(fp), concurrency=8)
    assert len(found.files) == 30
    assert fp.stats.requests["catalog.batches"] == 2  # 25 + 5, no per-dataset fallback needed
    # 1 token + 2 Catalog + 30 batch listings + 30 dataSetFile listings
    assert found.requests == 1 + 2 + 30 + 30


def test_retries_throttling_and_server_errors(threaded_fake: Callable[[FakeConfig], Any]) -> None:
    cfg = FakeConfig(seed=3, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=20) for _ in range(4)],
                     faults=Faults(p_429=0.3, retry_after_s=0, p_5xx=0.2))
    fp = threaded_fake(cfg)
    fake = as_bench_fake(fp)
    found = discover(fake, concurrency=4)
    assert [f.rel_path for f in found.files] == [e.rel_path for e in fake.expected]
    assert fp.stats.faults["429"] + fp.stats.faults["5xx"] > 0  # the retries were exercised


def test_a_listing_that_misses_files_is_an_error(threaded_fake: Callable[[FakeConfig], Any]) -> None:
    fake = as_bench_fake(threaded_fake(FakeConfig(datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=20)])))
    fake.expected.append(harness.ExpectedFile("ds", "b", "b-1", "missing.parquet", 1, "0" * 64))
    with pytest.raises(RuntimeError, match="expected"):
        discover(fake, concurrency=2)


@pytest.mark.parametrize(("profile", "counted"), [("small-listed", False), ("small", True)])
def test_a_listed_profile_hands_the_peer_the_list_without_counting_its_discovery(
        threaded_fake: Callable[[FakeConfig], Any], tmp_path: Path, profile: str, counted: bool) -> None:
    fake = as_bench_fake(threaded_fake(FakeConfig.small(n_datasets=3, files=2, rows=20)))
    ctx = RunContext(fake=fake, files=[], headers={}, out_dir=tmp_path / "out", work_dir=tmp_path, concurrency=4,
                     timeout=10)
    found: list[PeerDiscovery] = []
    list_for_peer(build(profile, quick=True), fake, 4, {e.rel_path for e in fake.expected}, ctx, found)
    assert [f.rel_path for f in ctx.files] == [e.rel_path for e in fake.expected]
    assert ctx.headers["Authorization"].startswith("Bearer ")
    assert len(found) == (1 if counted else 0)
    figures = run_figures([harness.RunResult(argv=[], rc=0, wall_s=1.0, cpu_s=0.5, peak_rss_mib=9)], found)
    assert figures["wall_s"] == (1.0 + found[0].wall_s if counted else 1.0)
