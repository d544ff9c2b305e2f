"""kill -9 at seeded points mid-transfer, then the same command again.

Every case asserts that the kill landed where it meant to (bytes still flowing, and for the split
cases a file held in several ranges on disk), that the rerun ends byte-identical with nothing left
behind, and what the rerun fetched, in two parts:
- exactly: it fetches what the killed run did not keep (its final files, the ranges its control
  files list, or its .part files as prefixes), not a byte more but the few KiB per held range
  asked again to confirm the file did not change (transfer/validators.py: the fake sends no ETag);
- bounded: what the killed run received but did not keep (a write buffer, a control file not yet
  rewritten) is at most about one second of transfer per connection (plus what the socket
  buffers held on its way: sent by the server, never read).
Together: the rerun fetches no more than what was missing plus about a second per connection.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.fake import DatasetSpec, FakeConfig, FakePlatform, Faults
from engine.output.control import control_path, part_path
from engine.transfer.ranges import RangeSet
from engine.transfer.validators import resume_windows

SLOW, FAST = 250e3, 4e6  # bytes/s per response
IN_FLIGHT = 256 << 10  # per connection: sent by the server, still in socket buffers at the kill


def _one_batch(**spec) -> DatasetSpec:
    return DatasetSpec(batches=1, failed_batch=False, processing_batch=False, **spec)


@dataclass(frozen=True)
class Case:
    name: str
    datasets: tuple[DatasetSpec, ...]
    rate: float
    concurrency: int
    split: bool  # the kill must land while some file is held in several ranges
    discovery_concurrency: int = 16


CASES = [
    Case("slow-files", (_one_batch(files_per_dataset_file=8, file_mb=0.6),), SLOW, 4, False),
    Case("fast-files", (_one_batch(files_per_dataset_file=8, file_mb=5),), FAST, 4, False),
    Case("slow-parallel-ranges", (_one_batch(files_per_dataset_file=1, file_mb=5),), SLOW, 4, True),
    Case("fast-parallel-ranges", (_one_batch(files_per_dataset_file=1, file_mb=40),), FAST, 4, True),
    # One big file listed first, then small ones: with 2 connections the big file starts alone and
    # a connection freed by the small files later takes over half of what it has left.
    Case("tail-sharing", (_one_batch(files_per_dataset_file=1, file_mb=24),
                          _one_batch(files_per_dataset_file=10, file_mb=0.3)), FAST, 2, True, 1),
]


def write_config(fp, path: Path, out: Path, case: Case) -> Path:
    datasets = "\n".join(f'[[datasets]]\nid = "{d}"\n' for d in fp.dataset_ids)
    path.write_text(
        f'[platform]\nurl = "{fp.url}"\norg_id = "{fp.org_id}"\nsandbox = "{fp.sandbox}"\n'
        f'[auth]\nclient_id = "{fp.client_id}"\nclient_secret = "{fp.client_secret}"\nims_url = "{fp.ims_url}"\n'
        f'[export]\nout_dir = "{out}"\nconcurrency = {case.concurrency}\nbackoff_base = 0.05\n'
        f'discovery_concurrency = {case.discovery_concurrency}\n' + datasets)
    return path


def run_cli(config: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def held_ranges(out: Path) -> dict[str, list[list[int]]]:
    """What each control file says its .part holds (a control file mid-rename is skipped)."""
    found = {}
    for ctl in out.rglob("*.part.ctl"):
        try:
            found[str(ctl.relative_to(out))] = json.loads(ctl.read_text())["done"]
        except (OSError, ValueError, KeyError):
            continue
    return found


def kill_mid_transfer(fp, proc: subprocess.Popen, out: Path, total: int, fraction: float, split: bool) -> dict[str, int]:
    """SIGKILL once `fraction` of the bytes were sent (and, for split cases, once a control file
    holds several ranges); returns the bytes sent per file at that moment."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        sent = fp.stats.bytes_sent
        if sent >= fraction * total and (not split or any(len(r) >= 2 for r in held_ranges(out).values())):
            before = dict(fp.stats.bytes_by_file)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
            return before
        time.sleep(0.01)
    proc.kill()
    _, err = proc.communicate(timeout=30)
    pytest.fail(f"never reached the kill point (exit {proc.returncode}): {err[-1500:]}")


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kill_mid_transfer_then_rerun_fetches_only_what_was_missing(tmp_path: Path, fake_data_root: Path, case: Case, seed: int):
    cfg = FakeConfig(seed=40 + seed, faults=Faults(bandwidth_bps=case.rate), datasets=list(case.datasets),
                     data_dir=fake_data_root / f"kill-{case.name}-{seed}")
    fp = FakePlatform.run_in_thread(cfg)
    try:
        expected = fp.expected_files()
        total = sum(e.size for e in expected)
        out = tmp_path / "out"
        config = write_config(fp, tmp_path / "c.toml", out, case)
        fraction = random.Random(f"{case.name}/{seed}").uniform(0.3, 0.7)

        sent_before = kill_mid_transfer(fp, run_cli(config), out, total, fraction, case.split)
        sent_total = sum(sent_before.values())
        assert fraction * total <= sent_total < total, "the kill did not land mid-transfer"
        parts = list(out.rglob("*.part"))
        assert parts, "no file was in flight at the kill"
        if case.split:
            assert any(len(r) >= 2 for r in held_ranges(out).values()), "no file was held in several ranges"

        verified_before = {p: _sha256(p) for p in out.rglob("*.parquet")}
        kept = sum(_kept(out, e) for e in expected)
        windows = sum(_windows(out, e) for e in expected)

        time.sleep(0.3)  # let the server notice the dead client's sockets before counting afresh
        fp.platform.reset_stats()
        rerun = subprocess.run([sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"],
                               capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        for e in expected:
            path = out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name
            assert path.is_file() and path.stat().st_size == e.size, path
            assert _sha256(path) == e.sha256, f"{path} differs from the source"
        assert not list(out.rglob("*.part")) and not list(out.rglob("*.ctl"))
        for path, digest in verified_before.items():  # a final name is only ever the verified file
            key = "/".join(path.relative_to(out).parts[2:])
            assert fp.stats.bytes_by_file.get(key, 0) == 0, f"{key} was verified before the kill but fetched again"
            assert _sha256(path) == digest

        refetched = fp.stats.bytes_sent
        # a stream whose range another connection takes over stops reading mid-response: what the
        # server had already sent past the split point (socket buffers) is sent again
        splits = json.loads((out / "report.json").read_text())["totals"]["tail_splits"]
        assert total - kept <= refetched <= total - kept + windows + splits * IN_FLIGHT, (
            f"rerun fetched {refetched} bytes; the killed run kept all but {total - kept}; {windows} to confirm; {splits} splits")
        lost = sent_total - kept  # received (or still in a socket buffer) at the kill, not kept
        allowed = case.concurrency * (1.2 * case.rate + IN_FLIGHT)
        assert lost <= allowed, f"{lost} bytes sent before the kill were not kept (allowed {allowed:.0f})"
    finally:
        fp.stop()


def _kept(out: Path, e) -> int:
    """Bytes of this file the killed run left for the rerun to trust."""
    return _held(out, e).total


def _windows(out: Path, e) -> int:
    """Held bytes the rerun asks again to confirm them."""
    return sum(end - start for start, end in resume_windows(_held(out, e), e.size))


def _held(out: Path, e) -> RangeSet:
    final = out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name
    if final.is_file():
        return RangeSet([(0, e.size)])
    ctl, part = control_path(final), part_path(final)
    if ctl.is_file():
        return RangeSet(tuple(r) for r in json.loads(ctl.read_text())["done"])
    return RangeSet([(0, part.stat().st_size)]) if part.is_file() else RangeSet()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
