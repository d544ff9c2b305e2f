"""Issue #23: a DLZ download killed with SIGKILL resumes like any other (the blob's ETag is the
resume validator), and a blob replaced between the two runs (a new ETag) is fetched whole. Azurite
serves the blobs through a proxy that paces its answers, so the kill lands mid-download."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import controls_under, parts_under
from dlz_support import PacedProxy, ProxiedAzuriteBlobs, dlz_expected

from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.ranges import RangeSet

RATE = 1.5e6  # bytes/s per connection through the proxy


@pytest.fixture
def paced(azurite):
    proxy = PacedProxy(azurite.port, RATE)
    yield proxy
    proxy.stop()


@pytest.fixture
def fp(azurite, paced: PacedProxy, fake_data_root: Path) -> Iterator[Any]:
    """The fake platform, its DLZ blobs in Azurite behind the pacing proxy."""
    cfg = FakeConfig(seed=2323, datasets=[DatasetSpec(batches=1, failed_batch=False, processing_batch=False,
                                                      files_per_dataset_file=4, file_mb=3)],
                     data_dir=fake_data_root / "dlz-kill")
    platform = FakePlatform.run_in_thread(cfg, blobs=ProxiedAzuriteBlobs(azurite, paced))
    yield platform
    platform.stop()


@dataclass
class Killed:
    """A run SIGKILLed part-way: its folder and config, the run's files, and the bytes each one held."""

    out: Path
    config: Path
    expected: list[Any]
    total: int
    kept: dict[str, int]


def run_and_kill(fp: Any, tmp_path: Path, held_share: int, part_way: int = 0) -> Killed:
    """Run the DLZ export, SIGKILL it once 1/`held_share` of its bytes are held (and a part-way file
    holds `part_way` bytes)."""
    out = tmp_path / "out"
    config = write_config(fp, tmp_path / "c.toml", out)
    proc = engine_run(config)
    # The run's files exist once its ad hoc run succeeded: wait for them through the fake.
    expected = wait_for_expected(fp, proc)
    total = sum(e.size for e in expected)
    kill_when_held(proc, out, total // held_share, total, part_way)
    return Killed(out, config, expected, total, kept_by_file(out, expected))


def write_config(fp: Any, path: Path, out: Path) -> Path:
    path.write_text(
        f'[platform]\nurl = "{fp.url}"\norg_id = "{fp.org_id}"\nsandbox = "{fp.sandbox}"\n'
        f'[auth]\nclient_id = "{fp.client_id}"\nclient_secret = "{fp.client_secret}"\nims_url = "{fp.ims_url}"\n'
        f'[export]\nout_dir = "{out}"\nconcurrency = 2\nbackoff_base = 0.05\n'
        f'[[datasets]]\nid = "{fp.dataset_ids[0]}"\nvia = "dlz"\n')
    return path


def engine_run(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def held(out: Path) -> tuple[int, int]:
    """Bytes the control files say are held and those of files already under their final name;
    and the bytes held by the fullest part-way file."""
    total = most = 0
    for ctl in controls_under(out):
        try:
            kept = RangeSet(tuple(r) for r in json.loads(ctl.read_text())["done"]).total
        except (ValueError, KeyError, OSError):
            continue  # mid-rename
        total, most = total + kept, max(most, kept)
    return total + sum(p.stat().st_size for p in out.rglob("*.parquet") if p.is_file()), most


def kill_when_held(proc: subprocess.Popen[str], out: Path, at_least: int, total: int, part_way: int = 0) -> None:
    """SIGKILL once `at_least` bytes are held (and a part-way file holds `part_way` of its bytes)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        kept, most = held(out)
        if at_least <= kept < total and most >= part_way and parts_under(out):
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
            return
        time.sleep(0.02)
    proc.kill()
    _, err = proc.communicate(timeout=30)
    pytest.fail(f"never reached the kill point (exit {proc.returncode}): {err[-1500:]}")


def kept_by_file(out: Path, expected: list[Any]) -> dict[str, int]:
    from conftest import control_of

    kept = {}
    for e in expected:
        final = out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name
        if final.is_file():
            kept[e.name] = e.size
        elif control_of(final).is_file():
            kept[e.name] = RangeSet(tuple(r) for r in json.loads(control_of(final).read_text())["done"]).total
        else:
            kept[e.name] = 0
    return kept


def rerun(config: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress",
                           "--json"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"doc": json.loads(done.stdout), "logs": [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")],
            "text": done.stdout + done.stderr}


def assert_identical(out: Path, expected: list[Any]) -> None:
    for e in expected:
        path = out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == e.sha256, path
    assert not parts_under(out) and not controls_under(out)


def test_kill_mid_download_then_rerun_fetches_only_the_rest(tmp_path: Path, fp: Any) -> None:
    killed = run_and_kill(fp, tmp_path, held_share=3)
    expected, total, kept = killed.expected, killed.total, killed.kept
    assert 0 < sum(kept.values()) < total
    finals = {e.name for e in expected if kept[e.name] == e.size}

    again = rerun(killed.config)
    assert_identical(killed.out, expected)
    assert fp.adhoc_requests == 1  # the rerun exported the same run (reuse_run_within)
    totals = again["doc"]["totals"]
    # A strong ETag (If-Range) identifies the held bytes: no byte is asked again to confirm them.
    assert totals["bytes_fetched"] == total - sum(kept.values())
    assert totals["files_reused"] >= len(finals)
    assert not [r for r in again["logs"] if r.get("event") in ("restarting_file", "file_changed_starting_over")]
    signatures = [dict(p.split("=", 1) for p in sas.split("&"))["sig"] for sas in fp.sas_issued]
    assert signatures and not any(sig in again["text"] for sig in signatures)  # the SAS: not in the CLI's logs or JSON


def test_a_blob_replaced_between_runs_is_fetched_whole(tmp_path: Path, fp: Any) -> None:
    killed = run_and_kill(fp, tmp_path, held_share=4, part_way=256 << 10)
    kept = killed.kept
    partial = [e for e in killed.expected if 0 < kept[e.name] < e.size]
    assert partial, f"no file was part-way at the kill: {kept}"
    changed = partial[0]
    new = replace_blob(fp, changed)  # same rows, other bytes: a new ETag

    again = rerun(killed.config)
    expected = dlz_expected(fp, fp.dataset_ids[0])
    assert_identical(killed.out, expected)
    (now,) = [e for e in expected if e.name == changed.name]
    assert now.sha256 == hashlib.sha256(new).hexdigest() != changed.sha256
    restarted = [r for r in again["logs"] if r.get("event") in ("restarting_file", "file_changed_starting_over")]
    assert [r["file"].rsplit("/", 1)[-1] for r in restarted] == [changed.name]
    # Fetched: what was missing of the other files, and the replaced one whole.
    others = sum(e.size - kept[e.name] for e in expected if e.name != changed.name)
    assert again["doc"]["totals"]["bytes_fetched"] == others + len(new)


def wait_for_expected(fp: Any, proc: subprocess.Popen[str]) -> list[Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = [r for r in fp.dlz_runs() if r.done and not r.failed]
        if runs:
            return dlz_expected(fp, fp.dataset_ids[0])
        if proc.poll() is not None:
            pytest.fail(f"the run ended first: {proc.communicate()[1][-1500:]}")
        time.sleep(0.02)
    pytest.fail("no DLZ run succeeded")


def replace_blob(fp: Any, e: Any) -> bytes:
    """Another version of one blob of the run, of the same size (same rows, other bytes), as a
    regenerated export would write it: only its ETag tells it apart from the held bytes."""
    (run,) = fp.dlz_runs()
    blobs = fp.blobs
    (name,) = [n for n, _, _ in run.files if n.endswith("/" + e.name)]
    client = blobs.service.get_blob_client(blobs.container, name)
    old = client.download_blob().readall()
    data = same_size_version(old)
    client.upload_blob(data, overwrite=True)
    return data


def same_size_version(old: bytes) -> bytes:
    """The same file with another writer name in its footer (same length): a valid parquet file of
    the same size whose held prefix is byte for byte the old one's. Only the ETag can tell the
    versions apart: a resume that trusted the held bytes would fetch only the rest."""
    writer = b"parquet-cpp-arrow version"
    assert old.count(writer) == 1
    new = old.replace(writer, b"parquet-cpp-arrow VERSION")
    assert pq.read_table(io.BytesIO(new)).num_rows == pq.read_table(io.BytesIO(old)).num_rows
    return new
