"""Export straight into object storage, against a real S3-compatible server (moto, loopback, HTTP).

The bucket is read back with boto3 (not the engine's code), DuckDB and pyarrow. Parts are 5 MiB
(S3's minimum, the engine's lowest allowed) so a few MiB of data exercise multipart uploads.
What this file shares with the Azure one (tests/test_azure_export.py) is in tests/objectstores.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env
from objectstores import (
    StoreWatcher,
    assert_duckdb_counts,
    assert_stored,
    duckdb_with,
    engine_argv,
    events,
    kill_when,
    object_name,
    one_batch,
    store_config,
)
from objectstores import cli as store_cli
from s3server import REGION, MotoServer

from engine.fake import FakeConfig, FakePlatform, Faults
from engine.fake.data import ExpectedFile
from engine.layout import LATEST, MANIFEST, SUCCESS, SUMS


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    name = f"aep-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(name)
    return name


def assert_objects_match(moto: MotoServer, bucket: str, prefix: str, expected: list[ExpectedFile]) -> None:
    assert_stored(lambda key: moto.read(bucket, key), prefix, expected)


def cli(*args: str, moto: MotoServer, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return store_cli(*args, server=moto, cwd=cwd, timeout=timeout, **env)


# ----------------------------------------------------------------------------- a whole export


def test_export_into_a_bucket_is_byte_identical_verified_reusable_and_readable(tmp_path: Path, moto: MotoServer,
                                                                               bucket: str, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig(seed=61, datasets=[
        one_batch(files_per_dataset_file=2, file_mb=7),  # two parts each: multipart upload, staging, copy
        one_batch(files_per_dataset_file=3, rows_per_file=200, success_marker=True),  # one part: one PutObject
    ]))
    expected = fp.expected_files()
    prefix = "exports/daily"
    config = store_config(tmp_path / "c.toml", fp, str(tmp_path / "local-out"))
    # --out wins over the config file's folder; a Path would have collapsed "s3://" to "s3:/"
    proc = cli("run", "--config", str(config), "--out", f"s3://{bucket}/{prefix}/", "--json-logs", "--no-progress",
               moto=moto, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(line.startswith("{") for line in proc.stderr.splitlines() if line.strip()), proc.stderr[-3000:]
    assert not (tmp_path / "local-out").exists()
    assert_objects_match(moto, bucket, prefix, expected)

    batches = {(e.dataset_id, e.batch_id) for e in expected}
    batch_files = {f"{prefix}/{d}/{b}/{name}" for d, b in batches for name in (SUMS, MANIFEST, SUCCESS)}
    pointers = {f"{prefix}/{d}/{LATEST}" for d, _ in batches}
    assert set(moto.keys(bucket)) == {object_name(prefix, e) for e in expected} | batch_files | pointers | {f"{prefix}/_report.json"}
    assert moto.uploads(bucket) == [], "a multipart upload was left behind"
    for d, b in batches:
        sums = moto.read(bucket, f"{prefix}/{d}/{b}/{SUMS}").decode()
        assert moto.read(bucket, f"{prefix}/{d}/{LATEST}").decode() == b + "\n"
        mine = sorted((f"{e.dataset_file_id}/{e.name}", e.sha256) for e in expected if (e.dataset_id, e.batch_id) == (d, b))
        assert sums == "".join(f"{sha}  {rel}\n" for rel, sha in mine)
        manifest = json.loads(moto.read(bucket, f"{prefix}/{d}/{b}/_manifest.json"))
        assert manifest["status"] == "ok" and manifest["records_found"] == manifest["records_expected"] is not None
    for e in expected:  # the verified digest travels with the object: the rerun's journal
        head = moto.client.head_object(Bucket=bucket, Key=object_name(prefix, e))
        assert head["Metadata"]["aep-export-sha256"] == e.sha256
    totals = json.loads(moto.read(bucket, f"{prefix}/_report.json"))["totals"]
    assert totals["files_downloaded"] == len(expected) and totals["restarts"] == 0, totals

    fp.platform.reset_stats()
    rerun = cli("run", "--config", str(config), "--out", f"s3://{bucket}/{prefix}", "--json-logs", "--no-progress",
                moto=moto, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert fp.stats.bytes_sent == 0, "the rerun fetched files the bucket already holds verified"
    assert json.loads(moto.read(bucket, f"{prefix}/_report.json"))["totals"]["files_reused"] == len(expected)

    check = cli("verify", f"s3://{bucket}/{prefix}", moto=moto, cwd=tmp_path)
    summary = f"OK: {len(batches)} batches, {len(expected)} files"
    assert check.returncode == 0 and check.stdout.startswith(summary), check.stdout + check.stderr
    status = cli("status", f"s3://{bucket}/{prefix}", "--json", moto=moto, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["complete"] and {r["batch"] for r in json.loads(status.stdout)["rows"]} == {b for _, b in batches}
    moto.client.delete_object(Bucket=bucket, Key=f"{prefix}/{min(batches)[0]}/{min(batches)[1]}/{SUCCESS}")  # one batch no longer complete
    status = cli("status", f"s3://{bucket}/{prefix}", moto=moto, cwd=tmp_path)
    assert status.returncode == 1 and "INCOMPLETE" in status.stdout, status.stdout + status.stderr

    rows = {e.dataset_file_id + "/" + e.name: None for e in expected}
    for d, b in batches:
        for f in json.loads(moto.read(bucket, f"{prefix}/{d}/{b}/_manifest.json"))["files"]:
            rows[f["path"]] = f["rows"]
    assert_duckdb_reads(moto, bucket, prefix, expected, rows)
    assert_pyarrow_reads(moto, bucket, prefix, expected, rows)


def assert_duckdb_reads(moto: MotoServer, bucket: str, prefix: str, expected: list[ExpectedFile], rows: dict) -> None:
    con = duckdb_with("httpfs", "duckdb-ext-httpfs")
    host = moto.endpoint.removeprefix("http://")
    con.execute(f"CREATE SECRET moto (TYPE s3, KEY_ID '{moto.access_key}', SECRET '{moto.secret_key}', "
                f"REGION '{REGION}', ENDPOINT '{host}', USE_SSL false, URL_STYLE 'path')")
    assert_duckdb_counts(con, f"s3://{bucket}", prefix, expected, rows)


def assert_pyarrow_reads(moto: MotoServer, bucket: str, prefix: str, expected: list[ExpectedFile], rows: dict) -> None:
    import pyarrow.parquet as pq
    from pyarrow.fs import S3FileSystem

    fs = S3FileSystem(access_key=moto.access_key, secret_key=moto.secret_key, region=REGION,
                      endpoint_override=moto.endpoint, scheme="http")
    for e in expected:
        assert pq.read_table(f"{bucket}/{object_name(prefix, e)}", filesystem=fs).num_rows == rows[f"{e.dataset_file_id}/{e.name}"]


# ----------------------------------------------------------------------------- kill -9 and a fresh pod


def bucket_watcher(moto: MotoServer, bucket: str, prefix: str, expected: list[ExpectedFile]) -> StoreWatcher:
    return StoreWatcher(lambda under: moto.keys(bucket, under), prefix, expected)


KILL_CASES = {
    # name: (files, MiB each, connections, kill once (parts in uploads, files under their final key) holds)
    "first-part": (3, 12, 2, lambda parts, finals: parts >= 1),
    # one connection: with two, both files run in step and the second's upload often completes
    # between the check and the kill (nothing mid-upload is left: the kill missed its point)
    "verified-files": (4, 12, 1, lambda parts, finals: parts >= 1 and finals >= 1),
    "parallel-ranges": (1, 40, 3, lambda parts, finals: parts >= 2),  # one file, several streams: parts out of order
}


@pytest.mark.parametrize("case", list(KILL_CASES))
def test_kill_9_mid_upload_then_a_fresh_pod_resumes_the_uploads(tmp_path: Path, moto: MotoServer, bucket: str,
                                                                 fake_data_root: Path, case: str) -> None:
    files, mib, connections, kill_when = KILL_CASES[case]
    cfg = FakeConfig(seed=62, faults=Faults(bandwidth_bps=3e6), data_dir=fake_data_root / f"s3-kill-{case}",
                     datasets=[one_batch(files_per_dataset_file=files, file_mb=mib)])
    fp = FakePlatform.run_in_thread(cfg)
    try:
        expected = fp.expected_files()
        total = sum(e.size for e in expected)
        prefix = "k"
        pod1, pod2 = tmp_path / "pod1-spool", tmp_path / "pod2-spool"
        pod1.mkdir()
        pod2.mkdir()
        config = store_config(tmp_path / "c.toml", fp, f"s3://{bucket}/{prefix}", concurrency=connections,
                           store=f'spool_dir = "{pod1}"\n')
        argv = engine_argv(config)
        env = clean_env(**moto.env())
        with bucket_watcher(moto, bucket, prefix, expected) as watcher:
            proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            uploads = _kill_when(kill_when, moto, bucket, prefix, proc, fp, total)
            parts_at_kill = {(u["key"], p["PartNumber"]): p["Size"] for u in uploads for p in u["parts"]}
            finals_at_kill = {k: s for k, s in moto.keys(bucket, prefix + "/").items() if k in watcher.sizes}
            # completed uploads not yet copied (one whose copy is done too is a leftover, not progress)
            staged_at_kill = {k: s for k, s in moto.keys(bucket, f"{prefix}/.aep-export/uploads/").items()
                              if f"{prefix}/" + k.removeprefix(f"{prefix}/.aep-export/uploads/").rpartition("/")[0]
                              not in finals_at_kill}
            assert parts_at_kill and len(finals_at_kill) < len(expected), "the kill did not land mid-upload"
            assert any(p.suffix == ".part" for p in pod1.rglob("*")), "no part was on the pod's disk at the kill"
            print(f"{case}: killed with {len(parts_at_kill)} parts uploaded, {len(staged_at_kill)} staged, "
                  f"{len(finals_at_kill)} of {len(expected)} files verified")

            shutil.rmtree(pod1)  # the pod is gone, and its disk with it
            config.write_text(config.read_text().replace(str(pod1), str(pod2)))
            time.sleep(0.3)  # the dead client's sockets closed before counting afresh
            fp.platform.reset_stats()
            rerun = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert not watcher.violations, watcher.violations[:5]
        assert watcher.listings > 20, "the watcher barely looked"
        assert_objects_match(moto, bucket, prefix, expected)
        assert moto.uploads(bucket) == [], "an upload was left behind"
        assert not [k for k in moto.keys(bucket) if "/.aep-export/" in k], "a staging object was left behind"

        resumed = [ev for ev in events(rerun.stderr) if ev["event"] == "upload_resumed"]
        assert sum(ev["parts"] for ev in resumed) == len(parts_at_kill), resumed
        assert sum(ev["staged"] for ev in resumed) == len(staged_at_kill), resumed
        missing = total - sum(parts_at_kill.values()) - sum(staged_at_kill.values()) - sum(finals_at_kill.values())
        taken = json.loads(moto.read(bucket, f"{prefix}/_report.json"))["totals"]["bytes_fetched"]
        warnings = [ev for ev in events(rerun.stderr) if ev["level"] != "info"]
        assert taken <= missing, f"the rerun took {taken} bytes; {missing} were neither uploaded nor verified at the kill: {warnings}"
        # what the server sent may exceed that by what a stream reads past a range another stream took over
        assert fp.stats.bytes_sent <= missing + connections * (1 << 20), (fp.stats.bytes_sent, missing)
        print(f"{case}: the rerun took {taken} of {total} bytes ({missing} missing at the kill)")
        assert list(pod2.iterdir()) == [], "the spool folder was not cleaned up"
    finally:
        fp.stop()


def _kill_when(condition: Any, moto: MotoServer, bucket: str, prefix: str, proc: subprocess.Popen, fp: Any,
               total: int) -> list:
    """SIGKILL the run once `condition(parts uploaded, files final)` holds with a fifth of the bytes
    still unsent; returns the uploads the dead run left (parts are final once listed)."""
    def progress() -> tuple[int, int]:
        parts = sum(len(u["parts"]) for u in moto.uploads(bucket))
        return parts, sum(1 for key in moto.keys(bucket, prefix + "/") if key.endswith(".parquet"))

    return kill_when(condition, progress, lambda: (moto.uploads(bucket), moto.keys(bucket, prefix + "/")), proc, fp, total)


def test_sigterm_mid_upload_keeps_the_parts_writes_the_report_and_the_rerun_resumes(tmp_path: Path, moto: MotoServer,
                                                                                  bucket: str, fake_data_root: Path) -> None:
    cfg = FakeConfig(seed=66, faults=Faults(bandwidth_bps=3e6), data_dir=fake_data_root / "s3-term",
                     datasets=[one_batch(files_per_dataset_file=2, file_mb=12)])
    fp = FakePlatform.run_in_thread(cfg)
    try:
        config = store_config(tmp_path / "c.toml", fp, f"s3://{bucket}/t", concurrency=2)
        argv = engine_argv(config)
        proc = subprocess.Popen(argv, env=clean_env(**moto.env()), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not any(u["parts"] for u in moto.uploads(bucket)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err[-2000:]
        parts = sum(len(u["parts"]) for u in moto.uploads(bucket))
        assert parts >= 1, "the parts uploaded before the signal were not kept"
        assert json.loads(moto.read(bucket, "t/_report.json"))["status"] == "interrupted"
        assert f"report: s3://{bucket}/t/_report.json" in out

        rerun = subprocess.run(argv, env=clean_env(**moto.env()), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert sum(ev["parts"] for ev in events(rerun.stderr) if ev["event"] == "upload_resumed") == parts
        assert_objects_match(moto, bucket, "t", fp.expected_files())
        assert moto.uploads(bucket) == []
    finally:
        fp.stop()


# ----------------------------------------------------------------------------- shards, credentials, bucket


def test_two_shards_write_disjoint_datasets_into_one_prefix(tmp_path: Path, moto: MotoServer, bucket: str,
                                                            threaded_fake) -> None:
    fp = threaded_fake(FakeConfig(seed=63, datasets=[one_batch(files_per_dataset_file=2, file_mb=6),
                                                     one_batch(files_per_dataset_file=2, file_mb=6),
                                                     one_batch(files_per_dataset_file=4, rows_per_file=100)]))
    ids = fp.dataset_ids
    url = f"s3://{bucket}/shared"
    shards = [ids[0::2], ids[1::2]]
    procs = []
    for i, datasets in enumerate(shards):
        config = store_config(tmp_path / f"shard{i}.toml", fp, url, datasets, concurrency=2)
        procs.append(subprocess.Popen(engine_argv(config),
                                      env=clean_env(**moto.env()), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    assert_objects_match(moto, bucket, "shared", fp.expected_files())
    assert moto.uploads(bucket) == []
    check = cli("verify", url, moto=moto, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.startswith("OK: 3 batches"), check.stdout + check.stderr


def test_refused_credentials_exit_3_before_anything_and_print_no_secret(tmp_path: Path, moto: MotoServer,
                                                                        bucket: str, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=64))
    config = store_config(tmp_path / "c.toml", fp, f"s3://{bucket}/x")
    wrong, token = "wrong-secret-Zq81vB0xLk3m", "session-token-Hp20sK4j9WqX"
    proc = cli("run", "--config", str(config), "--json-logs", "--no-progress", moto=moto, cwd=tmp_path,
               AWS_SECRET_ACCESS_KEY=wrong, AWS_SESSION_TOKEN=token)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "credentials" in out and f"s3://{bucket}/x" in out
    for secret in (wrong, token, moto.secret_key):
        assert secret not in out
    assert sum(fp.stats.requests.values()) == 0, "the platform was called although the bucket refused us"
    assert moto.keys(bucket) == {}


def test_missing_bucket_exits_2_naming_it_with_nothing_attempted(tmp_path: Path, moto: MotoServer, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=65))
    config = store_config(tmp_path / "c.toml", fp, "s3://no-such-bucket-aep/x")
    proc = cli("run", "--config", str(config), "--json-logs", "--no-progress", moto=moto, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "configuration error" in proc.stderr and "s3://no-such-bucket-aep/x" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sum(fp.stats.requests.values()) == 0


def test_unsupported_scheme_is_a_configuration_error(tmp_path: Path, moto: MotoServer, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=65))
    config = store_config(tmp_path / "c.toml", fp, "gs://bucket/x")
    proc = cli("run", "--config", str(config), moto=moto, cwd=tmp_path)
    assert proc.returncode == 2 and "gs:// is not supported" in proc.stderr, proc.stderr
