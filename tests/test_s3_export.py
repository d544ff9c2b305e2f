"""Export straight into object storage, against a real S3-compatible server (moto, loopback, HTTP).

The bucket is read back with boto3 (not the engine's code), DuckDB and pyarrow. Parts are 5 MiB
(S3's minimum, the engine's lowest allowed) so a few MiB of data exercise multipart uploads.
What this file shares with the Azure one (tests/test_azure_export.py) is in tests/objectstores.py.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import clean_env
from objectstores import (
    assert_duckdb_counts,
    assert_stored,
    duckdb_with,
    engine_argv,
    object_name,
    one_batch,
    store_config,
)
from objectstores import cli as store_cli
from s3server import REGION, MotoServer

from engine.fake import FakeConfig
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


# kill -9 and SIGTERM mid-upload: tests/test_stores.py (both stores, one test each)


# ---------------------------------------------- shards (refused credentials, a missing bucket: tests/test_stores.py)


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


def test_unsupported_scheme_is_a_configuration_error(tmp_path: Path, moto: MotoServer, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=65))
    config = store_config(tmp_path / "c.toml", fp, "gs://bucket/x")
    proc = cli("run", "--config", str(config), moto=moto, cwd=tmp_path)
    assert proc.returncode == 2 and "gs:// is not supported" in proc.stderr, proc.stderr
