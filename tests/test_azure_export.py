"""Export straight into Azure Blob Storage (az://, abfs://), against a real Blob server (Azurite on
loopback, HTTP, Shared Key checked). The container is read back with azure-storage-blob's own
client (not the engine's code) and DuckDB's azure extension. Parts (blocks) are 5 MiB, the
engine's lowest allowed, so a few MiB of data exercise staged blocks, the commit and the copy.
What this file shares with the S3 one (tests/test_s3_export.py) is in tests/objectstores.py.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from azurite import AzuriteServer
from conftest import clean_env, run_cli
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

from engine.fake import FakeConfig
from engine.fake.data import ExpectedFile
from engine.layout import LATEST, MANIFEST, SUCCESS, SUMS
from engine.outcome import EXIT_UNREACHABLE


@pytest.fixture
def container(azurite: AzuriteServer) -> str:
    name = f"aep-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name


def assert_blobs_match(azurite: AzuriteServer, container: str, prefix: str, expected: list[ExpectedFile]) -> None:
    assert_stored(lambda name: azurite.read(container, name), prefix, expected)


def assert_nothing_left_in_flight(azurite: AzuriteServer, container: str) -> None:
    assert azurite.uncommitted(container) == {}, "uncommitted blocks were left behind"
    assert not [n for n in azurite.blobs(container) if "/.aep-export/" in n], "a staging blob was left behind"


def cli(*args: str, azurite: AzuriteServer, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return store_cli(*args, server=azurite, cwd=cwd, timeout=timeout, **env)


# ----------------------------------------------------------------------------- a whole export


def test_export_into_a_container_is_byte_identical_verified_reusable_and_readable(tmp_path: Path, azurite: AzuriteServer,
                                                                                  container: str, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig(seed=81, datasets=[
        one_batch(files_per_dataset_file=2, file_mb=7),  # two blocks each: staged, committed, copied
        one_batch(files_per_dataset_file=3, rows_per_file=200, success_marker=True),  # one block: one Put Blob
    ]))
    expected = fp.expected_files()
    prefix = "exports/daily"
    config = store_config(tmp_path / "c.toml", fp, str(tmp_path / "local-out"))
    proc = cli("run", "--config", str(config), "--out", f"az://{container}/{prefix}/", "--json-logs", "--no-progress",
               azurite=azurite, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "local-out").exists()
    assert_blobs_match(azurite, container, prefix, expected)
    assert azurite.key not in proc.stdout + proc.stderr

    batches = {(e.dataset_id, e.batch_id) for e in expected}
    batch_files = {f"{prefix}/{d}/{b}/{name}" for d, b in batches for name in (SUMS, MANIFEST, SUCCESS)}
    pointers = {f"{prefix}/{d}/{LATEST}" for d, _ in batches}
    assert set(azurite.blobs(container)) == {object_name(prefix, e) for e in expected} | batch_files | pointers | {f"{prefix}/_report.json"}
    assert_nothing_left_in_flight(azurite, container)
    for d, b in batches:
        mine = sorted((f"{e.dataset_file_id}/{e.name}", e.sha256) for e in expected if (e.dataset_id, e.batch_id) == (d, b))
        assert azurite.read(container, f"{prefix}/{d}/{b}/{SUMS}").decode() == "".join(f"{sha}  {rel}\n" for rel, sha in mine)
        assert azurite.read(container, f"{prefix}/{d}/{LATEST}").decode() == b + "\n"
    for e in expected:  # the verified digest travels with the blob: the rerun's journal
        assert azurite.metadata(container, object_name(prefix, e))["aep_export_sha256"] == e.sha256
    totals = json.loads(azurite.read(container, f"{prefix}/_report.json"))["totals"]
    assert totals["files_downloaded"] == len(expected) and totals["restarts"] == 0, totals

    fp.platform.reset_stats()
    rerun = cli("run", "--config", str(config), "--out", f"az://{container}/{prefix}", "--json-logs", "--no-progress",
                azurite=azurite, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert fp.stats.bytes_sent == 0, "the rerun fetched files the container already holds verified"
    assert json.loads(azurite.read(container, f"{prefix}/_report.json"))["totals"]["files_reused"] == len(expected)

    summary = f"OK: {len(batches)} batches, {len(expected)} files"
    # ADLS Gen2's spelling of the same place (the account is the connection string's)
    abfs = f"abfs://{container}@{azurite.account}.dfs.core.windows.net/{prefix}"
    for url in (f"az://{container}/{prefix}", abfs):
        check = cli("verify", url, azurite=azurite, cwd=tmp_path)
        assert check.returncode == 0 and check.stdout.startswith(summary), check.stdout + check.stderr
    status = cli("status", f"az://{container}/{prefix}", "--json", azurite=azurite, cwd=tmp_path)
    assert status.returncode == 0 and json.loads(status.stdout)["complete"], status.stdout + status.stderr
    d, b = min(batches)
    azurite.service.get_blob_client(container, f"{prefix}/{d}/{b}/{SUCCESS}").delete_blob()  # one batch no longer complete
    status = cli("status", f"az://{container}/{prefix}", azurite=azurite, cwd=tmp_path)
    assert status.returncode == 1 and "INCOMPLETE" in status.stdout, status.stdout + status.stderr

    rows = {}
    for d, b in batches:
        for f in json.loads(azurite.read(container, f"{prefix}/{d}/{b}/{MANIFEST}"))["files"]:
            rows[f["path"]] = f["rows"]
    assert_duckdb_reads(azurite, container, prefix, expected, rows)


def assert_duckdb_reads(azurite: AzuriteServer, container: str, prefix: str, expected: list[ExpectedFile], rows: dict) -> None:
    con = duckdb_with("azure", "duckdb-ext-azure")
    con.execute(f"CREATE SECRET azurite (TYPE azure, CONNECTION_STRING '{azurite.connection_string}')")
    assert_duckdb_counts(con, f"az://{container}", prefix, expected, rows)


# kill -9 and SIGTERM mid-upload: tests/test_stores.py (both stores, one test each)


# ---------------------------------------------- shards (refused credentials, a missing container: tests/test_stores.py)


def test_two_shards_write_disjoint_datasets_into_one_prefix(tmp_path: Path, azurite: AzuriteServer, container: str,
                                                            threaded_fake) -> None:
    fp = threaded_fake(FakeConfig(seed=83, datasets=[one_batch(files_per_dataset_file=2, file_mb=6),
                                                     one_batch(files_per_dataset_file=2, file_mb=6),
                                                     one_batch(files_per_dataset_file=4, rows_per_file=100)]))
    ids = fp.dataset_ids
    url = f"az://{container}/shared"
    secret = tmp_path / "azure-connection-string"
    secret.write_text(azurite.connection_string + "\n")
    envs = [  # one shard the Azure way, the other from a setting whose value is a mounted secret file
        clean_env(**azurite.env()),
        {k: v for k, v in clean_env(AEP_EXPORT_STORE__AZURE_CONNECTION_STRING_FILE=str(secret)).items() if not k.startswith("AZURE_")},
    ]
    procs = []
    for i, datasets in enumerate([ids[0::2], ids[1::2]]):
        config = store_config(tmp_path / f"shard{i}.toml", fp, url, datasets, concurrency=2)
        procs.append(subprocess.Popen(engine_argv(config),
                                      env=envs[i], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert azurite.key not in out + err
    assert_blobs_match(azurite, container, "shared", fp.expected_files())
    assert_nothing_left_in_flight(azurite, container)
    check = run_cli("verify", url, cwd=tmp_path, env=envs[1])  # the secret file alone, without a config file
    assert check.returncode == 0 and check.stdout.startswith("OK: 3 batches"), check.stdout + check.stderr


def test_unreachable_endpoint_is_exit_4_and_one_line_within_the_budget(tmp_path: Path, threaded_fake) -> None:
    """A Blob endpoint that refuses connections: retried like the gateway for its ~15 s budget,
    then exit 4 and one line, for run, verify and status alike."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
    key = base64.b64encode(b"unreachable-test-key" * 3).decode()
    env = clean_env(AZURE_STORAGE_CONNECTION_STRING=f"AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint}")
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=87))
    config = store_config(tmp_path / "c.toml", fp, "az://scores/aep")
    commands = {"run": ["run", "--config", str(config), "--json-logs"], "verify": ["verify", "az://scores/aep"],
                "status": ["status", "az://scores/aep"]}
    started = time.monotonic()
    procs = {name: subprocess.Popen([sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=tmp_path, env=env) for name, args in commands.items()}
    for name, proc in procs.items():  # at once: each waits out its budget
        stdout, stderr = proc.communicate(timeout=150)
        assert "Traceback" not in stderr and key not in stderr + stdout, f"{name}: {stderr[-3000:]}"
        assert proc.returncode == EXIT_UNREACHABLE, f"{name}: exit {proc.returncode}: {stderr[-1000:]}"
        assert time.monotonic() - started < 40, name  # the ~15 s budget, with room for a shared machine
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"aep-export: platform unreachable: cannot connect to the Azure Blob service at {endpoint}"), last
        assert "BlobEndpoint" in last and stdout == "", (last, stdout)
    assert sum(fp.stats.requests.values()) == 0
