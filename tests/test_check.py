"""`aep-export check` and `run --dry-run`: the plan of a run, with nothing downloaded, written or created."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import clean_env, run_cli, toml_config

from engine.fake import DatasetSpec, FakeConfig

SEGMENT = "seg-check"


@pytest.fixture
def org(threaded_fake):
    return threaded_fake(FakeConfig(seed=97, page_size=2, datasets=[
        DatasetSpec(name="Scores web", files_per_dataset_file=3, rows_per_file=20, success_marker=True),
        DatasetSpec(name="Scores churn", batches=3, replacement=True, files_per_dataset_file=2, rows_per_file=20),
        DatasetSpec(segment_id=SEGMENT, files_per_dataset_file=2, rows_per_file=20, failed_batch=False, processing_batch=False),
    ]))


def _config(fp, tmp_path: Path, datasets: str, audiences: str = "", secret: str | None = None) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(datasets + "\n" + toml_config(fp, tmp_path / "out", datasets=[], client_secret=secret) + audiences)
    return path


def _plan_lines(stdout: str) -> dict[str, tuple[int, int]]:
    """batch id -> (files, bytes) from the plan's `  batch <id>: N files, B bytes (…)` lines."""
    found = {}
    for m in re.finditer(r"^  batch (\S+): (\d+) files?, (\d+) bytes", stdout, re.M):
        found[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return found


@pytest.mark.parametrize("command", [["check"], ["run", "--dry-run"]])
def test_check_prints_each_batch_with_its_files_and_size_and_writes_nothing(org, tmp_path: Path, command: list[str]) -> None:
    fp = org
    web, churn = fp.dataset_ids
    path = _config(fp, tmp_path, f'datasets = ["{web}", {{ name = "Scores churn", batches = "all" }}]',
                   f'\n[[audiences]]\nsegment_id = "{SEGMENT}"\n')
    p = run_cli(*command, "--config", str(path), cwd=tmp_path, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    planned = _plan_lines(p.stdout)
    replacement = next(b for b in fp.model.datasets[churn].batches if b.replaces)
    chosen = [e for e in fp.expected_files() if e.dataset_id == web] + [
        e for e in fp.expected_files(all_batches=True) if e.dataset_id == churn and e.catalog_batch_key != replacement.replaces]
    want: dict[str, tuple[int, int]] = {}
    for e in chosen:
        files, size = want.get(e.batch_id, (0, 0))
        want[e.batch_id] = (files + 1, size + e.size)
    assert len(want) == 3 and planned == want  # web's latest, churn's two that are not replaced
    replaced = fp.model.batches_by_key[replacement.replaces]
    assert f"batch {replaced.key}: not exported, replaced by" in p.stdout
    assert f"-> dataset {churn}" in p.stdout and "left out (not successful): 1 failed, 1 processing" in p.stdout
    assert "would create dataset 'aep-export audience seg-check" in p.stdout
    assert "would post an export job for segment seg-check" in p.stdout
    total_files, total_bytes = sum(f for f, _ in want.values()), sum(b for _, b in want.values())
    assert re.search(rf"^{len(want)} batches, {total_files} files, .* would be exported$", p.stdout, re.M), p.stdout
    assert sum(b for _, b in planned.values()) == total_bytes
    # nothing downloaded, written or created
    assert not (tmp_path / "out").exists()
    assert fp.stats.requests["export.download"] == 0 and fp.stats.bytes_sent == 0
    assert fp.stats.requests["catalog.createDataSet"] == fp.stats.requests["ups.jobs.create"] == 0 and fp.created_dataset_ids == []


def test_check_of_entries_a_run_would_fail_exits_1_and_says_why(org, tmp_path: Path) -> None:
    fp = org
    path = _config(fp, tmp_path, f'datasets = ["{fp.dataset_ids[0]}", "ffffffffffffffffffffffff", {{ name = "No such scores" }}]')
    p = run_cli("check", "--config", str(path), cwd=tmp_path, env=clean_env())
    assert p.returncode == 1, p.stdout + p.stderr
    assert "ffffffffffffffffffffffff: ERROR" in p.stdout and "dataset ffffffffffffffffffffffff not found" in p.stdout
    assert "name:No such scores: ERROR" in p.stdout and "no dataset is named 'No such scores'" in p.stdout
    assert p.stdout.rstrip().endswith("2 entries with errors") and not (tmp_path / "out").exists()


def test_check_with_rejected_credentials_exits_3(org, tmp_path: Path) -> None:
    path = _config(org, tmp_path, f'datasets = ["{org.dataset_ids[0]}"]', secret="wrong-secret-55aa")
    p = run_cli("check", "--config", str(path), cwd=tmp_path, env=clean_env())
    assert p.returncode == 3 and "credentials rejected" in p.stderr and "wrong-secret-55aa" not in p.stderr + p.stdout
    assert not (tmp_path / "out").exists()


def test_check_with_a_configuration_error_exits_2_without_calling_the_platform(org, tmp_path: Path) -> None:
    path = _config(org, tmp_path, 'datasets = [{ id = "5cd9146b31dae914b75f654f", batches = "newest" }]')
    p = run_cli("check", "--config", str(path), cwd=tmp_path, env=clean_env())
    assert p.returncode == 2 and 'datasets.0.batches: must be "latest", "all" or a list of batch ids' in p.stderr, p.stderr
    assert org.stats.tokens_issued == 0
