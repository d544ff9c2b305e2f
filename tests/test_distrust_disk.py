"""Issue #17, cases 6, 7 and 9: a full disk anywhere, two runs on one folder, a SIGTERM during
start-up.

- 6. No space while a batch is finished (`_SHA256SUMS`, manifest, `_SUCCESS`, `_LATEST`), while
  a control file or the report is written: one line, a report that says `disk_full` (or one line
  saying it could not be written), no temp file left, and the rerun once there is room is whole.
  A file listed larger than the disk fails alone; the others are exported.
- 7. A second run over a folder another run is writing refuses at once, naming it (exit 5); a
  run killed with -9 leaves nothing that blocks the next; shards of one Job run side by side.
- 9. A SIGTERM before the exporter's handlers exist ends like a later one: exit 143, a report
  saying `interrupted`.

A full disk is simulated in-process (no mount needed): the driver below makes every rename onto
a chosen name, and every rename after it, fail with ENOSPC, as a disk that fills up there would
fail each new atomic write; the driver records that the point was reached.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from conftest import assert_files_match, expected_path, read_report, run_export, settings_for, toml_config, with_data_dir
from liar import wrap

from engine.errors import ExportError
from engine.exporter import Exporter
from engine.fake import FakeConfig, FakePlatform
from engine.fake.server import ThreadedFakePlatform
from engine.layout import LATEST, MANIFEST, SUCCESS, SUMS
from engine.shard import Shard, share_of

EXIT_OK, EXIT_FAILED, EXIT_BUSY, EXIT_SIGTERM = 0, 1, 5, 143

# Runs the real CLI (engine.launch.entry, as the console script does) with two hooks:
#   DISK_FULL_AT=<name>   the first rename onto that name finds the disk full, and so does every
#                         rename after it; DISK_FULL_MARK names a file that records the point
#   DISK_FULL_EVERYWHERE  from then on, positional writes fail too (no rewrite in place either)
#   PAUSE_BEFORE=<module> stop before that module is imported: print one line, wait for one on stdin
DRIVER = r'''
import errno, os, sys

full_at, everywhere = os.environ.get("DISK_FULL_AT"), os.environ.get("DISK_FULL_EVERYWHERE") == "1"
real_replace, full = os.replace, []

def no_space(*_args, **_kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def replace(src, dst, *args, **kw):
    if not full and full_at and os.path.basename(os.fsdecode(dst)) == full_at:
        full.append(os.fsdecode(dst))
        with open(os.environ["DISK_FULL_MARK"], "w") as fh:
            fh.write(full[0])
        if everywhere:
            os.pwrite = os.pwritev = no_space
    if full:
        no_space()
    return real_replace(src, dst, *args, **kw)

os.replace = replace

class PauseBefore:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("PAUSE_BEFORE"):
            sys.meta_path.remove(self)
            print(f"paused before {name}; exporter loaded: {'engine.exporter' in sys.modules}", flush=True)
            sys.stdin.readline()
        return None

sys.meta_path.insert(0, PauseBefore())
sys.argv = ["aep-export", *sys.argv[1:]]
from engine.launch import entry
entry()
'''


def driver(tmp_path: Path) -> Path:
    path = tmp_path / "driver.py"
    path.write_text(DRIVER)
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AEP_EXPORT_", "DISK_FULL", "PAUSE_"))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})})


def leftovers(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tmp"))


def error_events(stderr: str, event: str) -> list[dict]:
    found = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def assert_whole_after_rerun(fp, out: Path, config: Path) -> None:
    """The rerun, once there is room, finishes the export; verify passes; data tools read it."""
    import pyarrow.dataset as ds

    rerun = cli("-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress")
    assert rerun.returncode == EXIT_OK, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert_files_match(out, fp.expected_files())
    verify = cli("-m", "engine", "verify", str(out))
    assert verify.returncode == 0, verify.stdout
    assert leftovers(out) == []
    for dataset in {e.dataset_id for e in fp.expected_files()}:
        ds.dataset(out / dataset, format="parquet").to_table()  # a stray non-data file would make this raise


# ----------------------------------------------------------------------------- case 6: disk full


@pytest.fixture
def small_threaded_fake(fake_data_root: Path):
    fp = FakePlatform.run_in_thread(with_data_dir(FakeConfig.small(n_datasets=2, files=3, rows=40, seed=61), fake_data_root))
    yield fp
    fp.stop()


@pytest.mark.parametrize("full_at, everywhere", [
    (SUMS, False), (MANIFEST, False), (SUCCESS, False), (LATEST, False),  # finishing a batch
    (MANIFEST, True),  # and no room even to rewrite the report in place
    ("_report.json", False),  # full from the start: the first report is the first write
])
def test_no_space_while_finishing_ends_in_one_line_and_a_report_that_says_so(
        full_at: str, everywhere: bool, tmp_path: Path, small_threaded_fake) -> None:
    fp = small_threaded_fake
    out, config, mark = tmp_path / "out", tmp_path / "c.toml", tmp_path / "disk-full-at"
    config.write_text(toml_config(fp, out))
    env = {"DISK_FULL_AT": full_at, "DISK_FULL_MARK": str(mark), "DISK_FULL_EVERYWHERE": "1" if everywhere else ""}

    run = cli(str(driver(tmp_path)), "run", "--config", str(config), "--json-logs", "--no-progress", env=env)

    assert mark.exists(), f"nothing was ever renamed onto {full_at}: the disk never filled"
    assert run.returncode == EXIT_FAILED, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(error_events(run.stderr, "disk_full")) == 1, run.stderr[-3000:]
    assert "aep-export: disk_full" in run.stdout and "free space and rerun" in run.stdout, run.stdout
    report = out / "_report.json"
    if everywhere or full_at == "_report.json":  # no room for any report: the one line says so
        assert "the report could not be written" in run.stderr, run.stderr[-2000:]
        assert not report.exists(), "a report that no longer tells the truth (it said running) was left"
    else:
        body = json.loads(report.read_text())
        assert (body["status"], body["exit_code"]) == ("disk_full", EXIT_FAILED), body
        assert "free space and rerun" in body["errors"][0], body["errors"]
        batches = [b for d in body["datasets"] for b in d["batches"]]
        assert any(b["status"] == "failed" and "batch files not written" in " ".join(b["errors"]) for b in batches), batches
    assert leftovers(out) == [], "temporary files were left behind"
    for e in fp.expected_files():  # no _SUCCESS over a batch whose files could not all be written
        folder = out / e.dataset_id / e.batch_id
        if (folder / SUCCESS).exists():
            assert json.loads((folder / MANIFEST).read_text())["status"] == "ok"

    assert_whole_after_rerun(fp, out, config)


async def test_no_space_for_a_control_file_stops_the_run_and_leaves_no_temp_file(tmp_path: Path, make_fake, monkeypatch) -> None:
    """A control file (the ranges a .part holds) is written once a second stream may fill the
    file: no space for it stops the run as disk_full, the .part is kept, no temp file stays."""
    real_replace, refused = os.replace, []

    def replace(src, dst, *args, **kw):
        if ".ctl" in os.path.basename(os.fsdecode(dst)):
            refused.append(os.fsdecode(dst))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kw)

    async with make_fake(FakeConfig.sized(total_mb=6, files=1, seed=62)) as fp:
        out = tmp_path / "out"
        monkeypatch.setattr(os, "replace", replace)
        run = await run_export(settings_for(fp, out, concurrency=4))
        monkeypatch.undo()

        assert refused, "no control file was written: the disk never filled where meant"
        report = read_report(out)
        assert (run.exit_code, report["status"]) == (EXIT_FAILED, "disk_full"), report
        assert "free space and rerun" in report["errors"][0], report["errors"]
        assert leftovers(out) == [], "temporary files were left behind"

        rerun = await run_export(settings_for(fp, out, concurrency=4))
        assert rerun.exit_code == EXIT_OK, read_report(out)
        assert_files_match(out, fp.expected_files())
        assert leftovers(out) == []


async def test_no_space_for_the_journals_last_fsync_leaves_the_run_as_it_was(tmp_path: Path, make_fake, monkeypatch) -> None:
    """On NFS a full disk may show only at the journal's last fsync, after the report is written:
    the run's outcome stands (exit 0 here), no traceback, and the rerun fetches nothing."""
    real_fsync, refused = os.fsync, []

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            refused.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    async with make_fake(FakeConfig.small(n_datasets=1, files=2, rows=40, seed=66)) as fp:
        out = tmp_path / "out"
        monkeypatch.setattr(os, "fsync", fsync)
        run = await run_export(settings_for(fp, out))
        monkeypatch.undo()

        assert refused, "the journal was never fsynced"
        assert (run.exit_code, read_report(out)["status"]) == (EXIT_OK, "ok")
        fp.reset_stats()
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
        assert fp.stats.requests["export.download"] == 0


async def test_a_file_listed_larger_than_the_disk_fails_alone(tmp_path: Path, make_fake) -> None:
    """One part listed at a petabyte: that file fails before a byte is fetched, saying it cannot
    fit (size and free space); every other file is exported and the other dataset is complete."""
    fp = make_fake(FakeConfig.small(n_datasets=2, files=3, rows=40, seed=63))
    victim = fp.expected_files()[0]
    petabyte = 1 << 50
    lied: list[str] = []

    async def listed_at_a_petabyte(original, request: web.Request) -> web.StreamResponse:
        response = await original(request)
        if "path" in request.query or request.match_info["id"] != victim.dataset_file_id:
            return response
        body = json.loads(response.body)
        for item in body["data"]:
            if item.get("name") == victim.name:
                item["length"] = petabyte
                lied.append(item["name"])
        return web.json_response(body)

    wrap(fp, "h_files", listed_at_a_petabyte)
    async with fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))

        assert lied, "the listing was never changed"
        report = read_report(out)
        assert (run.exit_code, report["status"]) == (EXIT_FAILED, "failed"), report  # not disk_full: the others fit
        assert fp.stats.bytes_by_file[f"{victim.dataset_file_id}/{victim.name}"] == 0
        final = expected_path(out, victim)
        assert not final.exists() and not final.with_name(final.name + ".part").exists()
        others = [e for e in fp.expected_files() if expected_path(out, e) != final]
        assert len(others) == 5
        assert_files_match_some(out, others)
        for d in report["datasets"]:
            [batch] = d["batches"]
            if d["dataset_id"] == victim.dataset_id:
                assert batch["status"] == "failed" and batch["files_failed"] == 1, batch
                assert "cannot fit on the disk" in batch["errors"][0] and str(petabyte) in batch["errors"][0], batch
                assert not (out / victim.dataset_id / victim.batch_id / SUCCESS).exists()
            else:
                assert batch["status"] == "ok" and (out / d["dataset_id"] / batch["batch_id"] / SUCCESS).exists()


def assert_files_match_some(out: Path, expected) -> None:
    from conftest import sha256_of

    for e in expected:
        path = expected_path(out, e)
        assert path.is_file() and sha256_of(path) == e.sha256, f"{path} missing or wrong"


# ----------------------------------------------------------------------------- case 7: one run per folder


@pytest.fixture
def gated_fake(fake_data_root: Path):
    """A threaded fake whose downloads wait until the test opens the gate; `asked` is set at the
    first download request (the run asking holds the folder by then)."""
    platform = FakePlatform(with_data_dir(FakeConfig.small(n_datasets=2, files=2, rows=40, seed=64), fake_data_root))
    asked, gate = threading.Event(), asyncio.Event()

    async def held(original, request: web.Request) -> web.StreamResponse:
        if "path" in request.query:
            asked.set()
            await gate.wait()
        return await original(request)

    wrap(platform, "h_files", held)
    fp = ThreadedFakePlatform(platform)

    def open_gate() -> None:
        fp._loop.call_soon_threadsafe(gate.set)

    yield fp, asked, open_gate
    open_gate()
    fp.stop()


def _start_run(tmp_path: Path, fp: Any) -> tuple[Path, list[str], subprocess.Popen[str]]:
    """A run of the CLI into tmp_path/out, started in the background: (out, its arguments, the process)."""
    out, config = tmp_path / "out", tmp_path / "c.toml"
    config.write_text(toml_config(fp, out))
    cmd = ["-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"]
    return out, cmd, subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_run_over_the_same_folder_refuses_naming_the_first(tmp_path: Path, gated_fake) -> None:
    fp, asked, open_gate = gated_fake
    out, cmd, first = _start_run(tmp_path, fp)
    try:
        assert asked.wait(60), "the first run never started downloading"
        started_at = read_report(out)["started_at"]  # the first run's, status running
        tokens = fp.stats.requests["ims.token"]

        second = cli(*cmd, timeout=30)  # refused at once (without the lock, it would wait at the gate)

        assert first.poll() is None, "the first run was over before the second one started"
        assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
        line = second.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert f"pid {first.pid}" in line and socket.gethostname() in line and started_at in line, line
        assert fp.stats.requests["ims.token"] == tokens, "the refused run contacted the platform"
        assert read_report(out)["status"] == "running", "the refused run wrote over the first run's report"
    finally:
        open_gate()
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == EXIT_OK, stdout[-2000:] + stderr[-2000:]
    assert_files_match(out, fp.expected_files())
    assert read_report(out)["status"] == "ok"


def test_a_run_killed_with_minus_9_does_not_block_the_next(tmp_path: Path, gated_fake) -> None:
    fp, asked, open_gate = gated_fake
    out, cmd, first = _start_run(tmp_path, fp)
    try:
        assert asked.wait(60), "the first run never started downloading"
        lock = out / ".aep-export" / "lock"
        assert json.loads(lock.read_text())["pid"] == first.pid, "the killed run did not hold the folder's lock"
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL

    open_gate()
    rerun = cli(*cmd)
    assert rerun.returncode == EXIT_OK, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert_files_match(out, fp.expected_files())


async def test_shards_run_side_by_side_and_an_unsharded_run_overlapping_them_refuses(tmp_path: Path, make_fake) -> None:
    """Both shards of a Job hold their locks at once (their token requests are held until both
    arrived); an unsharded run started meanwhile refuses, naming both; the shards then finish."""
    fp = make_fake(FakeConfig.small(n_datasets=4, files=2, rows=40, seed=65))
    both_waiting, release, waiting = anyio.Event(), anyio.Event(), [0]

    async def hold_the_shards(original, request: web.Request) -> web.StreamResponse:
        waiting[0] += 1
        if waiting[0] <= 2:  # the two shards; anything later goes through
            if waiting[0] == 2:
                both_waiting.set()
            await release.wait()
        return await original(request)

    wrap(fp, "h_token", hold_the_shards)
    async with fp:
        out = tmp_path / "out"
        settings = settings_for(fp, out)
        shards = [Shard(0, 2), Shard(1, 2)]
        assert all(share_of(settings.datasets, [], s).datasets for s in shards), "a shard with nothing to do"
        runs = {}

        async def run_shard(shard: Shard) -> None:
            runs[shard.index] = await Exporter(settings_for(fp, out), handle_signals=False, shard=shard).execute()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for shard in shards:
                    tg.start_soon(run_shard, shard)
                await both_waiting.wait()
                try:
                    with pytest.raises(ExportError) as refused:
                        await run_export(settings_for(fp, out))
                    assert type(refused.value).__name__ == "DestinationBusy"
                finally:
                    release.set()

        assert "shard 0/2" in str(refused.value) and "shard 1/2" in str(refused.value), str(refused.value)
        assert not (out / "_report.json").exists(), "the refused run wrote a report"
        assert [runs[0].exit_code, runs[1].exit_code] == [EXIT_OK, EXIT_OK]
        assert_files_match(out, fp.expected_files())


def test_the_locks_one_run_per_folder_shards_side_by_side(tmp_path: Path) -> None:
    """The lock rules alone: a second unsharded run and a shard refuse while an unsharded run
    holds the folder; two shards hold it together, a second run of one shard refuses; every lock
    is free again once its holder is done."""
    from engine.output.runlock import hold_destination

    def refused(shard: str | None) -> str:
        with pytest.raises(ExportError) as busy, hold_destination(tmp_path, shard, "later"):
            pass
        assert type(busy.value).__name__ == "DestinationBusy"
        return str(busy.value)

    with hold_destination(tmp_path, None, "2026-01-01T00:00:00+00:00"):
        assert f"pid {os.getpid()}" in refused(None) and "started 2026-01-01T00:00:00+00:00" in refused("0/2")
    with hold_destination(tmp_path, "0/2", "t0"), hold_destination(tmp_path, "1/2", "t1"):
        assert "shard 1/2" in refused("1/2") and "shard 0/2" not in refused("1/2")
        message = refused(None)
        assert "shard 0/2" in message and "shard 1/2" in message, message
    with hold_destination(tmp_path, None, "t2"):
        pass


# ----------------------------------------------------------------------------- case 9: early SIGTERM


def test_a_sigterm_during_start_up_ends_like_a_later_one(tmp_path: Path, small_threaded_fake) -> None:
    """SIGTERM while the CLI is still being imported (the exporter's handlers cannot exist yet):
    exit 143 and a report saying interrupted, as for a SIGTERM mid-run; nothing was fetched."""
    fp = small_threaded_fake
    out, config = tmp_path / "out", tmp_path / "c.toml"
    config.write_text(toml_config(fp, out))
    proc = subprocess.Popen([sys.executable, str(driver(tmp_path)), "run", "--config", str(config), "--json-logs", "--no-progress"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PAUSE_BEFORE": "engine.cli"})
    try:
        paused = proc.stdout.readline()
        assert paused.startswith("paused before engine.cli; exporter loaded: False"), paused + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_SIGTERM, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    report = read_report(out)
    assert (report["status"], report["exit_code"]) == ("interrupted", EXIT_SIGTERM), report
    assert fp.stats.requests["export.download"] == 0
    assert [e.get("during_start_up") for e in error_events(stderr, "interrupted")] == [True], stderr[-2000:]
