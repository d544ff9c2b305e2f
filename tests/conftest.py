"""Shared fixtures for the engine tests: fake-platform factory, settings builder, output checks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.config import Settings
from engine.exporter import Exporter
from engine.fake import FakeConfig, FakePlatform
from engine.fake.data import ExpectedFile, spec_cache_key
from engine.layout import MANIFEST, REPORT, SUCCESS, SUMS
from engine.output.journal import JOURNAL, STATE_DIR
from engine.output.report import RunOutcome

BOOKKEEPING = {MANIFEST, SUMS, SUCCESS}


# ----------------------------------------------------------------------------- fake platform


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated parquet for every fake platform of the session (one folder per spec set)."""
    return tmp_path_factory.mktemp("fake-data")


def with_data_dir(cfg: FakeConfig, root: Path) -> FakeConfig:
    if cfg.data_dir is None:
        cfg.data_dir = root / spec_cache_key(cfg.seed, cfg.datasets)
    return cfg


@pytest.fixture
def make_fake(fake_data_root: Path) -> Callable[[FakeConfig], FakePlatform]:
    """FakePlatform(cfg) not yet started (so a test can wrap handlers first); use `async with`."""

    def factory(cfg: FakeConfig) -> FakePlatform:
        return FakePlatform(with_data_dir(cfg, fake_data_root), host="127.0.0.1", port=0)

    return factory


@pytest.fixture
def threaded_fake(fake_data_root: Path) -> Iterator[Callable[[FakeConfig], Any]]:
    """Start fake platforms in a background thread (for CLI subprocess tests); stopped at teardown."""
    started: list[Any] = []

    def factory(cfg: FakeConfig) -> Any:
        fp = FakePlatform.run_in_thread(with_data_dir(cfg, fake_data_root))
        started.append(fp)
        return fp

    yield factory
    for fp in started:
        fp.stop()


# ----------------------------------------------------------------------------- settings / runs


def settings_for(fp: Any, out_dir: Path | str, datasets: list[str] | None = None, *, store: dict[str, Any] | None = None,
                 **export: Any) -> Settings:
    """Settings pointing at a (started) fake platform; `export` overrides export.* keys, `store`
    sets [store] (an object-store out_dir)."""
    return Settings.model_validate({
        "platform": {"url": fp.url, "org_id": fp.org_id, "sandbox": fp.sandbox},
        "auth": {"client_id": fp.client_id, "client_secret": fp.client_secret, "ims_url": fp.ims_url},
        "export": {"out_dir": out_dir, "concurrency": 4, "backoff_base": 0.01, "backoff_cap": 0.05, **export},
        **({"store": store} if store is not None else {}),
        "datasets": [{"id": d} for d in (fp.dataset_ids if datasets is None else datasets)],
    })


async def run_export(settings: Settings) -> RunOutcome:
    return await Exporter(settings, handle_signals=False).execute()


def toml_config(fp: Any, out_dir: Path, datasets: list[str] | None = None, *, client_secret: str | None = None,
                extra_auth: str = "", extra_export: str = "") -> str:
    """A complete TOML config for a fake platform."""
    secret = fp.client_secret if client_secret is None else client_secret
    ds = "".join(f'\n[[datasets]]\nid = "{d}"\n' for d in (fp.dataset_ids if datasets is None else datasets))
    return (
        f'[platform]\nurl = "{fp.url}"\norg_id = "{fp.org_id}"\nsandbox = "{fp.sandbox}"\n\n'
        f'[auth]\nclient_id = "{fp.client_id}"\nclient_secret = "{secret}"\nims_url = "{fp.ims_url}"\n{extra_auth}\n'
        f'[export]\nout_dir = "{out_dir}"\nconcurrency = 4\nbackoff_base = 0.01\nbackoff_cap = 0.05\n{extra_export}\n'
        f"{ds}"
    )


# ----------------------------------------------------------------------------- CLI


T = TypeVar("T")


def settled(read: Callable[[], T], interval: float = 0.2, tries: int = 50) -> T:
    """What a server holds once the requests a killed client sent before dying have landed: the
    first of two reads `interval` apart that agree (a body received whole is still processed)."""
    last = read()
    for _ in range(tries):
        time.sleep(interval)
        now = read()
        if now == last:
            return now
        last = now
    return last


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEP_EXPORT_")}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          cwd=cwd, env=env if env is not None else clean_env(), timeout=timeout)


# ----------------------------------------------------------------------------- output checks


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_path(out_dir: Path, e: ExpectedFile) -> Path:
    return out_dir / e.dataset_id / e.batch_id / e.dataset_file_id / e.name


def assert_files_match(out_dir: Path, expected: list[ExpectedFile]) -> None:
    """Every expected file byte-identical at {out}/{dataset}/{batch}/{dataSetFileId}/{name},
    and nothing else in those batch folders except the bookkeeping files."""
    assert expected, "nothing expected: the fake platform config is wrong"
    wanted = {expected_path(out_dir, e): e for e in expected}
    for path, e in wanted.items():
        assert path.is_file(), f"missing {path.relative_to(out_dir)}"
        assert path.stat().st_size == e.size, f"size differs: {path.relative_to(out_dir)}"
        assert sha256_of(path) == e.sha256, f"content differs: {path.relative_to(out_dir)}"
    for folder in {out_dir / e.dataset_id / e.batch_id for e in expected}:
        for p in folder.rglob("*"):
            if p.is_file() and p.parent == folder:
                assert p.name in BOOKKEEPING, f"unexpected file {p.relative_to(out_dir)}"
            elif p.is_file():
                assert p in wanted, f"unexpected file {p.relative_to(out_dir)}"


def sha256sum_check(batch_folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sha256sum", "--strict", "-c", SUMS], cwd=batch_folder, capture_output=True, text=True)


def read_report(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / REPORT).read_text())


def read_manifest(batch_folder: Path) -> dict[str, Any]:
    return json.loads((batch_folder / MANIFEST).read_text())


def journal_path(out_dir: Path) -> Path:
    return out_dir / STATE_DIR / JOURNAL


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
async def small_fake(make_fake: Callable[[FakeConfig], FakePlatform]) -> AsyncIterator[FakePlatform]:
    async with make_fake(FakeConfig.small(n_datasets=2, files=3, rows=40, seed=21)) as fp:
        yield fp


@pytest.fixture(scope="module")
def moto():
    """A real S3-compatible server (moto) on loopback, one per test module that asks for it."""
    from s3server import MotoServer

    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def azurite():
    """A real Azure Blob server (Azurite) on loopback, one per test session: see tests/azurite.py
    for what it offers (host, port, account, key, connection_string, blob_endpoint, env())."""
    from azurite import AzuriteServer, azurite_command

    if azurite_command() is None:
        missing("azurite-blob is not installed (npm install -g azurite; .ci/run does)")
    with AzuriteServer() as server:
        yield server


def missing(message: str) -> None:
    """A server or runtime a test needs is not installed: skipped on a developer's machine, failed
    in CI (CI=true), which installs every one of them (.ci/run): missing there is a broken CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# ----------------------------------------------------------------------------- files in flight
# Where a file's bytes wait before its commit, and its control file: the one place tests name
# them, so that a change of that layout (issue #17: our files in our own namespace) is made here.


def part_of(final: Path) -> Path:
    """The temporary file the engine fills for the file whose final name is `final`."""
    from engine.layout import part_path

    return part_path(final)


def control_of(final: Path) -> Path:
    """The control file (held byte ranges) of that temporary file."""
    from engine.layout import control_path

    return control_path(final)


def parts_under(root: Path) -> list[Path]:
    """Every temporary file (a file in flight) under `root`."""
    return sorted(p for p in root.rglob("*.part") if p.is_file())


def controls_under(root: Path) -> list[Path]:
    """Every control file under `root` (a temporary one mid-rename included: *.part.ctl.tmp)."""
    return sorted(p for p in root.rglob("*.part.ctl*") if p.is_file())
