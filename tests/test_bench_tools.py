"""bench/: what the peers are handed (aria2c's input with checksums, curl's config) and the kill -9 launcher."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.harness import RemoteFile, run_measured
from bench.tools import aria2c_argv, aria2c_input, curl_config

HEADERS = {"Authorization": "Bearer t0k", "x-api-key": "key", "x-gw-ims-org-id": "org@AdobeOrg", "x-sandbox-name": "prod"}
FILES = [
    RemoteFile("http://127.0.0.1:1/data/foundation/export/files/b-1?path=part-0.parquet", Path("ds/b/b-1/part-0.parquet"), 10),
    RemoteFile("http://127.0.0.1:1/data/foundation/export/files/b-2?path=part-1.parquet", Path("ds/b/b-2/part-1.parquet"), 20),
]
SHA = {FILES[0].rel_path: "a" * 64, FILES[1].rel_path: "b" * 64}


def entries(text: str) -> list[list[str]]:
    """aria2c input entries: a URI line, then its indented option lines."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if line and not line.startswith(" "):
            out.append([line])
        elif line.strip():
            out[-1].append(line.strip())
    return out


def test_aria2c_sha_input_gives_every_file_its_own_checksum(tmp_path: Path) -> None:
    got = entries(aria2c_input(FILES, HEADERS, tmp_path, SHA))
    assert [e[0] for e in got] == [f.url for f in FILES]
    for entry, f in zip(got, FILES, strict=False):
        assert f"checksum=sha-256={SHA[f.rel_path]}" in entry
        assert [o for o in entry if o.startswith("checksum=")] == [f"checksum=sha-256={SHA[f.rel_path]}"]
        assert f"dir={tmp_path / f.rel_path.parent}" in entry and f"out={f.rel_path.name}" in entry
        assert sorted(o for o in entry if o.startswith("header=")) == sorted(f"header={k}: {v}" for k, v in HEADERS.items())


def test_plain_aria2c_input_has_no_checksum(tmp_path: Path) -> None:
    text = aria2c_input(FILES, HEADERS, tmp_path)
    assert "checksum" not in text and len(entries(text)) == 2


def test_aria2c_sha_input_refuses_a_file_without_a_digest(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        aria2c_input(FILES, HEADERS, tmp_path, {FILES[0].rel_path: "a" * 64})


def test_aria2c_resumes_with_its_control_file_only_in_the_resume_profile(tmp_path: Path) -> None:
    plain, resumed = aria2c_argv(tmp_path / "in", 16, False), aria2c_argv(tmp_path / "in", 16, True)
    assert "--continue=true" not in plain and "--continue=true" in resumed
    assert "--auto-save-interval=1" in resumed
    assert plain[plain.index("-j") + 1] == "16" and plain[plain.index("-x") + 1] == "1"


def test_curl_resumes_every_operation_not_just_the_first(tmp_path: Path) -> None:
    ops = curl_config(FILES, HEADERS, tmp_path, resume=True).split("\nnext\n")
    assert len(ops) == 2 and all('continue-at = "-"' in op for op in ops)
    assert "continue-at" not in curl_config(FILES, HEADERS, tmp_path)


def test_launcher_kills_the_tool_with_sigkill_when_asked(tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = run_measured(["sleep", "30"], timeout=60, log_dir=tmp_path, interrupt=lambda: time.monotonic() - t0 > 0.3)
    assert r.interrupted and r.rc == -9  # the SIGKILL landed on the tool, not on the launcher
    assert 0.1 < r.wall_s < 10 and not r.timed_out  # the launcher starts its clock after its own start-up


def test_launcher_reports_a_tool_that_was_never_interrupted(tmp_path: Path) -> None:
    r = run_measured(["sh", "-c", "exit 3"], timeout=60, log_dir=tmp_path, interrupt=lambda: False)
    assert not r.interrupted and r.rc == 3
