"""Never lose or corrupt a byte: faults, the response-time limit, kills, signals, hostile servers.

Everything runs against the real fake platform over loopback, with seeded (deterministic) faults.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import Settings
from engine.exporter import Exporter
from engine.fake import DatasetSpec, FakeConfig, FakePlatform, Faults


def settings_for(fp, out: Path, **export) -> Settings:
    return Settings.model_validate({
        "platform": {"url": fp.url, "org_id": fp.org_id, "sandbox": fp.sandbox},
        "auth": {"client_id": fp.client_id, "client_secret": fp.client_secret, "ims_url": fp.ims_url},
        "export": {"out_dir": out, "concurrency": 8, "backoff_base": 0.02, "backoff_cap": 0.5, **export},
        "datasets": [{"id": d} for d in fp.dataset_ids],
    })


def mismatches(fp, out: Path) -> list[str]:
    """Expected files missing or not byte-identical (by SHA-256) under out."""
    bad = []
    for e in fp.expected_files():
        p = out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != e.sha256:
            bad.append(str(p))
    return bad


def total_bytes(fp) -> int:
    return sum(e.size for e in fp.expected_files())


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.part")]


async def test_chaos_soak_every_fault_at_once(tmp_path):
    faults = Faults(
        p_429=0.1, retry_after_s=1, p_retry_after_date=0.3, p_5xx=0.05, p_error_body=0.05, p_reset=0.15,
        p_short_range=0.2, ignore_range=0.1, p_corrupt=0.05, send_digest=True, redirect=True,
        response_limit_s=0.3, bandwidth_bps=8e6, first_byte_delay_s=0.005, token_lifetime_s=2,
    )
    cfg = FakeConfig(seed=11, faults=faults, page_size=4, datasets=[
        DatasetSpec(files_per_dataset_file=6, rows_per_file=4000),
        DatasetSpec(files_per_dataset_file=5, rows_per_file=2500, length_as="number", metrics_form="old"),
        DatasetSpec(nested=True, files_per_dataset_file=3, rows_per_file=3000, listing_shape="object"),
        DatasetSpec(batch_key="related", dataset_files=2, files_per_dataset_file=3, rows_per_file=2000),
        DatasetSpec(files_per_dataset_file=8, rows_per_file=1500, success_marker=True, status_word="active"),
    ])
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out", response_time_limit=0.3), handle_signals=False).execute()
        stats = fp.stats
    assert run.exit_code == 0, run.errors or [b.errors for b in run.batches()]
    assert mismatches(fp, tmp_path / "out") == []
    assert leftovers(tmp_path / "out") == []
    injected = sum(stats.faults.values())
    assert injected > 20, stats.faults  # the soak really was chaotic
    assert stats.redirect_requests > 0 and not stats.redirect_saw_auth
    assert stats.requests["ims.token"] >= 2  # the 2 s token was renewed
    resent = run.totals["bytes_fetched"] - total_bytes(fp)
    assert resent < 0.5 * total_bytes(fp), (resent, total_bytes(fp))


async def test_files_larger_than_one_response_export_exactly(tmp_path):
    # 0.5 s responses at 4 MB/s carry at most ~2 MB: a 6 MiB part needs several ranged requests.
    faults = Faults(response_limit_s=0.5, bandwidth_bps=4e6)
    cfg = FakeConfig(seed=5, faults=faults, datasets=[DatasetSpec(files_per_dataset_file=2, file_mb=6)])
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out", response_time_limit=0.5), handle_signals=False).execute()
        sizes = [e.size for e in fp.expected_files()]
        downloads = fp.stats.requests["export.download"]
    assert min(sizes) > 4 * 2**20
    assert run.exit_code == 0, [b.errors for b in run.batches()]
    assert mismatches(fp, tmp_path / "out") == []
    assert downloads >= 2 * 3  # each file took several responses
    assert run.totals["bytes_fetched"] < 1.25 * sum(sizes)  # cut responses continue, they do not restart


async def test_digest_mismatch_is_refetched_never_kept(tmp_path):
    cfg = FakeConfig(seed=2, faults=Faults(p_corrupt=1.0, send_digest=True, max_faults_per_key=1),
                     datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=2000)])
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out"), handle_signals=False).execute()
        corrupted = fp.stats.faults["corrupt"]
    assert corrupted >= 3
    assert run.exit_code == 0
    assert run.totals["restarts"] >= 3
    assert mismatches(fp, tmp_path / "out") == []


async def test_error_bodies_are_never_saved_as_data(tmp_path):
    cfg = FakeConfig(seed=4, faults=Faults(p_error_body=1.0, max_faults_per_key=2),
                     datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=1000)])
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out"), handle_signals=False).execute()
        assert fp.stats.faults["error_body"] >= 3
    assert run.exit_code == 0
    assert mismatches(fp, tmp_path / "out") == []


async def test_stale_token_is_replaced_after_401(tmp_path):
    cfg = FakeConfig(seed=1, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=500)])
    async with FakePlatform(cfg) as fp:
        s = settings_for(fp, tmp_path / "out")
        s.auth.access_token = type(s.auth.access_token)("expired-or-bogus-token")
        run = await Exporter(s, handle_signals=False).execute()
        assert fp.stats.requests["ims.token"] == 1  # exchanged once, after the 401
    assert run.exit_code == 0


async def test_files_that_cannot_fit_fail_and_the_rerun_finishes(tmp_path, monkeypatch):
    """Less free space than any part: each file fails before a byte is fetched, saying so (a full
    disk mid-write stops the run as disk_full: test_resume_safety.py, test_distrust_disk.py)."""
    from engine.output import local

    class Usage:
        free = 10_000  # bytes: smaller than any part

    monkeypatch.setattr(local.shutil, "disk_usage", lambda _p: Usage)
    cfg = FakeConfig(seed=1, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=3000)])
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out"), handle_signals=False).execute()
        monkeypatch.undo()  # the disk has room again
        report = json.loads((tmp_path / "out" / "_report.json").read_text())
        assert run.exit_code == 1 and report["status"] == "failed"
        [batch] = report["datasets"][0]["batches"]
        assert batch["files_failed"] == 3 and all("cannot fit on the disk" in e and "10000 free" in e for e in batch["errors"])
        rerun = await Exporter(settings_for(fp, tmp_path / "out"), handle_signals=False).execute()
    assert rerun.exit_code == 0
    assert mismatches(fp, tmp_path / "out") == []


# -- process-level: SIGTERM/SIGINT (SIGKILL: test_kill_resume.py) ---------------------------------


def write_config(fp, path: Path, out: Path, concurrency: int = 4, discovery_concurrency: int = 16) -> Path:
    datasets = "\n".join(f'[[datasets]]\nid = "{d}"\n' for d in fp.dataset_ids)
    path.write_text(
        f'[platform]\nurl = "{fp.url}"\norg_id = "{fp.org_id}"\nsandbox = "{fp.sandbox}"\n'
        f'[auth]\nclient_id = "{fp.client_id}"\nclient_secret = "{fp.client_secret}"\nims_url = "{fp.ims_url}"\n'
        f'[export]\nout_dir = "{out}"\nconcurrency = {concurrency}\nbackoff_base = 0.05\n'
        f'discovery_concurrency = {discovery_concurrency}\n' + datasets
    )
    return path


def start_cli(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def slow_platform():
    # A bandwidth cap makes a run last ~2 s, so kills land mid-transfer.
    cfg = FakeConfig(seed=9, faults=Faults(bandwidth_bps=1.5e6), datasets=[
        DatasetSpec(files_per_dataset_file=6, rows_per_file=6000),
        DatasetSpec(files_per_dataset_file=4, rows_per_file=9000, page_size=2),
    ])
    fp = FakePlatform.run_in_thread(cfg)
    yield fp
    fp.stop()


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_writes_report_and_rerun_resumes(tmp_path, slow_platform, signum, code):
    fp = slow_platform
    out = tmp_path / "out"
    config = write_config(fp, tmp_path / "c.toml", out)
    fp.platform.reset_stats()
    proc = start_cli(config)
    deadline = time.monotonic() + 20
    while (not any(out.rglob("*.part")) or fp.stats.bytes_sent < 500_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    report = json.loads((out / "_report.json").read_text())
    assert report["status"] == "interrupted" and report["exit_code"] == code
    parts = list(out.rglob("*.part"))
    assert parts, "the signal did not land mid-transfer"
    states = [json.loads(p.with_name(p.name + ".ctl").read_text()) for p in parts]
    # a graceful stop syncs what it holds: a pod moved to another node resumes all of it
    assert all(st["synced"] == st["done"] for st in states) and any(st["done"] for st in states), states
    rerun = subprocess.run([sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert mismatches(fp.platform, out) == []
    assert json.loads((out / "_report.json").read_text())["status"] == "ok"


def test_no_secret_in_any_output_at_debug_level(tmp_path):
    cfg = FakeConfig(seed=3, faults=Faults(p_429=0.3, p_5xx=0.2, redirect=True, token_lifetime_s=1),
                     datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=500)])
    fp = FakePlatform.run_in_thread(cfg)
    try:
        out = tmp_path / "out"
        config = write_config(fp, tmp_path / "c.toml", out)
        argv = [sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--log-level", "debug", "--no-progress"]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        tokens = fp.issued_tokens
    finally:
        fp.stop()
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(tokens) >= 2  # the 1 s token was renewed: there is more than one token to look for
    texts = [res.stdout, res.stderr] + [p.read_text(errors="replace") for p in out.rglob("*.json*")]
    for secret in [fp.client_secret, *tokens]:
        assert all(secret not in t for t in texts), "a secret leaked into output"


# -- several ranges of one large file at once ----------------------------------------------------


async def test_a_lone_large_file_is_fetched_as_parallel_ranges_exactly(tmp_path):
    faults = Faults(bandwidth_bps=4e6, response_limit_s=0.5, p_reset=0.1, p_short_range=0.2, p_5xx=0.05)
    cfg = FakeConfig(seed=12, faults=faults, datasets=[DatasetSpec(files_per_dataset_file=1, file_mb=20)])
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out", response_time_limit=0.5), handle_signals=False).execute()
    assert run.exit_code == 0, [b.errors for b in run.batches()]
    assert run.totals["split_files"] == 1  # the idle connections helped the one file
    assert mismatches(fp, tmp_path / "out") == []
    assert not list((tmp_path / "out").rglob("*.split")) and leftovers(tmp_path / "out") == []


def _big_then_small(seed: int, faults: Faults, big_mb: float = 12) -> FakeConfig:
    """One big file listed first, then ten small ones: with 2 connections the big file starts
    as a single stream (more files are waiting), and the small ones are done long before it."""
    return FakeConfig(seed=seed, faults=faults, datasets=[
        DatasetSpec(files_per_dataset_file=1, file_mb=big_mb, batches=1, failed_batch=False, processing_batch=False),
        DatasetSpec(files_per_dataset_file=10, file_mb=0.3, batches=1, failed_batch=False, processing_batch=False)])


async def test_an_idle_connection_takes_over_the_tail_of_a_running_file(tmp_path):
    cfg = _big_then_small(15, Faults(bandwidth_bps=4e6))
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out", concurrency=2, discovery_concurrency=1),
                             handle_signals=False).execute()
        sent = dict(fp.stats.bytes_by_file)
    assert run.exit_code == 0, [b.errors for b in run.batches()]
    # only the big file got help, and only once the small ones no longer needed the connection
    assert run.totals["split_files"] == 1 and run.totals["tail_splits"] >= 1
    assert mismatches(fp, tmp_path / "out") == []
    assert not list((tmp_path / "out").rglob("*.split")) and leftovers(tmp_path / "out") == []
    big = max(fp.expected_files(), key=lambda e: e.size)
    # the main stream stops where the tail begins: little is sent twice
    assert sent[f"{big.dataset_file_id}/{big.name}"] <= big.size * 1.1


async def test_shared_tails_under_resets_ignored_and_short_ranges_stay_exact(tmp_path):
    """A reset main stream resumes with a Range; when that is answered with the whole file, the
    file starts over, and any helper still writing its tail must be stopped first."""
    faults = Faults(bandwidth_bps=4e6, p_reset=0.3, ignore_range=0.5, p_short_range=0.2, send_digest=True,
                    max_faults_per_key=6)
    cfg = _big_then_small(18, faults)
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out", concurrency=2, discovery_concurrency=1),
                             handle_signals=False).execute()
        injected = dict(fp.stats.faults)
    assert run.exit_code == 0, [b.errors for b in run.batches()]
    assert injected.get("reset", 0) >= 1 and injected.get("ignore_range", 0) >= 1, injected
    assert run.totals["tail_splits"] >= 1 and run.totals["restarts"] >= 1, run.totals
    assert mismatches(fp, tmp_path / "out") == []
    assert not list((tmp_path / "out").rglob("*.split")) and leftovers(tmp_path / "out") == []


async def test_a_200_to_a_ranged_resume_starts_the_file_over_from_that_body(tmp_path):
    # Every file is reset mid-body once; the ranged resume is then answered with the whole file.
    cfg = FakeConfig(seed=14, faults=Faults(p_reset=1.0, max_faults_per_key=1, ignore_range=True),
                     datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=20000)])
    async with FakePlatform(cfg) as fp:
        run = await Exporter(settings_for(fp, tmp_path / "out", concurrency=3), handle_signals=False).execute()
        resets, ignored = fp.stats.faults["reset"], fp.stats.faults["ignore_range"]
    assert resets >= 3 and ignored >= 3
    assert run.exit_code == 0, [b.errors for b in run.batches()]
    # every ignored Range started its file over from that very body (no request thrown away)
    assert run.totals["ignored_ranges"] == ignored == run.totals["restarts"]
    assert mismatches(fp, tmp_path / "out") == []
