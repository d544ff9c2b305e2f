"""`aep-export check` and `run --dry-run`: the plan of a run, with nothing downloaded, written or created."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import clean_env, expected_path, part_of, parts_under, run_cli, run_export, settings_for, toml_config

from engine.config import StoreURL
from engine.fake import DatasetSpec, FakeConfig, Faults
from engine.output.objectstore import part_size_for, staging_key
from engine.plan import format_plan, make_plan
from engine.validators import RESUME_WINDOW

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


# -- what the destination already holds ---------------------------------------------------------


def _check_json(command: list[str], config: Path, cwd: Path) -> dict:
    p = run_cli(*command, "--config", str(config), "--json", cwd=cwd, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("command", [["check"], ["run", "--dry-run"]])
def test_after_a_complete_export_check_says_nothing_would_be_fetched(threaded_fake, tmp_path: Path, command: list[str]) -> None:
    fp = threaded_fake(FakeConfig(seed=98, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=30),
                                                     DatasetSpec(files_per_dataset_file=2, rows_per_file=30)]))
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, tmp_path / "out"))
    assert run_cli("run", "--config", str(config), cwd=tmp_path, env=clean_env()).returncode == 0
    served = fp.stats.bytes_sent

    p = run_cli(*command, "--config", str(config), cwd=tmp_path, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    expected = fp.expected_files()
    total = sum(e.size for e in expected)
    verdict = rf"^2 batches, {len(expected)} files, .* listed: all verified in .*out, nothing would be fetched$"
    assert re.search(verdict, p.stdout, re.M), p.stdout
    assert "would be exported" not in p.stdout and p.stdout.count("all verified in the destination: nothing to fetch") == 2
    doc = _check_json(command, config, tmp_path)
    assert doc["totals"]["fetch_files"] == doc["totals"]["fetch_bytes"] == 0
    assert (doc["totals"]["verified_files"], doc["totals"]["verified_bytes"]) == (len(expected), total)
    states = [f for entry in doc["entries"] for b in entry["batches"] for f in b["file_states"]]
    assert len(states) == len(expected) and {f["state"] for f in states} == {"verified"}
    assert fp.stats.bytes_sent == served  # nothing downloaded by the checks

    changed = expected_path(tmp_path / "out", expected[1])
    changed.write_bytes(changed.read_bytes()[:1000])  # not the file that was verified any more
    doc = _check_json(command, config, tmp_path)
    states = {f["path"]: f for entry in doc["entries"] for b in entry["batches"] for f in b["file_states"]}
    assert states[f"{expected[1].dataset_file_id}/{expected[1].name}"]["state"] == "replaced"
    assert (doc["totals"]["fetch_files"], doc["totals"]["fetch_bytes"], doc["totals"]["replaced_files"]) == (1, expected[1].size, 1)
    p = run_cli(*command, "--config", str(config), cwd=tmp_path, env=clean_env())
    assert f"would replace {expected[1].dataset_file_id}/{expected[1].name}: size 1000 there, {expected[1].size} listed" in p.stdout


def test_check_after_a_kill_says_what_the_rerun_then_does(threaded_fake, tmp_path: Path) -> None:
    """kill -9 mid-run; check's figures per file are what the rerun keeps, resumes and fetches."""
    fp = threaded_fake(FakeConfig(seed=99, faults=Faults(bandwidth_bps=300e3), datasets=[
        DatasetSpec(batches=1, failed_batch=False, processing_batch=False, files_per_dataset_file=6, file_mb=0.25)]))
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, out, extra_export="concurrency = 2\n").replace("concurrency = 4\n", ""))
    expected = fp.expected_files()
    finals = [expected_path(out, e) for e in expected]
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(config)], cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until one file is verified and another partly held
            if any(f.exists() for f in finals) and any(p.stat().st_size > 0 for p in parts_under(out)):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    done = {f for f in finals if f.exists()}
    held = {f for f in finals if not f.exists() and part_of(f).exists() and part_of(f).stat().st_size > 0}
    assert proc.returncode == -signal.SIGKILL and done and held and len(done) < len(finals), "the kill missed mid-run"

    doc = _check_json(["check"], config, tmp_path)
    states = {f["path"]: f for entry in doc["entries"] for b in entry["batches"] for f in b["file_states"]}
    for e, final in zip(expected, finals, strict=True):
        state = states[f"{e.dataset_file_id}/{e.name}"]
        assert state["state"] == ("verified" if final in done else "partial" if state["held_bytes"] else "fetch"), state
        if final in held and state["state"] == "partial":
            assert 0 < state["held_bytes"] <= part_of(final).stat().st_size
    t = doc["totals"]
    assert t["verified_files"] == len(done) and t["partial_files"] >= 1 and t["held_bytes"] > 0
    assert t["fetch_files"] == len(expected) - len(done)
    assert t["fetch_bytes"] == sum(e.size for e in expected) - t["verified_bytes"] - t["held_bytes"]
    p = run_cli("check", "--config", str(config), cwd=tmp_path, env=clean_env())
    assert f"({t['partial_files']} resume" in p.stdout and "would resume " in p.stdout, p.stdout

    rerun = run_cli("run", "--config", str(config), cwd=tmp_path, env=clean_env())
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    totals = json.loads((out / "_report.json").read_text())["totals"]
    assert totals["files_reused"] == t["verified_files"] and totals["files_downloaded"] == t["fetch_files"]
    # what it fetched: what check said, plus the few KiB per held run asked again to confirm it
    assert t["fetch_bytes"] <= totals["bytes_fetched"] <= t["fetch_bytes"] + t["partial_files"] * RESUME_WINDOW


async def test_check_on_a_bucket_says_what_the_prefix_holds(moto, monkeypatch: pytest.MonkeyPatch, make_fake) -> None:
    """s3://: verified objects, a completed upload never copied (held whole), a file gone (fetch)."""
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    moto.create_bucket(bucket := "aep-check")
    fp = make_fake(FakeConfig(seed=96, datasets=[DatasetSpec(batches=1, failed_batch=False, processing_batch=False,
                                                             files_per_dataset_file=3, rows_per_file=40)]))
    async with fp:
        settings = settings_for(fp, Path("unused"))
        settings = settings.model_copy(update={"export": settings.export.model_copy(update={"out_dir": StoreURL.parse(f"s3://{bucket}/p")})})
        assert (await run_export(settings)).exit_code == 0
        plans = await make_plan(settings)
        assert [line for line in format_plan(plans, "s3://aep-check/p") if "nothing would be fetched" in line]

        staged, gone, uploading = fp.expected_files()[:3]

        def rel(e) -> str:
            return f"{e.dataset_id}/{e.batch_id}/{e.dataset_file_id}/{e.name}"

        def staging(e) -> str:
            return "p/" + staging_key(rel(e), e.size, part_size_for(e.size, settings.store.part_size))

        data = moto.read(bucket, f"p/{rel(staged)}")
        moto.client.delete_object(Bucket=bucket, Key=f"p/{rel(staged)}")  # killed between the upload and the copy
        moto.client.put_object(Bucket=bucket, Key=staging(staged), Body=data)
        moto.client.delete_object(Bucket=bucket, Key=f"p/{rel(gone)}")
        data = moto.read(bucket, f"p/{rel(uploading)}")  # killed with its (only) part uploaded
        moto.client.delete_object(Bucket=bucket, Key=f"p/{rel(uploading)}")
        upload = moto.client.create_multipart_upload(Bucket=bucket, Key=staging(uploading))["UploadId"]
        moto.client.upload_part(Bucket=bucket, Key=staging(uploading), UploadId=upload, PartNumber=1, Body=data)
        plans = await make_plan(settings)
    states = {f.path: f for b in plans[0].batches for f in b.held}
    for e, state in ((staged, "partial"), (uploading, "partial"), (gone, "fetch")):
        held = states[f"{e.dataset_file_id}/{e.name}"]
        assert (held.state, held.held) == (state, e.size if state == "partial" else 0), held
    assert sum(f.state == "verified" for f in states.values()) == len(states) - 3
