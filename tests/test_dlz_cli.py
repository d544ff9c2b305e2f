"""Issue #23 from the command line and in the small: `check` of a DLZ entry (what a run would
create and start, creating nothing; the run's files once there is one), `--via`, the per-entry
keys, the SAS refreshed before it expires, and a blob whose Content-MD5 disagrees with its bytes
(Azurite) failing alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContentSettings
from conftest import clean_env, run_cli, run_export, settings_for, toml_config
from dlz_support import dlz_expected, dlz_fake, with_via

from engine.config import DatasetSettings
from engine.fake import DatasetSpec, FakeConfig
from engine.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.platform import dlz
from engine.retry import RetryPolicy


@pytest.fixture
def org(threaded_fake):
    return threaded_fake(FakeConfig(seed=2302, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=40)
                                                         for _ in range(2)]))


def config(fp: Any, tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(toml_config(fp, tmp_path / "out", datasets=[]))
    return path


def test_check_says_what_a_dlz_run_would_create_and_creates_nothing(org, tmp_path: Path) -> None:
    fp, path = org, config(org, tmp_path)
    dlz_id = fp.dataset_ids[1]
    p = run_cli("check", "--config", str(path), "--dataset", dlz_id, "--via", "dlz", cwd=tmp_path, env=clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"would create source, DLZ base and target connections and a \"once\" dataflow for dataset {dlz_id}" in p.stdout
    assert "would start an ad hoc export run, wait up to 3600 s for it" in p.stdout
    assert not fp.dlz_flows() and fp.adhoc_requests == 0 and not (tmp_path / "out").exists()

    run = run_cli("run", "--config", str(path), "--dataset", dlz_id, "--via", "dlz", cwd=tmp_path, env=clean_env())
    assert run.returncode == EXIT_OK, run.stderr[-2000:]
    again = run_cli("run", "--config", str(path), "--dataset", dlz_id, "--via", "dlz", "--dry-run", cwd=tmp_path, env=clean_env())
    (latest,) = fp.dlz_runs()
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"batch {latest.id}: 3 files, {sum(s for _, s, _ in latest.files)} bytes" in again.stdout  # the run to reuse
    assert fp.adhoc_requests == 1 and len(fp.dlz_flows()) == 1


def test_check_of_an_ineligible_dataset_says_why(org, tmp_path: Path) -> None:
    fp, path = org, config(org, tmp_path)
    fp.dlz.ineligible.append(fp.dataset_ids[1])
    p = run_cli("check", "--config", str(path), "--dataset", fp.dataset_ids[1], "--via", "dlz", cwd=tmp_path, env=clean_env())
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"ERROR NotEligible: dataset {fp.dataset_ids[1]} is not eligible for dataset export" in p.stdout


def test_via_needs_dataset_flags_and_dlz_entries_take_no_batch_choice(org, tmp_path: Path) -> None:
    path = config(org, tmp_path)
    p = run_cli("check", "--config", str(path), "--via", "dlz", cwd=tmp_path, env=clean_env())
    assert p.returncode == EXIT_USAGE and "--via chooses the source of --dataset and --datasets-file entries" in p.stderr
    with pytest.raises(ValueError, match='via = "dlz" exports one dataset export run'):
        DatasetSettings.model_validate({"id": "a" * 24, "via": "dlz", "batches": "all"})
    with pytest.raises(ValueError, match="is not a duration"):
        DatasetSettings.model_validate({"id": "a" * 24, "via": "dlz", "reuse_run_within": "soon"})
    entry = DatasetSettings.model_validate({"id": "a" * 24, "via": "dlz", "reuse_run_within": "90m", "wait_timeout": "2h"})
    assert (entry.reuse_run_within, entry.wait_timeout) == (5400.0, 7200.0)
    assert DatasetSettings.model_validate({"id": "a" * 24}).via == "data-access"


class Credentials:
    """The credentials endpoint: a new SAS each call, expiring `ttl` seconds after the clock."""

    def __init__(self, ttl: float):
        self.ttl, self.calls = ttl, 0
        self.policy = RetryPolicy(max_attempts=1, base=0, cap=0)

    async def get_json(self, url: str, params: Any = None) -> Any:
        self.calls += 1
        se = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.ttl))
        token = f"se={se}&sp=rl&sig=call{self.calls}secret"
        return {"containerName": "c", "SASToken": token, "storageAccountName": "a", "SASUri": f"https://a.blob.core.windows.net/c?{token}"}


async def test_the_sas_is_refreshed_before_it_expires(monkeypatch) -> None:
    endpoint = Credentials(ttl=600)
    sas = dlz.DlzSas(endpoint)  # type: ignore[arg-type]
    first = await sas.sign("https://a.blob.core.windows.net/c/x")
    assert first.endswith("sig=call1secret") and endpoint.calls == 1
    assert await sas.sign("https://a.blob.core.windows.net/c/y") == "https://a.blob.core.windows.net/c/y?" + first.split("?")[1]
    now = time.time()
    monkeypatch.setattr(dlz.time, "time", lambda: now + 301)  # within REFRESH_BEFORE_S of its se: fetched again
    assert (await sas.sign("https://a.blob.core.windows.net/c/x")).endswith("sig=call2secret") and endpoint.calls == 2


async def test_a_sas_issued_expired_is_refused_before_use() -> None:
    with pytest.raises(dlz.SasExpired, match="gave a SAS that expired at"):
        await dlz.DlzSas(Credentials(ttl=-60)).container()  # type: ignore[arg-type]


async def test_a_blob_whose_content_md5_disagrees_fails_alone(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    cfg = FakeConfig(seed=2303, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=60) for _ in range(2)])
    async with dlz_fake(cfg, azurite, fake_data_root) as fp:
        da, dlz_id = fp.dataset_ids
        settings = with_via(settings_for(fp, tmp_path), {dlz_id: "dlz"})
        first = await run_export(with_via(settings_for(fp, tmp_path / "first", [dlz_id]), {dlz_id: "dlz"}))
        assert first.exit_code == EXIT_OK
        (run,) = fp.dlz_runs()
        name = run.files[1][0]
        blob = fp.blobs.service.get_blob_client(fp.blobs.container, name)
        blob.set_http_headers(ContentSettings(content_md5=bytearray(16)))
        result = await run_export(settings)  # the same run (reused): its listing now states a wrong MD5
        assert result.exit_code == EXIT_FAILED
        (batch,) = [b for d in result.datasets if d.dataset_id == dlz_id for b in d.batches]
        assert batch.status == "failed"
        failed = [r for r in batch.results if not r.ok]
        assert [r.task.name for r in failed] == [name.rsplit("/", 1)[1]]
        assert "md5 does not match the bytes received" in failed[0].error
        assert [d.status for d in result.datasets if d.dataset_id == da] == ["ok"]
        good = [e for e in dlz_expected(fp, dlz_id) if e.name != failed[0].task.name]
        for e in good:
            assert (tmp_path / e.dataset_id / e.batch_id / e.dataset_file_id / e.name).is_file()
