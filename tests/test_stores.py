"""What S3 (moto) and Azure Blob (Azurite) must do alike, one test over both: kill -9 and SIGTERM
mid-upload (the same run, stopped part-way with parts uploaded or blocks staged, resumes from what
the store holds), and verify and inventory reading a prefix as a folder. Each store is read back
through its own client (tests/objectstores.py: S3Place, AzurePlace)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import clean_env, run_export
from objectstores import (
    PART,
    AzurePlace,
    S3Place,
    StoreWatcher,
    assert_stored,
    cli,
    engine_argv,
    events,
    kill_when,
    object_name,
    one_batch,
    one_batch_of,
    store_config,
    store_settings,
)

from engine.fake import FakeConfig, FakePlatform, Faults
from engine.output.buckettree import inventory, on_bucket
from engine.output.objectstore import staging_key
from engine.output.verify import verify_export

SEEDS = {"s3": {"kill": 62, "term": 66, "verify": 75, "refused": 64, "missing": 65},  # as each store's tests had them
         "az": {"kill": 82, "term": 86, "verify": 94, "refused": 84, "missing": 85}}


@pytest.fixture(params=["s3", "azure"])
def place(request: pytest.FixtureRequest) -> S3Place | AzurePlace:
    """A fresh bucket (moto) or container (Azurite)."""
    name = f"aep-{uuid.uuid4().hex[:12]}"
    if request.param == "s3":
        return S3Place(request.getfixturevalue("moto"), name)
    return AzurePlace(request.getfixturevalue("azurite"), name)


@pytest.fixture
def place_env(place: S3Place | AzurePlace, monkeypatch: pytest.MonkeyPatch) -> S3Place | AzurePlace:
    """The place, with the server's credentials in this process's standard variables (on_bucket reads them)."""
    for key, value in place.server.env().items():
        monkeypatch.setenv(key, value)
    return place


KILL_CASES = {
    # name: (files, MiB each, connections, kill once (parts uploaded or blocks staged, files under their final name) holds)
    "first-part": (3, 12, 2, lambda parts, finals: parts >= 1),
    # one connection: with two, both files run in step and the second's upload often completes
    # between the check and the kill (nothing mid-upload is left: the kill missed its point)
    "verified-files": (4, 12, 1, lambda parts, finals: parts >= 1 and finals >= 1),
    "parallel-ranges": (1, 40, 3, lambda parts, finals: parts >= 2),  # one file, several streams: parts out of order
}


def _kill_when(condition: Any, place: Any, prefix: str, proc: subprocess.Popen, fp: Any, total: int) -> dict[tuple[str, str], int]:
    """SIGKILL the run once `condition(parts in flight, files final)` holds with a fifth of the bytes
    still unsent; returns the parts (blocks) the dead run left in flight."""
    def progress() -> tuple[int, int]:
        return len(place.in_flight()), sum(1 for name in place.names(prefix + "/") if name.endswith(".parquet"))

    return kill_when(condition, progress, lambda: (place.in_flight(), place.names(prefix + "/")), proc, fp, total)


@pytest.mark.parametrize("case", list(KILL_CASES))
def test_kill_9_mid_upload_then_a_fresh_pod_resumes_the_uploads(tmp_path: Path, place: Any, fake_data_root: Path,
                                                                case: str) -> None:
    files, mib, connections, kill_when_ = KILL_CASES[case]
    cfg = FakeConfig(seed=SEEDS[place.tag]["kill"], faults=Faults(bandwidth_bps=3e6),
                     data_dir=fake_data_root / f"{place.tag}-kill-{case}",
                     datasets=[one_batch(files_per_dataset_file=files, file_mb=mib)])
    fp = FakePlatform.run_in_thread(cfg)
    try:
        expected = fp.expected_files()
        total = sum(e.size for e in expected)
        prefix = "k"
        pod1, pod2 = tmp_path / "pod1-spool", tmp_path / "pod2-spool"
        pod1.mkdir()
        pod2.mkdir()
        config = store_config(tmp_path / "c.toml", fp, place.url(prefix), concurrency=connections,
                              store=f'spool_dir = "{pod1}"\n')
        argv = engine_argv(config)
        env = clean_env(**place.server.env())
        with StoreWatcher(place.names, prefix, expected) as watcher:
            proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            parts_at_kill = _kill_when(kill_when_, place, prefix, proc, fp, total)
            finals_at_kill = {k: s for k, s in place.names(prefix + "/").items() if k in watcher.sizes}
            staging = f"{prefix}/.aep-export/uploads/"
            # completed uploads (committed staging blobs) not yet copied (one whose copy is done too is a leftover, not progress)
            staged_at_kill = {k: s for k, s in place.names(staging).items()
                              if f"{prefix}/" + k.removeprefix(staging).rpartition("/")[0] not in finals_at_kill}
            assert parts_at_kill and len(finals_at_kill) < len(expected), "the kill did not land mid-upload"
            assert any(p.suffix == ".part" for p in pod1.rglob("*")), "no part was on the pod's disk at the kill"
            print(f"{place.tag} {case}: killed with {len(parts_at_kill)} parts (blocks) in flight, {len(staged_at_kill)} staged, "
                  f"{len(finals_at_kill)} of {len(expected)} files verified")

            shutil.rmtree(pod1)  # the pod is gone, and its disk with it
            config.write_text(config.read_text().replace(str(pod1), str(pod2)))
            time.sleep(0.3)  # the dead client's sockets closed before counting afresh
            fp.platform.reset_stats()
            sent_before = place.parts_sent()
            rerun = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert not watcher.violations, watcher.violations[:5]
        assert watcher.listings > 20, "the watcher barely looked"
        assert_stored(place.read, prefix, expected)
        place.assert_nothing_in_flight()

        resumed = [ev for ev in events(rerun.stderr) if ev["event"] == "upload_resumed"]
        assert sum(ev["parts"] for ev in resumed) == len(parts_at_kill), resumed
        assert sum(ev["staged"] for ev in resumed) == len(staged_at_kill), resumed
        if sent_before is not None:  # a server that counts them (Azurite): the rerun staged only the blocks not held
            needed = sum(-(-e.size // PART) for e in expected if object_name(prefix, e) not in finals_at_kill
                         and not any(k.startswith(f"{staging}{object_name(prefix, e).removeprefix(prefix + '/')}/")
                                     for k in staged_at_kill))
            sent = (place.parts_sent() or 0) - sent_before
            assert sent <= needed - len(parts_at_kill), (sent, needed, len(parts_at_kill))
        missing = total - sum(parts_at_kill.values()) - sum(staged_at_kill.values()) - sum(finals_at_kill.values())
        taken = json.loads(place.read(f"{prefix}/_report.json"))["totals"]["bytes_fetched"]
        warnings = [ev for ev in events(rerun.stderr) if ev["level"] != "info"]
        assert taken <= missing, f"the rerun took {taken} bytes; {missing} were neither uploaded nor verified at the kill: {warnings}"
        # what the server sent may exceed that by what a stream reads past a range another stream took over
        assert fp.stats.bytes_sent <= missing + connections * (1 << 20), (fp.stats.bytes_sent, missing)
        print(f"{place.tag} {case}: the rerun took {taken} of {total} bytes ({missing} missing at the kill)")
        assert list(pod2.iterdir()) == [], "the spool folder was not cleaned up"
    finally:
        fp.stop()


def test_sigterm_mid_upload_keeps_the_parts_writes_the_report_and_the_rerun_resumes(tmp_path: Path, place: Any,
                                                                                  fake_data_root: Path) -> None:
    cfg = FakeConfig(seed=SEEDS[place.tag]["term"], faults=Faults(bandwidth_bps=3e6), data_dir=fake_data_root / f"{place.tag}-term",
                     datasets=[one_batch(files_per_dataset_file=2, file_mb=12)])
    fp = FakePlatform.run_in_thread(cfg)
    try:
        config = store_config(tmp_path / "c.toml", fp, place.url("t"), concurrency=2)
        argv = engine_argv(config)
        proc = subprocess.Popen(argv, env=clean_env(**place.server.env()), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not place.in_flight() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err[-2000:]
        parts = len(place.in_flight())
        assert parts >= 1, "the parts uploaded (blocks staged) before the signal were not kept"
        assert json.loads(place.read("t/_report.json"))["status"] == "interrupted"
        assert f"report: {place.url('t')}/_report.json" in out

        rerun = subprocess.run(argv, env=clean_env(**place.server.env()), cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert sum(ev["parts"] for ev in events(rerun.stderr) if ev["event"] == "upload_resumed") == parts
        assert_stored(place.read, "t", fp.expected_files())
        place.assert_nothing_in_flight()
    finally:
        fp.stop()


# ----------------------------------------------------------------------------- verify and inventory


def test_verify_and_inventory_read_a_prefix_as_a_folder(place_env: Any, threaded_fake) -> None:
    place = place_env
    fp = threaded_fake(one_batch_of(SEEDS[place.tag]["verify"]))
    expected = fp.expected_files()
    url = place.url("v")
    run = anyio.run(run_export, store_settings(fp, url))
    assert run.exit_code == 0, run.errors

    result = on_bucket(url, verify_export)
    assert (result.batches, result.files, result.problems) == (1, len(expected), [])
    assert on_bucket(url, lambda tree: verify_export(tree, deep=True)).problems == []
    held = on_bucket(url, inventory)
    assert [(b.status, b.success, b.files) for b in held.batches] == [("ok", True, len(expected))] and not held.in_flight

    victim = object_name("v", expected[0])
    data = bytearray(place.read(victim))
    data[100] ^= 0xFF
    place.write(victim, bytes(data))  # same size, other bytes
    rel = victim.removeprefix("v/")
    place.start_upload("v/" + staging_key(rel, expected[0].size, PART))
    problems = [str(p) for p in on_bucket(url, verify_export).problems]
    assert f"{rel}: SHA-256 differs from the manifest" in problems
    assert f"{rel}: incomplete download (rerun the export to finish it)" in problems
    assert any("_SUCCESS present but files do not verify" in p for p in problems), problems
    assert on_bucket(url, inventory).in_flight == [rel]


# ----------------------------------------------------------------------------- credentials, a missing bucket


def test_refused_credentials_exit_3_before_anything_and_print_no_secret(tmp_path: Path, place: Any, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=SEEDS[place.tag]["refused"]))
    config = store_config(tmp_path / "c.toml", fp, place.url("x"))
    wrong, secrets = place.wrong_credentials()
    proc = cli("run", "--config", str(config), "--json-logs", "--no-progress", server=place.server, cwd=tmp_path, **wrong)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "credentials" in out and place.url("x") in out and "Traceback" not in out
    for secret in secrets:
        assert secret not in out
    assert sum(fp.stats.requests.values()) == 0, "the platform was called although the store refused us"
    assert place.names() == {}


def test_a_missing_bucket_or_container_exits_2_naming_it_with_nothing_attempted(tmp_path: Path, place: Any,
                                                                                threaded_fake) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=SEEDS[place.tag]["missing"]))
    url = f"{place.scheme}://no-such-{place.kind}-aep/x"
    config = store_config(tmp_path / "c.toml", fp, url)
    proc = cli("run", "--config", str(config), "--json-logs", "--no-progress", server=place.server, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "configuration error" in proc.stderr and url in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sum(fp.stats.requests.values()) == 0
