"""SIGTERM mid-transfer keeps every byte held, and the rerun never asks for one of them again.

test_reliability.py's signal test checks exit codes and that a rerun ends well; it sends the
signal whatever state the run reached and would pass if the interrupted files lost their bytes
(proved: discarding the .part on interrupt passes it). Here the signal is sent only once bytes are
on disk, and every request of the rerun is checked against what the interrupted run left.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from conftest import assert_files_match, control_of, expected_path, part_of, toml_config, with_data_dir

from engine.fake import DatasetSpec, FakeConfig, FakePlatform, Faults
from engine.fake.server import ThreadedFakePlatform
from engine.ranges import RangeSet
from engine.validators import resume_windows


@pytest.fixture
def recording_fake(fake_data_root: Path):
    """A slow fake that records (file, first byte asked for) for every download request."""
    cfg = FakeConfig(seed=57, faults=Faults(bandwidth_bps=0.5e6), datasets=[
        DatasetSpec(files_per_dataset_file=4, file_mb=1.5, batches=1, failed_batch=False, processing_batch=False)])
    platform = FakePlatform(with_data_dir(cfg, fake_data_root))
    asked: list[tuple[str, int]] = []
    original = platform.h_files

    async def h_files(request: web.Request) -> web.StreamResponse:
        if "path" in request.query:
            m = re.match(r"bytes=(\d+)-", request.headers.get("Range", ""))
            asked.append((f"{request.match_info['id']}/{request.query['path']}", int(m.group(1)) if m else 0))
        return await original(request)

    platform.h_files = h_files
    fp = ThreadedFakePlatform(platform)
    yield fp, asked
    fp.stop()


def _held(final: Path, size: int) -> RangeSet:
    """What the engine will trust for this file: all of it once committed, else the control
    file's ranges, else the .part as a prefix."""
    if final.exists():
        return RangeSet([(0, size)])
    if control_of(final).exists():
        return RangeSet(tuple(r) for r in json.loads(control_of(final).read_text())["done"])
    part = part_of(final)
    return RangeSet([(0, part.stat().st_size)]) if part.exists() else RangeSet()


def test_sigterm_keeps_held_bytes_and_the_rerun_never_asks_for_them(tmp_path: Path, recording_fake) -> None:
    fp, asked = recording_fake
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, out).replace("concurrency = 4", "concurrency = 2"))
    cmd = [sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"]
    expected = {f"{e.dataset_file_id}/{e.name}": e for e in fp.expected_files()}  # keyed as the fake keys them
    files = {k: expected_path(out, e) for k, e in expected.items()}

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before: dict[str, RangeSet] = {}
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            before = {k: _held(f, expected[k].size) for k, f in files.items()}
        except OSError:  # a file committed while we looked
            continue
        if any(0 < h.total < expected[k].size for k, h in before.items()):
            break
        time.sleep(0.01)
    part_way = [k for k, h in before.items() if 0 < h.total < expected[k].size]
    assert part_way and proc.poll() is None, "the signal would not land mid-transfer (no file part-way, or run over)"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]

    held = {k: _held(f, expected[k].size) for k, f in files.items()}
    for k, h in before.items():  # what was held when the signal came is still held
        assert all(held[k].covers(a, b) for a, b in h), f"{k}: {h.as_list()} held at the signal, {held[k].as_list()} after it"

    fp.platform.cfg.faults.bandwidth_bps = None  # the rerun at full speed
    asked.clear()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_files_match(out, list(expected.values()))
    for k, h in held.items():
        starts = [s for key, s in asked if key == k]
        confirming = {start for start, _ in resume_windows(h, expected[k].size)}  # a few KiB asked again (the fake sends no ETag)
        inside = [s for s in starts if h.end_of_run(s) > s and s not in confirming]
        assert not inside, f"{k}: asked again from inside {h.as_list()}: {starts}"
        if h.total == expected[k].size:
            assert starts == [], f"{k} was complete but fetched again"
