"""Operating the CLI: --version, -q/-v, debug logs that say something, the closing run_summary
event, and output-directory errors as one line with nothing half-written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import clean_env, read_report, run_cli, toml_config

from engine.fake import DatasetSpec, FakeConfig, Faults


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fake(fake_data_root: Path):
    from conftest import with_data_dir

    from engine.fake import FakePlatform

    # a few seeded 503s, so the debug log has retries to show
    cfg = with_data_dir(FakeConfig(seed=83, faults=Faults(p_5xx=0.3, max_faults_per_key=1), datasets=[
        DatasetSpec(files_per_dataset_file=2, rows_per_file=200), DatasetSpec(files_per_dataset_file=3, rows_per_file=100)]),
        fake_data_root)
    fp = FakePlatform.run_in_thread(cfg)
    yield fp
    fp.stop()


def _run(fake, tmp_path: Path, *flags: str):
    out = tmp_path / "out"
    (tmp_path / "c.toml").write_text(toml_config(fake, out))
    return out, run_cli("run", "--config", str(tmp_path / "c.toml"), "--json-logs", "--no-progress", *flags, cwd=tmp_path)


def test_version(tmp_path: Path) -> None:
    p = run_cli("--version", cwd=tmp_path)
    assert p.returncode == 0 and re.fullmatch(r"aep-export \d+\.\d+\.\d+\S* \(Python 3\.\d+\.\d+\)\n", p.stdout), p.stdout


def test_verbose_logs_every_request_retry_and_decision(fake, tmp_path: Path) -> None:
    fake.reset_stats()
    _out, p = _run(fake, tmp_path, "-v", "--shard", "0/1")
    assert p.returncode == 0, p.stderr[-2000:]
    evs = events(p.stderr)
    http = [e for e in evs if e["event"] == "http"]
    # one debug line per request the fake answered (it counts them too), with method, URL and status
    assert len(http) == sum(fake.stats.statuses.values()) - fake.stats.requests["ims.token"] and http
    assert {200} < {e["status"] for e in http} <= {200, 500, 502, 503, 504}
    assert all(e["level"] == "debug" and "?" not in e["url"] for e in http)
    assert any(e["event"] == "retrying" for e in evs)
    debug = {e["event"] for e in evs if e["level"] == "debug"}
    assert {"shard_entries", "journal_loaded", "latest_pointer"} <= debug, debug


def test_run_summary_is_the_last_event_and_carries_the_tables_totals(fake, tmp_path: Path) -> None:
    out, p = _run(fake, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = events(p.stderr)[-1]
    assert summary["event"] == "run_summary" and summary["level"] == "info"
    report = read_report(out)
    assert {k: summary[k] for k in report["totals"]} == report["totals"]
    assert (summary["status"], summary["exit_code"], summary["report"]) == ("ok", 0, str(out / "_report.json"))
    assert summary["batches_ok"] == 2 and summary["batches_failed"] == 0
    tail = p.stdout.splitlines()[-1]  # the table's totals line says the same
    t = report["totals"]
    assert tail.startswith(f"{t['files']} files ({t['files_downloaded']} downloaded, {t['files_reused']} already verified)")
    assert f"{t['retries']} retries" in tail


def test_quiet_logs_only_warnings_and_still_prints_the_summary(fake, tmp_path: Path) -> None:
    _, p = _run(fake, tmp_path, "-q")
    assert p.returncode == 0, p.stderr[-2000:]
    assert all(e["level"] in ("warning", "error") for e in events(p.stderr)), p.stderr
    assert p.stdout.splitlines()[0] == "aep-export: ok"


def test_quiet_and_verbose_together_is_a_usage_error(tmp_path: Path) -> None:
    p = run_cli("run", "--dataset", "x", "-q", "-v", cwd=tmp_path)
    assert p.returncode == 2 and "not allowed with" in p.stderr


# ----------------------------------------------------------------------------- output directory


def _one_line_exit_2(p, *words: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aep-export: configuration error: output directory"), p.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert p.stdout == ""


def test_out_is_a_file(fake, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    (tmp_path / "c.toml").write_text(toml_config(fake, tmp_path / "taken"))
    before = sorted(tmp_path.rglob("*"))
    p = run_cli("run", "--config", str(tmp_path / "c.toml"), cwd=tmp_path)
    _one_line_exit_2(p, "is a file, not a directory")
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_out_below_a_file_creates_nothing(fake, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    (tmp_path / "c.toml").write_text(toml_config(fake, tmp_path / "taken" / "deeper" / "out"))
    before = sorted(tmp_path.rglob("*"))
    p = run_cli("run", "--config", str(tmp_path / "c.toml"), cwd=tmp_path)
    _one_line_exit_2(p, "not a directory")
    assert sorted(tmp_path.rglob("*")) == before


def test_demo_out_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    p = run_cli("demo", "--out", str(tmp_path / "taken"), cwd=tmp_path, env=clean_env())
    _one_line_exit_2(p, str(tmp_path / "taken"))


def test_version_alone_imports_nothing_heavy(tmp_path: Path) -> None:
    """`--version` is answered before the engine is imported: the start-up target (bench) rests on it."""
    import subprocess
    import sys
    from importlib.metadata import version

    import engine

    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "--version"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith(f"aep-export {engine.__version__} ")
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line}
    assert "engine.launch" in imported  # the measurement saw the engine's own imports
    assert not imported & {"aiohttp", "pydantic", "structlog", "anyio", "engine.cli"}, sorted(imported)
    assert version("aep-export") == engine.__version__  # the package metadata reads the same one place
