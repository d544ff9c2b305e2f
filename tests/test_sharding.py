"""`run --shard I/N`: N processes given one config split it with no overlap and no gap into one
output directory; a killed shard's rerun finishes only its own share; `status` sees all shards."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web
from conftest import assert_files_match, clean_env, run_cli, toml_config, with_data_dir

from engine.config import AudienceSettings, DatasetSettings
from engine.fake import DatasetSpec, FakeConfig, FakePlatform, Faults
from engine.fake.server import ThreadedFakePlatform
from engine.shard import Shard, entry_key, parse_shard, shard_of, share_of

N = 3
VICTIM = 1
JOB = 11037  # the fake's first export job id


# ----------------------------------------------------------------------------- the function


@pytest.mark.parametrize("text,shard", [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), (" 0 / 4 ", Shard(0, 4))])
def test_parse_shard_accepts_i_of_n_counting_from_0(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["3/3", "1/0", "0/0", "-1/3", "a/3", "1", "1/2/3", "", "0/10001"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard(text)


@pytest.mark.parametrize("value", ["3/3", "x", "0/0"])
def test_cli_bad_shard_is_a_usage_error(tmp_path: Path, value: str) -> None:
    p = run_cli("run", "--dataset", "x", "--shard", value, cwd=tmp_path)
    assert p.returncode == 2 and "--shard" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not any(tmp_path.iterdir())  # nothing attempted, nothing written


def test_shard_of_is_stable_across_versions() -> None:
    # Pods of one Job may run different builds during a rollout: the assignment is a contract.
    # Expected values from coreutils: printf 'dataset:0' | sha256sum, first 16 hex digits mod N.
    assert [shard_of(f"dataset:{i}", 3) for i in range(8)] == [0, 1, 2, 2, 2, 2, 1, 1]
    assert shard_of("audience:11037", 5) == 0


def test_every_entry_falls_to_exactly_one_shard_and_shards_are_balanced() -> None:
    datasets = [DatasetSettings(id=f"{i:024x}") for i in range(600)]
    audiences = [AudienceSettings(export_job_id=str(10_000 + i)) for i in range(60)]
    for n in (1, 2, 3, 7):
        shares = [share_of(datasets, audiences, Shard(i, n)) for i in range(n)]
        seen = [entry_key(e) for s in shares for e in (*s.datasets, *s.audiences)]
        assert sorted(seen) == sorted(entry_key(e) for e in (*datasets, *audiences))  # no gap, no overlap
        sizes = [len(s.datasets) for s in shares]
        assert max(sizes) - min(sizes) <= 0.35 * len(datasets) / n, sizes
        for i, s in enumerate(shares):  # the others' datasets are known, with their shard
            assert set(s.elsewhere) == {d.id for d in datasets} - {d.id for d in s.datasets}
            assert all(shard != f"{i}/{n}" for shard, _ in s.elsewhere.values())


def test_unsharded_share_is_everything() -> None:
    datasets = [DatasetSettings(id="a"), DatasetSettings(id="b")]
    share = share_of(datasets, [], None)
    assert share.datasets == datasets and share.elsewhere == {}


# ----------------------------------------------------------------------------- 3 shards, one out


def _specs(audience_on: int | None) -> list[DatasetSpec]:
    return [DatasetSpec(files_per_dataset_file=3, rows_per_file=6000, audience_job=(i == audience_on),
                        failed_batch=False, processing_batch=False) for i in range(8)]


def _config(seed: int) -> FakeConfig:
    """8 datasets; the audience job targets one whose shard differs from the audience's own."""
    probe = FakePlatform(FakeConfig(seed=seed, datasets=_specs(None)))
    ids = probe.dataset_ids
    audience_shard = shard_of(f"audience:{JOB}", N)
    target = next(i for i, d in enumerate(ids) if shard_of(f"dataset:{d}", N) != audience_shard)
    return FakeConfig(seed=seed, faults=Faults(bandwidth_bps=1e6), datasets=_specs(target))


@pytest.fixture
def recorded_fake(fake_data_root: Path):
    """A threaded fake that records, per download request, the bearer token it came with."""
    platform = FakePlatform(with_data_dir(_config(seed=94), fake_data_root))
    downloads: list[tuple[str, str, str]] = []  # (token, dataset id, "{dataSetFileId}/{name}")
    original = platform.h_files

    async def h_files(request: web.Request) -> web.StreamResponse:
        if "path" in request.query:
            dsf = request.match_info["id"]
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            downloads.append((token, platform.model.file_batch[dsf].dataset.id, f"{dsf}/{request.query['path']}"))
        return await original(request)

    platform.h_files = h_files
    fp = ThreadedFakePlatform(platform)
    # One ready token per process, so each download is attributed to the shard that made it.
    for name in ("shard-0", "shard-1", "shard-1-rerun", "shard-2"):
        platform._tokens[name] = time.monotonic() + 3600
    yield fp, downloads
    fp.stop()


def _start(config: Path, shard: int, token: str) -> subprocess.Popen:
    env = clean_env(AEP_EXPORT_AUTH__ACCESS_TOKEN=token)
    return subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(config), "--shard", f"{shard}/{N}",
                             "--json-logs", "--no-progress", "--concurrency", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_three_shards_one_killed_and_rerun_make_exactly_the_full_export(tmp_path: Path, recorded_fake) -> None:
    fp, downloads = recorded_fake
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, out) + f'\n[[audiences]]\nexport_job_id = "{JOB}"\n')
    owner = {d: shard_of(f"dataset:{d}", N) for d in fp.dataset_ids}
    assert sorted(set(owner.values())) == list(range(N)), owner  # every shard has datasets
    target = fp.platform._jobs[JOB].dataset_id
    assert owner[target] != shard_of(f"audience:{JOB}", N)  # the audience's batch is another shard's
    victim_dirs = [out / d for d, s in owner.items() if s == VICTIM]

    procs = {i: _start(config, i, f"shard-{i}") for i in range(N)}
    deadline = time.monotonic() + 30
    while not any(p for d in victim_dirs for p in d.rglob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.02)
    procs[VICTIM].send_signal(signal.SIGKILL)
    procs[VICTIM].communicate(timeout=30)
    parts = [p for d in victim_dirs for p in d.rglob("*.part")]
    assert parts, "the SIGKILL did not land mid-transfer"
    done_before_rerun = {str(p.relative_to(out)) for d in victim_dirs for p in d.rglob("*.parquet")}
    for i in (0, 2):
        _, err = procs[i].communicate(timeout=120)
        assert procs[i].returncode == 0, err[-2000:]
    report = json.loads((out / f"_report.shard-{VICTIM}-of-{N}.json").read_text())
    assert report["status"] == "running" and report["shard"] == f"{VICTIM}/{N}"  # killed: never concluded

    status = run_cli("status", str(out), cwd=tmp_path)
    assert status.returncode == 1, status.stdout + status.stderr
    missing = [ln for ln in status.stdout.splitlines() if ln.startswith(f"{VICTIM}/{N}")]
    assert missing and all(" missing " in ln for ln in missing), status.stdout
    assert "INCOMPLETE" in status.stdout.splitlines()[-1]

    rerun = _start(config, VICTIM, "shard-1-rerun")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err[-2000:]

    # the union is exactly the full export (the audience's batch included), with no gap
    assert_files_match(out, fp.expected_files())
    # no dataset was fetched by two shards, and each by the shard its key falls to
    shards_of: dict[str, set[str]] = defaultdict(set)
    for token, dataset, _ in downloads:
        shards_of[dataset].add(token.removesuffix("-rerun"))
    assert set(shards_of) == set(fp.dataset_ids)
    assert {d: s for d, s in shards_of.items()} == {d: {f"shard-{owner[d]}"} for d in fp.dataset_ids}
    # the restarted shard redid only its own unfinished share: nothing verified before the kill
    refetched = {f"{d}/{rel}" for t, d, rel in downloads if t == "shard-1-rerun"}
    assert not any(f"{Path(p).parts[0]}/{'/'.join(Path(p).parts[2:])}" in refetched for p in done_before_rerun)

    reports = sorted(p.name for p in out.glob("_report*.json"))
    assert reports == [f"_report.shard-{i}-of-{N}.json" for i in range(N)]  # no _report.json, no collision
    journals = sorted(p.name for p in (out / ".aep-export").glob("journal*.jsonl"))
    assert journals == [f"journal.shard-{i}-of-{N}.jsonl" for i in range(N)]
    audience = [d for i in range(N) for d in json.loads((out / f"_report.shard-{i}-of-{N}.json").read_text())["datasets"]
                if d["source"] == f"audience:{JOB}"]
    assert len(audience) == 1 and audience[0]["status"] == "ok" and audience[0]["delegated"][0]["dataset_id"] == target

    status = run_cli("status", str(out), cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[-1].startswith("complete: 9 done, 0 failed, 0 missing (3 shards, 3 reports)")
    verify = run_cli("verify", str(out), cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout
