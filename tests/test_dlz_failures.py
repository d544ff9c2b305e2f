"""Issue #23: a DLZ entry that cannot be exported fails alone, with the documented message and
exit 1, while the other entries complete: a dataset that is not eligible, a run that fails, an ad
hoc run the platform refuses, a SAS that is expired or that the Blob server (Azurite) refuses.
The ad hoc run's waits ("not ready", "already exists") end in an export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import assert_files_match, run_export, settings_for
from dlz_support import AzuriteBlobs, dlz_expected, dlz_fake, with_via

from engine.fake import DatasetSpec, FakeConfig
from engine.fake.flowservice import ADHOC, DATASET_SOURCE_SPEC, DLZ_CONNECTION_SPEC, DLZ_FLOW_SPEC, FLOWSERVICE
from engine.outcome import EXIT_FAILED, EXIT_OK


def org(n: int = 4, **dlz: Any) -> FakeConfig:
    cfg = FakeConfig(seed=231, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=120) for _ in range(n)])
    for key, value in dlz.items():
        setattr(cfg.dlz, key, value)
    return cfg


def outcome(run: Any, dataset_id: str) -> Any:
    (found,) = [d for d in run.datasets if d.dataset_id == dataset_id]
    return found


async def test_ineligible_dataset_and_failing_run_fail_alone(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    cfg = org(4)
    async with dlz_fake(cfg, azurite, fake_data_root) as fp:
        da, ok, ineligible, failing = fp.dataset_ids
        fp.dlz.ineligible.append(ineligible)
        fp.dlz.failing.append(failing)
        settings = with_via(settings_for(fp, tmp_path), {ok: "dlz", ineligible: "dlz", failing: "dlz"})
        run = await run_export(settings)
        assert run.exit_code == EXIT_FAILED and run.status == "failed"
        assert outcome(run, da).status == outcome(run, ok).status == "ok"
        assert_files_match(tmp_path, [e for e in fp.expected_files() if e.dataset_id == da] + dlz_expected(fp, ok))

        refused = outcome(run, ineligible).error
        assert refused.kind == "not_eligible"
        assert f"dataset {ineligible} is not eligible for dataset export" in refused
        assert "3 eligible datasets" in refused and ok in refused  # what is eligible
        assert 'via = "data-access"' in refused
        assert not (tmp_path / ineligible).exists()

        failed = outcome(run, failing).error
        assert failed.kind == "run_failed"
        assert "ended failed: CONNECTOR-2001-500 Something went wrong while writing to the destination" in failed
        assert not (tmp_path / failing).exists()


async def test_adhoc_run_not_enabled_fails_the_entry(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    async with dlz_fake(org(2, adhoc_enabled=False), azurite, fake_data_root) as fp:
        da, dlz = fp.dataset_ids
        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}))
        assert run.exit_code == EXIT_FAILED
        assert outcome(run, da).status == "ok"
        error = outcome(run, dlz).error
        assert error.kind == "adhoc_refused"
        assert f"Adhoc run can not be executed for Flow spec={DLZ_FLOW_SPEC}" in error and "not enabled for this org" in error
        assert fp.adhoc_requests == 1  # not retried: waiting cannot change it


async def test_not_ready_is_waited_out_through_the_retry_policy(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    """Adobe refuses ad hoc runs of a new flow for 10 minutes: compressed to 0.4 s here."""
    async with dlz_fake(org(1, not_ready_s=0.4), azurite, fake_data_root) as fp:
        (dlz,) = fp.dataset_ids
        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}))
        assert run.exit_code == EXIT_OK
        assert fp.adhoc_requests > 1  # refused "not ready" first, then accepted
        assert_files_match(tmp_path, dlz_expected(fp, dlz))


async def test_not_ready_beyond_the_wait_timeout_fails_the_entry(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    async with dlz_fake(org(2, not_ready_s=600), azurite, fake_data_root) as fp:
        da, dlz = fp.dataset_ids
        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}, wait_timeout=0.3))
        assert run.exit_code == EXIT_FAILED and outcome(run, da).status == "ok"
        error = outcome(run, dlz).error
        assert error.kind == "not_ready" and "is not ready for an ad hoc run yet" in error
        assert fp.adhoc_requests > 1


async def test_a_run_already_under_way_is_waited_for(tmp_path: Path, azurite, fake_data_root: Path) -> None:
    async with dlz_fake(org(1, run_polls=3), azurite, fake_data_root) as fp:
        (dlz,) = fp.dataset_ids
        await start_run_elsewhere(fp, dlz)  # someone else's ad hoc run of the same flow, still in progress
        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}))
        assert run.exit_code == EXIT_OK
        assert fp.adhoc_requests == 2  # ours was refused: "already exists"
        assert len(fp.dlz_runs()) == 1 and len(fp.dlz_flows()) == 1  # that run exported, the flow reused
        assert_files_match(tmp_path, dlz_expected(fp, dlz))


class TamperedSas(AzuriteBlobs):
    def sas(self, ttl_s: float) -> str:
        token = super().sas(ttl_s)
        return token.replace("sig=", "sig=AAAA")


@pytest.mark.parametrize("how", ["expired", "refused by the Blob server"])
async def test_a_bad_sas_fails_the_dlz_entry(tmp_path: Path, azurite, fake_data_root: Path, how: str) -> None:
    cfg = org(2, sas_ttl_s=-120 if how == "expired" else 3600)
    fp = dlz_fake(cfg, azurite, fake_data_root)
    if how != "expired":
        fp.blobs = TamperedSas(azurite)
    async with fp:
        da, dlz = fp.dataset_ids
        run = await run_export(with_via(settings_for(fp, tmp_path), {dlz: "dlz"}))
        assert run.exit_code == EXIT_FAILED and outcome(run, da).status == "ok"
        error = outcome(run, dlz).error
        assert error.kind == "sas_expired"
        if how == "expired":
            assert "the DLZ credentials endpoint gave a SAS that expired at" in error
        else:
            assert "the Data Landing Zone refused the SAS while listing" in error and "HTTP 403" in error
        assert "sig=" not in error and fp.sas_issued[0] not in error


async def start_run_elsewhere(fp: Any, dataset_id: str) -> None:
    """A DLZ dataflow and an ad hoc run of it made by another client (through the fake's API)."""
    headers = {"Authorization": f"Bearer {fp.static_token}", "x-api-key": fp.client_id, "x-gw-ims-org-id": fp.org_id,
               "x-sandbox-name": fp.sandbox}
    spec = {"version": "1.0"}
    async with aiohttp.ClientSession(fp.url, headers=headers) as http:
        async def create(kind: str, body: dict[str, Any]) -> str:
            async with http.post(f"{FLOWSERVICE}/{kind}", json={"name": "theirs", **body}) as resp:
                return str((await resp.json())["id"])

        source = await create("sourceConnections", {"connectionSpec": {"id": DATASET_SOURCE_SPEC, **spec},
                                                    "params": {"datasets": [{"dataSetId": dataset_id, "name": "x"}]}})
        base = await create("connections", {"connectionSpec": {"id": DLZ_CONNECTION_SPEC, **spec}})
        target = await create("targetConnections", {"baseConnectionId": base, "connectionSpec": {"id": DLZ_CONNECTION_SPEC, **spec},
                                                    "params": {"path": "theirs", "compression": "GZIP"}})
        flow = await create("flows", {"flowSpec": {"id": DLZ_FLOW_SPEC, **spec}, "sourceConnectionIds": [source],
                                      "targetConnectionIds": [target]})
        body = {"activationInfo": {"destinations": [{"flowId": flow, "datasets": [{"id": dataset_id}]}]}}
        async with http.post(ADHOC, json=body) as resp:
            assert resp.status == 200
