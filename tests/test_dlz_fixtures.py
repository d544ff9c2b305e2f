"""The documented samples of ../shared/aep-dataset-export.md (tests/fixtures/dlz): the engine's
parsers accept each, and the fake answers the same requests with the same shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_fixtures import _ask, _h, shape_problems

from engine.errors import ExportError, NotYet, PlatformError
from engine.fake import DatasetSpec, FakeConfig
from engine.platform.dlz import DlzSas
from engine.platform.flowservice import AdhocRefused, FlowService, run_errors, run_id_of, run_metric, run_status
from engine.retry import RetryPolicy
from engine.transfer.fetcher import parse_content_range
from engine.validators import Validator

FIXTURES = Path(__file__).parent / "fixtures" / "dlz"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_sample_names_its_source_and_how_it_is_tested() -> None:
    assert len(ALL) >= 15
    for name in ALL:
        f = load(name)
        assert f["section"].startswith("aep-dataset-export.md §") and f["source"] and f["note"], name
        assert f["engine"] in ENGINE or f.get("engine_note"), f"{name}: no parser test and no reason"
        assert f["fake"] in FAKE or f.get("fake_note"), f"{name}: no fake request and no reason"


# ----------------------------------------------------------------------------- the engine's parsers


class Stub:
    """Answers the Flow Service calls the way PlatformClient does: canned bodies, or an error."""

    def __init__(self, body: Any = None, error: Exception | None = None):
        self.body, self.error = body, error
        self.policy = RetryPolicy(max_attempts=1, base=0, cap=0)

    async def get_json(self, url: str, params: Any = None) -> Any:
        return self.body

    async def post_json(self, path: str, body: Any, headers: Any = None) -> Any:
        if self.error is not None:
            raise self.error
        return self.body


async def engine_eligible(f: dict[str, Any]) -> None:
    assert await FlowService(Stub(f["body"])).eligible() == {"5ba9452e2e11a5000058f9fe": "Web events"}  # type: ignore[arg-type]


async def engine_created_id(f: dict[str, Any]) -> None:
    assert await FlowService(Stub(f["body"]))._create("flows", {}) == f["body"]["id"]  # type: ignore[arg-type]


async def engine_run_id(f: dict[str, Any]) -> None:
    assert run_id_of(f["body"]) == "a0d7fbe3-2c1c-4fcc-9f9a-0b2e5e2dbd61"


async def engine_adhoc_refusal(f: dict[str, Any]) -> None:
    error = PlatformError(f["status"], f["body"]["message"], error_code=f["body"]["error_code"])
    service = FlowService(Stub(error=error))  # type: ignore[arg-type]
    if "not ready" in f["body"]["message"]:
        with pytest.raises(NotYet):
            await service._adhoc("flow", "ds")
    elif "can not be executed" in f["body"]["message"]:
        with pytest.raises(AdhocRefused, match="not enabled for this org"):
            await service._adhoc("flow", "ds")
    else:
        assert await service._adhoc("flow", "ds") is None  # that run is waited for


async def engine_run_success(f: dict[str, Any]) -> None:
    (run,) = f["body"]["items"]
    assert run_status(run) == "success" and not run_errors(run)
    assert [run_metric(run, *m) for m in (("fileSummary", "outputFileCount"), ("sizeSummary", "outputBytes"),
                                          ("recordSummary", "outputRecordCount"))] == [3, 24576, 1200]


async def engine_run_failed(f: dict[str, Any]) -> None:
    (run,) = f["body"]["items"]
    assert run_status(run) == "failed"
    assert run_errors(run) == ": CONNECTOR-2001-500 Something went wrong while writing to the destination"


async def engine_credentials(f: dict[str, Any]) -> None:
    sas = DlzSas(Stub(f["body"]))  # type: ignore[arg-type]
    assert await sas.container() == "https://dlblobprodnld.blob.core.windows.net/dlz-destination"
    assert await sas.sign("https://x/c/b") == f"https://x/c/b?{f['body']['SASToken']}"


async def engine_credentials_s3(f: dict[str, Any]) -> None:
    with pytest.raises(ExportError, match="hosted on Amazon S3: only the Azure Blob DLZ is supported"):
        await DlzSas(Stub(f["body"])).container()  # type: ignore[arg-type]


async def engine_content_range(f: dict[str, Any]) -> None:
    assert parse_content_range(f["headers"]["Content-Range"]) == (0, 99, 24576)
    validator = Validator.of(f["headers"])
    assert validator is not None and validator.strong  # the resume validator: If-Range, no confirmation window


ENGINE = {name.removeprefix("engine_"): fn for name, fn in globals().items() if name.startswith("engine_")}


@pytest.mark.parametrize("name", [n for n in ALL if load(n)["engine"]])
async def test_the_engine_reads_the_sample(name: str) -> None:
    f = load(name)
    await ENGINE[f["engine"]](f)


# ----------------------------------------------------------------------------- the fake's answers


@pytest.fixture
async def dlz_org(make_fake):
    cfg = FakeConfig(seed=2301, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=30) for _ in range(3)])
    cfg.dlz.run_polls = 1
    async with make_fake(cfg) as fp:
        fp.dlz.failing.append(fp.dataset_ids[2])
        yield fp


Answer = tuple[int, dict[str, str], Any]
FS = "/data/foundation/flowservice"


async def fake_eligible_datasets(fp, http) -> Answer:
    return await _ask(http, "GET", fp.url + load("eligible_datasets")["request"]["path"], headers=_h(fp))


def _creator(kind: str, sample: str):
    async def create(fp, http) -> Answer:
        return await _ask(http, "POST", f"{fp.url}{FS}/{kind}", json=load(sample)["request"]["json"], headers=_h(fp))
    return create


async def _flow(fp, http, dataset: int = 0) -> tuple[str, str]:
    """A DLZ flow for the fake's dataset (connections included), made as the samples make it."""
    dataset_id = fp.dataset_ids[dataset]
    source = load("source_connection_create")["request"]["json"]
    source["params"]["datasets"][0]["dataSetId"] = dataset_id
    s = (await _ask(http, "POST", f"{fp.url}{FS}/sourceConnections", json=source, headers=_h(fp)))[2]["id"]
    base = load("base_connection_create")["request"]["json"]
    b = (await _ask(http, "POST", f"{fp.url}{FS}/connections", json=base, headers=_h(fp)))[2]["id"]
    target = {**load("target_connection_create")["request"]["json"], "baseConnectionId": b}
    t = (await _ask(http, "POST", f"{fp.url}{FS}/targetConnections", json=target, headers=_h(fp)))[2]["id"]
    flow = {**load("flow_create")["request"]["json"], "sourceConnectionIds": [s], "targetConnectionIds": [t]}
    return (await _ask(http, "POST", f"{fp.url}{FS}/flows", json=flow, headers=_h(fp)))[2]["id"], dataset_id


async def _adhoc(fp, http, flow: str, dataset_id: str) -> Answer:
    body = {"activationInfo": {"destinations": [{"flowId": flow, "datasets": [{"id": dataset_id}]}]}}
    return await _ask(http, "POST", f"{fp.url}/data/core/activation/disflowprovider/adhocrun", json=body,
                      headers={**_h(fp), **load("adhoc_run")["request"]["headers"]})


async def fake_adhoc_run(fp, http) -> Answer:
    return await _adhoc(fp, http, *await _flow(fp, http))


async def fake_adhoc_not_ready(fp, http) -> Answer:
    fp.dlz.not_ready_s = 600
    return await _adhoc(fp, http, *await _flow(fp, http))


async def fake_adhoc_not_enabled(fp, http) -> Answer:
    fp.dlz.adhoc_enabled = False
    return await _adhoc(fp, http, *await _flow(fp, http))


async def fake_adhoc_already_exists(fp, http) -> Answer:
    flow = await _flow(fp, http)
    await _adhoc(fp, http, *flow)
    return await _adhoc(fp, http, *flow)


async def _runs_until(fp, http, dataset: int, status: str) -> Answer:
    flow, dataset_id = await _flow(fp, http, dataset)
    await _adhoc(fp, http, flow, dataset_id)
    for _ in range(5):
        answer = await _ask(http, "GET", f"{fp.url}{FS}/runs?property=flowId=={flow}", headers=_h(fp))
        if answer[2]["items"][0]["metrics"]["statusSummary"]["status"] == status:
            return answer
    raise AssertionError(f"the run never ended {status}")


async def fake_runs_success(fp, http) -> Answer:
    return await _runs_until(fp, http, 0, "success")


async def fake_runs_failed(fp, http) -> Answer:
    return await _runs_until(fp, http, 2, "failed")


async def fake_dlz_credentials(fp, http) -> Answer:
    return await _ask(http, "GET", fp.url + load("dlz_credentials")["request"]["path"], headers=_h(fp))


async def _a_blob(fp, http, headers: dict[str, str]) -> Answer:
    await fake_runs_success(fp, http)
    (run,) = [r for r in fp.dlz_runs() if not r.failed]
    name = run.files[0][0]
    sas = (await fake_dlz_credentials(fp, http))[2]["SASToken"]
    async with http.get(f"{fp.blobs.container_url()}/{name}?{sas}", headers=headers) as r:
        return r.status, dict(r.headers), None  # a blob's bytes, or the Blob service's XML error


async def fake_blob_range_206(fp, http) -> Answer:
    return await _a_blob(fp, http, {"x-ms-range": "bytes=0-99"})


async def fake_blob_range_416(fp, http) -> Answer:
    return await _a_blob(fp, http, {"Range": "bytes=99999999-"})


FAKE: dict[str, Any] = {name.removeprefix("fake_"): fn for name, fn in globals().items() if name.startswith("fake_")}
FAKE.update({f"create_{kind}": _creator(kind, sample) for kind, sample in (
    ("sourceConnections", "source_connection_create"), ("connections", "base_connection_create"),
    ("targetConnections", "target_connection_create"), ("flows", "flow_create"))})


@pytest.mark.parametrize("name", [n for n in ALL if load(n)["fake"]])
async def test_the_fake_answers_with_the_samples_shape(name: str, dlz_org) -> None:
    fp = dlz_org
    f = load(name)
    async with aiohttp.ClientSession() as http:
        status, headers, body = await FAKE[f["fake"]](fp, http)
    assert status == f["status"], (status, body)
    headers = {k.lower(): v for k, v in headers.items()}
    for header, value in (f.get("headers") or {}).items():
        assert header.lower() in headers, f"{name}: header {header} missing"
        if header == "Content-Range" and status == 206:
            assert parse_content_range(headers["content-range"])[:2] == parse_content_range(value)[:2]
    if f["body"] is not None:
        problems = shape_problems(f["body"], body, omit=tuple(f.get("fake_may_omit", ())))
        assert not problems, f"{name}: the fake differs from the documented sample: {problems}"
        if "message" in f["body"]:
            assert body["message"].split(" for ")[0] == f["body"]["message"].split(" for ")[0]
