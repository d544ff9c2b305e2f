"""What the S3 (moto) and Azure Blob (Azurite) test files share: the same exports written into a
bucket or a container and read back through the server's own client (`read`, `names` below are
the store's: MotoServer.read/keys, AzuriteServer.read/blobs), never through the engine's code.

Parts (blocks) are 5 MiB, the engine's lowest allowed, so a few MiB of data exercise multipart
uploads and staged blocks."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, run_cli, settings_for, settled, toml_config

from engine.config import Settings
from engine.fake import DatasetSpec, FakeConfig
from engine.fake.data import ExpectedFile

PART = 5 << 20

Read = Callable[[str], bytes]  # an object's bytes by its name in the bucket or container
Names = Callable[[str], dict[str, int]]  # name -> size of every object under a prefix


def one_batch(**spec: Any) -> DatasetSpec:
    return DatasetSpec(batches=1, failed_batch=False, processing_batch=False, **spec)


def one_batch_of(seed: int, files: int = 2, mib: int = 7) -> FakeConfig:
    """One dataset, one batch of `files` files of about `mib` MiB (two parts each at 7 MiB)."""
    return FakeConfig(seed=seed, datasets=[one_batch(files_per_dataset_file=files, file_mb=mib)])


def store_config(path: Path, fp: Any, out: str, datasets: list[str] | None = None, *, concurrency: int = 4,
                 store: str = "") -> Path:
    """A TOML config exporting into `out` (s3://, az://) with 5 MiB parts, and [store] lines `store`."""
    text = toml_config(fp, Path("unused"), datasets).replace('out_dir = "unused"', f'out_dir = "{out}"')
    text = text.replace("concurrency = 4", f"concurrency = {concurrency}")
    path.write_text(text + f"\n[store]\npart_size = {PART}\n{store}")
    return path


def store_settings(fp: Any, out: str, **store: Any) -> Settings:
    """In-process settings exporting into `out` with 5 MiB parts (and the [store] keys given)."""
    return settings_for(fp, out, store={"part_size": PART, **store})


def object_name(prefix: str, e: ExpectedFile) -> str:
    """Where an exported file lands under the prefix (the plain layout)."""
    return f"{prefix}/{e.dataset_id}/{e.batch_id}/{e.dataset_file_id}/{e.name}"


def assert_stored(read: Read, prefix: str, expected: list[ExpectedFile]) -> None:
    """Every file under its final name, byte for byte (size and SHA-256)."""
    for e in expected:
        data = read(object_name(prefix, e))
        assert len(data) == e.size and hashlib.sha256(data).hexdigest() == e.sha256, object_name(prefix, e)


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def cli(*args: str, server: Any, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the server's credentials in the standard variables (`env` added or overriding)."""
    return run_cli(*args, cwd=cwd, env=clean_env(**{**server.env(), **env}), timeout=timeout)


def engine_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"]


def duckdb_with(extension: str, package: str) -> Any:
    """A DuckDB connection with an extension loaded from its wheel (test extra `package`)."""
    import duckdb

    found = glob.glob(os.path.join(sys.prefix, "lib", "python3*", "site-packages", "duckdb_ext", "extensions",
                                   f"v{duckdb.__version__}", "*", f"{extension}.duckdb_extension"))
    assert found, f"the {extension} extension package (test extra: {package}) is missing"
    con = duckdb.connect()
    con.execute(f"LOAD '{found[0]}'")
    return con


def assert_duckdb_counts(con: Any, url: str, prefix: str, expected: list[ExpectedFile], rows: dict) -> None:
    """DuckDB reads each file (url: s3://bucket or az://container) and all of them at once, with
    the rows the manifests say."""
    for e in expected:
        count = con.execute(f"SELECT count(*) FROM read_parquet('{url}/{object_name(prefix, e)}')").fetchone()[0]
        assert count == rows[f"{e.dataset_file_id}/{e.name}"] > 0
    every = f"{url}/{prefix}/*/*/*/*.parquet"
    assert con.execute(f"SELECT count(*) FROM read_parquet('{every}')").fetchone()[0] == sum(rows.values())


class StoreWatcher:
    """Lists the prefix every few ms while a run goes: a final object must only ever show complete
    bytes, and a batch's _SUCCESS only after all its files."""

    def __init__(self, names: Names, prefix: str, expected: list[ExpectedFile]):
        self.names, self.prefix = names, prefix
        self.sizes = {object_name(prefix, e): e.size for e in expected}
        self.by_batch: dict[str, set[str]] = {}
        for e in expected:
            self.by_batch.setdefault(f"{prefix}/{e.dataset_id}/{e.batch_id}", set()).add(object_name(prefix, e))
        self.violations: list[str] = []
        self.listings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StoreWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            listed = self.names(self.prefix + "/")
            self.listings += 1
            for name, size in listed.items():
                if name in self.sizes and size != self.sizes[name]:
                    self.violations.append(f"{name} visible with {size} of {self.sizes[name]} bytes")
                if name.endswith("/_SUCCESS") and not self.by_batch[name.rpartition("/")[0]] <= set(listed):
                    self.violations.append(f"{name} visible before all of its batch's files")
            time.sleep(0.02)


def kill_when(condition: Callable[[int, int], bool], progress: Callable[[], tuple[int, int]], left: Callable[[], Any],
              proc: subprocess.Popen, fp: Any, total: int) -> Any:
    """SIGKILL the run once `condition(*progress())` holds ((parts or blocks uploaded, files final))
    with a fifth of the bytes still unsent; returns the first item of `left()` ((what the dead run
    left in flight, the listing of the prefix)) once the requests it sent before dying have landed
    (two reads agree: a part or block is whole once listed)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if condition(*progress()) and fp.stats.bytes_sent < 0.8 * total:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
            return settled(left)[0]
        time.sleep(0.02)
    proc.kill()
    _, err = proc.communicate(timeout=30)
    pytest.fail(f"never reached the kill point (exit {proc.returncode}): {err[-2000:]}")


# -- one bucket or container under test, through the server's own client ----------------------------


class S3Place:
    """A fresh bucket of the moto server."""

    scheme, tag, kind = "s3", "s3", "bucket"

    def __init__(self, moto: Any, bucket: str):
        self.server, self.place = moto, bucket
        moto.create_bucket(bucket)

    def url(self, prefix: str) -> str:
        return f"s3://{self.place}/{prefix}"

    def read(self, name: str) -> bytes:
        return self.server.read(self.place, name)

    def names(self, prefix: str = "") -> dict[str, int]:
        return self.server.keys(self.place, prefix)

    def in_flight(self) -> dict[tuple[str, str], int]:
        """Parts uploaded to multipart uploads not completed: (key, part number) -> size."""
        return {(u["key"], str(p["PartNumber"])): p["Size"] for u in self.server.uploads(self.place) for p in u["parts"]}

    def assert_nothing_in_flight(self) -> None:
        assert self.server.uploads(self.place) == [], "an upload was left behind"
        assert not [k for k in self.names() if "/.aep-export/" in k], "a staging object was left behind"

    def parts_sent(self) -> int | None:
        """Parts (blocks) the server received so far; None: this server does not count them."""
        return None

    def write(self, name: str, data: bytes) -> None:
        self.server.client.put_object(Bucket=self.place, Key=name, Body=data)

    def wrong_credentials(self) -> tuple[dict[str, str], list[str]]:
        """(variables that make the store refuse us, the secrets no output may show)."""
        wrong, token = "wrong-secret-Zq81vB0xLk3m", "session-token-Hp20sK4j9WqX"
        return {"AWS_SECRET_ACCESS_KEY": wrong, "AWS_SESSION_TOKEN": token}, [wrong, token, self.server.secret_key]

    def start_upload(self, name: str) -> None:
        """An upload in flight under `name` (as a dead run leaves it): a multipart upload begun."""
        self.server.client.create_multipart_upload(Bucket=self.place, Key=name)


class AzurePlace:
    """A fresh container of the Azurite server."""

    scheme, tag, kind = "az", "az", "container"
    PUT_BLOCK = r"[?&]comp=block&"  # Put Block (not Put Block List: comp=blocklist)

    def __init__(self, azurite: Any, container: str):
        self.server, self.place = azurite, container
        azurite.create_container(container)

    def url(self, prefix: str) -> str:
        return f"az://{self.place}/{prefix}"

    def read(self, name: str) -> bytes:
        return self.server.read(self.place, name)

    def names(self, prefix: str = "") -> dict[str, int]:
        return self.server.blobs(self.place, prefix)

    def in_flight(self) -> dict[tuple[str, str], int]:
        """Blocks staged and not committed: (blob, block id) -> size."""
        return {(name, ident): size for name, blocks in self.server.uncommitted(self.place).items() for ident, size in blocks}

    def assert_nothing_in_flight(self) -> None:
        assert self.server.uncommitted(self.place) == {}, "uncommitted blocks were left behind"
        assert not [n for n in self.names() if "/.aep-export/" in n], "a staging blob was left behind"

    def parts_sent(self) -> int | None:
        return self.server.requests("PUT", self.PUT_BLOCK)

    def write(self, name: str, data: bytes) -> None:
        self.server.service.get_blob_client(self.place, name).upload_blob(data, overwrite=True)

    def wrong_credentials(self) -> tuple[dict[str, str], list[str]]:
        """(variables that make the store refuse us, the secrets no output may show)."""
        import base64

        wrong = base64.b64encode(b"wrong-key-Zq81vB0xLk3m" * 3).decode()
        conn = self.server.connection_string.replace(self.server.key, wrong)
        return {"AZURE_STORAGE_CONNECTION_STRING": conn}, [wrong, self.server.key]

    def start_upload(self, name: str) -> None:
        """An upload in flight under `name` (as a dead run leaves it): a block staged."""
        from engine.output.azure import block_id

        self.server.service.get_blob_client(self.place, name).stage_block(block_id(1, 0), b"x")
