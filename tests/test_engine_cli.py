"""CLI level: `aep-export run` with JSON logs (no secrets anywhere) and `aep-export verify`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import assert_files_match, clean_env, expected_path, files_under, run_cli, sha256sum_check, toml_config

from engine.fake import DatasetSpec, FakeConfig


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory: pytest.TempPathFactory, fake_data_root: Path):
    """One real CLI run (debug JSON logs) against a threaded fake platform, shared by this module."""
    from conftest import with_data_dir

    from engine.fake import FakePlatform

    cfg = with_data_dir(FakeConfig(seed=81, page_size=2, datasets=[
        DatasetSpec(files_per_dataset_file=3, rows_per_file=30, success_marker=True),
        DatasetSpec(files_per_dataset_file=2, rows_per_file=30, batch_key="related", listing_shape="bare_array"),
    ]), fake_data_root)
    fp = FakePlatform.run_in_thread(cfg)
    try:
        base = tmp_path_factory.mktemp("cli")
        out = base / "out"
        # precedence on the way: the file's secret is wrong (env must win), the env's concurrency is
        # invalid (the flag must win); the run only succeeds if both overrides apply
        (base / "config.toml").write_text(toml_config(fp, out, client_secret="wrong-secret-from-toml"))
        env = clean_env(AEP_EXPORT_AUTH__CLIENT_SECRET=fp.client_secret, AEP_EXPORT_EXPORT__CONCURRENCY="0")
        proc = run_cli("run", "--config", str(base / "config.toml"), "--json-logs", "--log-level", "debug",
                       "--no-progress", "--concurrency", "2", cwd=base, env=env)
        yield fp, base, out, proc, fp.issued_tokens
    finally:
        fp.stop()


def test_cli_run_exit_0_and_files_with_env_and_flag_precedence(cli_export) -> None:
    fp, _, out, proc, _ = cli_export
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert_files_match(out, fp.expected_files())


def test_cli_json_logs_are_json_lines_and_stdout_is_the_summary(cli_export) -> None:
    _, _, _out, proc, _ = cli_export
    events = []
    for line in proc.stderr.splitlines():
        if line.strip():
            events.append(json.loads(line))  # every stderr line is a JSON object
    assert events and all(isinstance(e, dict) and "event" in e and "level" in e for e in events)
    assert {"token_obtained", "batch_found", "batch_done"} <= {e["event"] for e in events}

    lines = proc.stdout.splitlines()
    # the summary: a status line, a header, a rule, one row per batch, then the closing totals line
    assert lines[0] == "aep-export: ok", lines[:3]
    assert lines[1].split() == ["dataset", "name", "batch", "status", "files", "bytes", "note"], lines[1]
    assert set(lines[2]) <= {"-", " "} and "-" in lines[2], lines[2]
    status_at = lines[1].index("status")  # names hold spaces: the columns are found by the header
    rows = lines[3:-1]
    assert rows and all(ln[status_at:].split()[0] == "ok" for ln in rows), rows
    assert not any(ln.lstrip().startswith("{") for ln in lines)  # no log line on stdout
    tail = lines[-1]
    assert re.match(r"^\d+ files \(\d+ downloaded, \d+ already verified\)", tail), tail
    assert tail.endswith("exit 0") and "_report.json" in tail, tail


def test_no_secret_or_token_in_any_output(cli_export) -> None:
    fp, _base, out, proc, tokens = cli_export
    assert tokens, "the fake issued no token: the check below would be empty"
    secrets = [fp.client_secret, *tokens]
    texts = {"stdout": proc.stdout, "stderr": proc.stderr}
    for p in files_under(out):
        if p.suffix in (".json", ".jsonl") or p.name in ("_SHA256SUMS", "_SUCCESS", "_LATEST"):
            texts[str(p.relative_to(out))] = p.read_text()
    assert any(k.endswith("_manifest.json") for k in texts) and "_report.json" in texts
    for name, text in texts.items():
        for s in secrets:
            assert s not in text, f"secret found in {name}"


def test_verify_good_export_exit_0(cli_export, tmp_path: Path) -> None:
    _, _, out, _, _ = cli_export
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    p = run_cli("verify", str(copy), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("OK:") and "2 batches" in p.stdout and "5 files" in p.stdout


def _verify_damaged(cli_export, tmp_path: Path, damage) -> tuple[str, str]:
    fp, _, out, _, _ = cli_export
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    victim = fp.expected_files()[1]
    shown = damage(copy, victim)
    p = run_cli("verify", str(copy), cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    return p.stdout, shown


def test_verify_corrupted_file_exit_1_names_it(cli_export, tmp_path: Path) -> None:
    def flip(copy: Path, e) -> str:
        path = expected_path(copy, e)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01  # same size, footer intact
        path.write_bytes(bytes(data))
        assert sha256sum_check(path.parent.parent).returncode != 0
        return f"{e.dataset_id}/{e.batch_id}/{e.dataset_file_id}/{e.name}"

    stdout, shown = _verify_damaged(cli_export, tmp_path, flip)
    assert any(ln.startswith("FAIL") and shown in ln and "SHA-256" in ln for ln in stdout.splitlines()), stdout


def test_verify_deleted_file_exit_1_names_it(cli_export, tmp_path: Path) -> None:
    def delete(copy: Path, e) -> str:
        expected_path(copy, e).unlink()
        return f"{e.dataset_id}/{e.batch_id}/{e.dataset_file_id}/{e.name}"

    stdout, shown = _verify_damaged(cli_export, tmp_path, delete)
    assert any(ln.startswith("FAIL") and shown in ln and "missing" in ln for ln in stdout.splitlines()), stdout


def test_verify_edited_sha256sums_exit_1_names_it(cli_export, tmp_path: Path) -> None:
    def edit(copy: Path, e) -> str:
        sums = copy / e.dataset_id / e.batch_id / "_SHA256SUMS"
        rel = f"{e.dataset_file_id}/{e.name}"
        text = sums.read_text()
        assert e.sha256 in text
        sums.write_text(text.replace(e.sha256, "0" * 64))
        return rel

    stdout, shown = _verify_damaged(cli_export, tmp_path, edit)
    assert any(ln.startswith("FAIL") and "_SHA256SUMS" in ln and shown in ln for ln in stdout.splitlines()), stdout


def test_verify_not_an_export_dir_exit_2(tmp_path: Path) -> None:
    p = run_cli("verify", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "_manifest.json" in p.stderr
