"""The documented response samples (tests/fixtures, one per sample of ../shared/aep-api.md):
the engine's parsers accept each, and the fake answers the same requests with the same shape."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.checks.integrity import expected_record_count
from engine.config import Settings
from engine.errors import CredentialsRejected, PlatformError, Throttled
from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.model import BatchRef, FileTask
from engine.platform.audiences import job_batches, job_failure, job_status
from engine.platform.auth import TokenProvider, _ims_error, parse_token
from engine.platform.catalog import (
    created_dataset_id,
    downloadable,
    entries,
    predecessors,
    related_batches,
    related_datasets,
    replay_reason,
)
from engine.platform.client import PlatformClient, make_session
from engine.platform.dataaccess import href, length, listing_items
from engine.platform.discovery import Discovery
from engine.retry import RetryPolicy
from engine.transfer.fetcher import parse_content_range

FIXTURES = Path(__file__).parent / "fixtures"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_fixture_names_its_source_and_how_it_is_tested() -> None:
    assert len(ALL) >= 30
    for name in ALL:
        f = load(name)
        assert f["section"].startswith("aep-api.md §") and f["source"], name
        assert f["engine"] in ENGINE or f.get("engine_note"), f"{name}: no parser test and no reason"
        assert f["fake"] in FAKE or f.get("fake_note"), f"{name}: no fake request and no reason"


# ----------------------------------------------------------------------------- the engine's parsers


class StubClient:
    """Serves canned bodies by URL, the way Discovery calls get_json."""

    def __init__(self, pages: dict[str, Any]):
        self.pages = pages

    def url(self, path: str) -> Any:
        from yarl import URL
        return URL("https://platform.adobe.io").join(URL(path))

    async def get_json(self, url: str, params: Any = None) -> Any:
        if url in self.pages:
            return self.pages[url]
        raise AssertionError(f"unexpected request {url}")


async def _listed(body: Any, start: str = "/listing") -> list[FileTask]:
    tasks: list[FileTask] = []

    async def sink(task: FileTask) -> None:
        tasks.append(task)

    discovery = Discovery(StubClient({start: body}))  # type: ignore[arg-type]
    batch = BatchRef("ds", "batch")
    listing = await discovery.data_access.list_files(batch, [{"dataSetFileId": "dsf-1", "_links": {"self": {"href": start}}}], sink)
    assert listing.files == len(tasks)
    return tasks


async def engine_catalog_batches(f: dict) -> None:
    (key, obj), = downloadable(f["body"])
    assert key == obj["id"] == "01E5QSWCAASFQ054FNBKYV6TIQ"
    assert expected_record_count(obj) == 24340
    assert related_datasets(obj) == ["5cd9146b31dae914b75f654f"]
    assert predecessors(obj) == ["01E5N7EDQQP4JHJ93M7C3WM5SP"] and replay_reason(obj) == "Replacing for 2020-04-09"


async def engine_catalog_empty(f: dict) -> None:
    assert entries(f["body"]) == [] and downloadable(f["body"]) == []


async def engine_catalog_old_form(f: dict) -> None:
    (key, obj), = downloadable(f["body"])
    assert expected_record_count(obj) == 46721830
    data_id = "035e2520-5e69-11ea-b624-51ecfeba55d0"
    assert related_batches(obj) == [data_id] and key != data_id
    # the key lists nothing (404): the related batch id is where the files are
    files = {"data": [{"dataSetFileId": f"{data_id}-1"}]}

    class KeyMissing(StubClient):
        async def get_json(self, url: str, params: Any = None) -> Any:
            if key in url:
                from engine.errors import NotFound
                raise NotFound(404, "The requested batch was not found.")
            return await super().get_json(url, params)

    stub = KeyMissing({f"/data/foundation/export/batches/{data_id}/files": files})
    batch, dsfs = await Discovery(stub).data_access.resolve_batch("ds", key, obj)  # type: ignore[arg-type]
    assert batch.batch_id == data_id and batch.expected_records == 46721830 and dsfs == files["data"]


async def engine_catalog_dataset(f: dict) -> None:
    (key, obj), = entries(f["body"])
    assert key == "5cd9146b31dae914b75f654f" and obj["name"] == "Customer AI Scores - Web Conversion"


async def engine_created_dataset(f: dict) -> None:
    assert created_dataset_id(f["body"]) == "5b020a27e7040801dedba61b"


async def engine_batch_files(f: dict) -> None:
    stub = StubClient({"/batch": f["body"]})
    items = [i async for i in Discovery(stub).data_access._pages("/batch")]  # type: ignore[arg-type]
    assert [i["dataSetFileId"] for i in items] == [i["dataSetFileId"] for i in f["body"]["data"]]
    assert href(items[0]).startswith("https://platform.adobe.io:443/")


async def engine_batch_files_paged(f: dict) -> None:
    nxt = f["body"]["_links"]["next"]["href"]
    stub = StubClient({"/batch": f["body"], nxt: {"data": [{"dataSetFileId": "{FILE_ID_2}"}], "_page": {"limit": 1, "count": 6}}})
    items = [i async for i in Discovery(stub).data_access._pages("/batch")]  # type: ignore[arg-type]
    assert [i["dataSetFileId"] for i in items] == ["{FILE_ID_1}", "{FILE_ID_2}"]  # next followed, then the end


async def engine_files_listing(f: dict) -> None:
    nxt = f["body"]["_links"]["next"]["href"]
    tasks: list[FileTask] = []

    async def sink(task: FileTask) -> None:
        tasks.append(task)

    stub = StubClient({"/listing": f["body"], nxt: {"data": [], "_page": {"limit": 100, "count": 0}}})
    await Discovery(stub).data_access.list_files(BatchRef("ds", "b"), [{"dataSetFileId": "035e2520-5e69-11ea-b624-51ecfeba55d0-1",  # type: ignore[arg-type]
                                                            "_links": {"self": {"href": "/listing"}}}], sink)
    (task,) = tasks
    item = f["body"]["data"][0]
    assert task.size == 16214531 and task.url == item["_links"]["self"]["href"] and task.name == item["name"]


async def engine_files_directory(f: dict) -> None:
    child = f["body"]["data"][0]["_links"]["self"]["href"]
    part = "part-00000.snappy.parquet"
    leaf = {"data": [{"name": part, "length": "10", "_links": {"self": {"href": f"{child}?path={part}"}}}]}
    tasks: list[FileTask] = []

    async def sink(task: FileTask) -> None:
        tasks.append(task)

    stub = StubClient({"/dir": f["body"], child: leaf})
    await Discovery(stub).data_access.list_files(BatchRef("ds", "b"), [{"dataSetFileId": "8dcedb36-1cb2-4496-9a38-7b2041114b56-1",  # type: ignore[arg-type]
                                                            "_links": {"self": {"href": "/dir"}}}], sink)
    expected = [("8dcedb36-1cb2-4496-9a38-7b2041114b56-1-1", "part-00000.snappy.parquet", 10)]
    assert [(t.dataset_file_id, t.name, t.size) for t in tasks] == expected


async def engine_files_bare_array(f: dict) -> None:
    (task,) = await _listed(f["body"])
    assert task.size == 2576 and listing_items(f["body"]) == f["body"]


async def engine_failed_listing(f: dict) -> None:
    tasks = await _listed(f["body"])
    assert [t.name for t in tasks] == [f["body"]["data"][1]["name"]]  # _SUCCESS is a marker, skipped
    assert tasks[0].size == 1800


async def engine_meta_listing(f: dict) -> None:
    (task,) = await _listed(f["body"])
    assert task.name == "row_errors/conversion_errors_0.json" and task.size == 953


async def engine_content_range(f: dict) -> None:
    assert parse_content_range(f["headers"]["Content-Range"]) == (0, 99, 249058)
    assert length(f["headers"]["Content-Length"]) == 100


async def engine_ims_token(f: dict) -> None:
    assert parse_token(f["body"]) == ("{ACCESS_TOKEN}", 86399.0)


async def engine_ims_token_ms(f: dict) -> None:
    token, seconds = parse_token(f["body"])
    assert token == "{ACCESS_TOKEN}" and seconds == pytest.approx(86399.992)


async def engine_ims_error(f: dict) -> None:
    assert _ims_error(json.dumps(f["body"])) == ", error=invalid_scope"


async def engine_job_new(f: dict) -> None:
    assert job_status(f["body"]) == "NEW" and job_batches(f["body"]) == [("5b7c86968f7b6501e21ba9df", "da5cfb4de32c4b93a09f7e37fa53ad52")]


async def engine_job_succeeded(f: dict) -> None:
    assert job_status(f["body"]) == "SUCCEEDED"
    assert job_batches(f["body"]) == [("5b7c86968f7b6501e21ba9df", "da5cfb4de32c4b93a09f7e37fa53ad52")]


async def engine_job_per_segment(f: dict) -> None:
    assert job_batches(f["body"]) == [("{DATASET_ID}", "da5cfb4de32c4b93a09f7e37fa53ad52"), ("{DATASET_ID}", "df4gssdfb93a09f7e37fa53ad52")]
    # the profile export-jobs.md example writes `batches` as one object, not a list: read too
    single = {"destination": {"datasetId": "d", "batches": {"segmentId": "s", "batchId": "b1"}}}
    assert job_batches(single) == [("d", "b1")]


async def engine_job_failed(f: dict) -> None:
    assert job_status(f["body"]) == "FAILED"
    reason = job_failure(f["body"])
    assert "0090000009" in reason and "Job aborted." in reason


async def _through_client(name: str) -> Exception:
    """Serve the sample from a real server; the engine's client must map it (status, body, headers)."""
    f = load(name)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(f["body"], status=f["status"], headers=f.get("headers"))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    settings = Settings.model_validate({"platform": {"url": f"http://{host}:{port}", "org_id": "ORG@AdobeOrg"},
                                        "auth": {"client_id": "cid", "access_token": "static-token-123456"},
                                        "export": {"max_attempts": 1}, "datasets": ["5cd9146b31dae914b75f654f"]})
    policy = RetryPolicy(max_attempts=1, base=0.0, cap=0.0)
    try:
        async with make_session(settings) as session:
            client = PlatformClient(settings, session, TokenProvider(settings.auth, session, policy), policy)
            with pytest.raises(Exception) as info:
                await client.get_json(f["request"]["path"])
            return info.value
    finally:
        await runner.cleanup()


async def engine_gateway_error(f: dict) -> None:
    code = f["body"]["error_code"]
    exc = await _through_client(f"gateway_error_{code}")
    if code == "400003":  # a missing header is our bug, not bad credentials: no exit 3
        assert type(exc) is PlatformError and exc.error_code == code
    else:
        assert isinstance(exc, CredentialsRejected), exc


async def engine_problem_error(f: dict) -> None:
    exc = await _through_client("content_type_error_400")
    assert type(exc) is PlatformError and exc.status == 400 and "A valid content-type must be specified" in str(exc)


async def engine_throttled(f: dict) -> None:
    exc = await _through_client("throttled_429")
    assert isinstance(exc, Throttled) and exc.retry_after == 38.0 and exc.error_code == "429050"


ENGINE: dict[str, Callable[[dict], Awaitable[None]]] = {
    name.removeprefix("engine_"): fn for name, fn in globals().items() if name.startswith("engine_")}


@pytest.mark.parametrize("name", [n for n in ALL if load(n)["engine"]])
async def test_the_engine_reads_the_sample(name: str) -> None:
    f = load(name)
    await ENGINE[f["engine"]](f)


# ----------------------------------------------------------------------------- the fake's shapes


def shape_problems(sample: Any, actual: Any, path: str = "", omit: tuple[str, ...] = (), maps: tuple[str, ...] = ()) -> list[str]:
    """Every key of the sample present in the fake's answer, with the same value type, recursively;
    lists compared item by item; `maps` (keys that are data) by their values' types only.
    `...` placeholders and `omit` paths are skipped; null matches anything."""
    if path in omit or sample is None:
        return []
    if path in maps:
        if not isinstance(actual, dict) or (sample and not actual):
            return [f"{path}: a non-empty object expected, got {actual!r}"]
        first = next(iter(actual.values()), None)
        return [p for value in sample.values() for p in shape_problems(value, first, f"{path}.*", omit, maps)]
    if isinstance(sample, dict):
        if not isinstance(actual, dict):
            return [f"{path or '(body)'}: object expected, got {type(actual).__name__}"]
        problems = []
        for key, value in sample.items():
            sub = f"{path}.{key}" if path else key
            if key in ("...", "…") or sub in omit:
                continue
            if key not in actual:
                problems.append(f"{sub}: missing")
            else:
                problems += shape_problems(value, actual[key], sub, omit, maps)
        return problems
    if isinstance(sample, list):
        if not isinstance(actual, list):
            return [f"{path or '(body)'}: array expected, got {type(actual).__name__}"]
        problems = []
        for i, value in enumerate(sample):
            sub = f"{path}[{i}]"
            if sub in omit:
                continue
            problems += shape_problems(value, actual[i], sub, omit, maps) if i < len(actual) else [f"{sub}: missing"]
        return problems
    numbers = (int, float)
    either_bool = isinstance(sample, bool) or isinstance(actual, bool)
    if (either_bool or not (isinstance(sample, numbers) and isinstance(actual, numbers))) and type(sample) is not type(actual):
        return [f"{path}: {type(sample).__name__} expected, got {type(actual).__name__} ({actual!r})"]
    return []


def test_the_shape_check_can_fail() -> None:
    sample = load("export_files_listing")["body"]
    as_number = json.loads(json.dumps(sample))
    as_number["data"][0]["length"] = 16214531
    assert shape_problems(sample, as_number) == ["data[0].length: str expected, got int (16214531)"]
    del as_number["_links"]["next"]
    assert "_links.next: missing" in shape_problems(sample, as_number)
    assert shape_problems(sample, sample) == []


SEGMENT = "52c26d0d-45f2-47a2-ab30-ed06abc981ff"
SPECS = {  # one org holding a dataset for every sample
    "replaced": DatasetSpec(batches=3, replacement=True, files_per_dataset_file=2, rows_per_file=20, page_size=1, dataset_files=2),
    "old": DatasetSpec(metrics_form="old", batch_key="related", files_per_dataset_file=1, rows_per_file=20),
    "nested": DatasetSpec(nested=True, files_per_dataset_file=1, rows_per_file=20),
    "bare": DatasetSpec(listing_shape="bare_array", length_as="number", files_per_dataset_file=1, rows_per_file=20),
    "audience": DatasetSpec(audience_job=True, files_per_dataset_file=1, rows_per_file=20),
}


@pytest.fixture(scope="module")
def org(fake_data_root: Path) -> Any:
    from conftest import with_data_dir

    fp = FakePlatform.run_in_thread(with_data_dir(FakeConfig(seed=61, datasets=list(SPECS.values())), fake_data_root))
    try:
        yield fp, dict(zip(SPECS, fp.dataset_ids, strict=True))
    finally:
        fp.stop()


Answer = tuple[int, dict[str, str], Any]


def _h(fp: FakePlatform) -> dict[str, str]:
    return {"Authorization": f"Bearer {fp.static_token}", "x-api-key": fp.client_id,
            "x-gw-ims-org-id": fp.org_id, "x-sandbox-name": fp.sandbox}


async def _ask(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Answer:
    async with http.request(method, url, **kw) as r:
        body = await r.json(content_type=None) if method != "HEAD" and r.status != 206 else None
        return r.status, dict(r.headers), body


async def _job_until(fp: FakePlatform, http: aiohttp.ClientSession, body: dict, final: str) -> Answer:
    _, _, job = await _ask(http, "POST", f"{fp.url}/data/core/ups/export/jobs", json=body, headers=_h(fp))
    for _ in range(10):
        answer = await _ask(http, "GET", f"{fp.url}/data/core/ups/export/jobs/{job['id']}", headers=_h(fp))
        if answer[2]["status"] == final:
            return answer
    raise AssertionError(f"job never {final}")


def _job_body(dataset_id: str, segments: tuple[str, ...] = (SEGMENT,), per_batch: bool = False,
              status: tuple[str, ...] = ("realized",), key: str = "datasetId") -> dict:
    return {"filter": {"segments": [{"segmentId": s, "segmentNs": "ups", "status": list(status)} for s in segments]},
            "destination": {key: dataset_id, "segmentPerBatch": per_batch}, "schema": {"name": "_xdm.context.profile"}}


async def fake_gateway_error(fp: FakePlatform, ids: dict, http: aiohttp.ClientSession, code: str) -> Answer:
    h = _h(fp)
    change = {"403010": ("Authorization", None), "401013": ("Authorization", "Bearer bogus"), "403000": ("x-api-key", None),
              "403003": ("x-api-key", "other"), "400003": ("x-gw-ims-org-id", None),
              "403025": ("x-gw-ims-org-id", "ABC@AdobeOrg"), "403027": ("x-gw-ims-org-id", "not-an-org")}[code]
    if change[1] is None:
        del h[change[0]]
    else:
        h[change[0]] = change[1]
    return await _ask(http, "GET", f"{fp.url}/data/foundation/catalog/batches", headers=h)


async def fake_content_type_error(fp, ids, http) -> Answer:
    return await _ask(http, "POST", f"{fp.url}/data/core/ups/export/jobs", data="x", headers={**_h(fp), "Content-Type": "text/plain"})


async def fake_throttled(fp, ids, http) -> Answer:
    fp.faults.p_429, fp.faults.retry_after_s = 1.0, 38
    try:
        return await _ask(http, "GET", f"{fp.url}/data/foundation/catalog/batches?throttle=1", headers=_h(fp))
    finally:
        fp.faults.p_429, fp.faults.retry_after_s = 0.0, 1.0


def _form(fp: FakePlatform, **extra: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": fp.client_id, "client_secret": fp.client_secret, **extra}


async def fake_ims_token(fp, ids, http) -> Answer:
    return await _ask(http, "POST", f"{fp.ims_url}/ims/token/v3", data=_form(fp, scope="openid,AdobeID"))


async def fake_ims_error_invalid_scope(fp, ids, http) -> Answer:
    return await _ask(http, "POST", f"{fp.ims_url}/ims/token/v3", data=_form(fp))


async def fake_catalog_batches(fp, ids, http) -> Answer:
    q = f"dataSet={ids['replaced']}&createdClient=acp_foundation_push&status=success&orderBy=desc:created&limit=1"
    return await _ask(http, "GET", f"{fp.url}/data/foundation/catalog/batches?{q}", headers=_h(fp))


async def fake_catalog_batches_empty(fp, ids, http) -> Answer:
    return await _ask(http, "GET", f"{fp.url}/data/foundation/catalog/batches?dataSet={'0' * 24}", headers=_h(fp))


async def fake_catalog_batch_old_metrics(fp, ids, http) -> Answer:
    q = f"dataSet={ids['old']}&status=success&orderBy=desc:created&limit=1"
    return await _ask(http, "GET", f"{fp.url}/data/foundation/catalog/batches?{q}", headers=_h(fp))


async def fake_catalog_dataset(fp, ids, http) -> Answer:
    return await _ask(http, "GET", f"{fp.url}/data/foundation/catalog/dataSets/{ids['replaced']}", headers=_h(fp))


async def fake_catalog_last_batches(fp, ids, http) -> Answer:
    return await _ask(http, "GET", f"{fp.url}/data/foundation/catalog/lastBatches?dataSetId={ids['replaced']}", headers=_h(fp))


async def fake_catalog_create_dataset(fp, ids, http) -> Answer:
    body = load("catalog_create_dataset")["request"]["json"]
    return await _ask(http, "POST", f"{fp.url}/data/foundation/catalog/dataSets", json=body, headers=_h(fp))


async def fake_export_batch_files(fp, ids, http) -> Answer:
    return await _ask(http, "GET", f"{fp.url}/data/foundation/export/batches/{fp.latest_batch(ids['old']).data_id}/files", headers=_h(fp))


async def fake_export_batch_files_paged(fp, ids, http) -> Answer:
    batch = fp.latest_batch(ids["replaced"]).data_id
    return await _ask(http, "GET", f"{fp.url}/data/foundation/export/batches/{batch}/files?start=0&limit=1", headers=_h(fp))


async def fake_export_files_listing(fp, ids, http) -> Answer:
    return await _ask(http, "GET", f"{fp.url}/data/foundation/export/files/{fp.latest_batch(ids['replaced']).data_id}-1", headers=_h(fp))


async def fake_export_files_directory(fp, ids, http) -> Answer:
    return await _ask(http, "GET", f"{fp.url}/data/foundation/export/files/{fp.latest_batch(ids['nested']).data_id}-1", headers=_h(fp))


async def fake_export_files_bare_array(fp, ids, http) -> Answer:
    return await _ask(http, "GET", f"{fp.url}/data/foundation/export/files/{fp.latest_batch(ids['bare']).data_id}-1", headers=_h(fp))


def _a_part(fp: FakePlatform) -> str:
    e = fp.expected_files()[0]
    return f"{fp.url}/data/foundation/export/files/{e.dataset_file_id}?path={e.name}"


async def fake_export_download_range_206(fp, ids, http) -> Answer:
    return await _ask(http, "GET", _a_part(fp), headers={**_h(fp), "Range": "bytes=0-99"})


async def fake_export_head(fp, ids, http) -> Answer:
    return await _ask(http, "HEAD", _a_part(fp), headers=_h(fp))


async def fake_ups_job_create(fp, ids, http) -> Answer:
    body = json.loads(json.dumps(load("ups_job_create")["request"]["json"]))
    body["destination"]["datasetId"] = ids["audience"]
    return await _ask(http, "POST", f"{fp.url}/data/core/ups/export/jobs", json=body, headers=_h(fp))


async def fake_ups_job_get(fp, ids, http) -> Answer:
    (jid,) = [j for j in fp.export_job_ids if j == 11037]  # the preconfigured job
    for _ in range(5):
        answer = await _ask(http, "GET", f"{fp.url}/data/core/ups/export/jobs/{jid}", headers=_h(fp))
        if answer[2]["status"] == "SUCCEEDED":
            return answer
    raise AssertionError("the preconfigured job never succeeded")


async def fake_ups_job_segment_per_batch(fp, ids, http) -> Answer:
    body = _job_body(ids["audience"], ("segment1", "segment2"), per_batch=True, key="dataSetId")  # the sample's spelling
    return await _job_until(fp, http, body, "SUCCEEDED")


FAILING = _job_body("f" * 24, ("no-such-segment",), status=("realized", "existing"))  # as the failed sample was asked


async def fake_ups_job_failed(fp, ids, http) -> Answer:
    return await _job_until(fp, http, FAILING, "FAILED")


async def fake_ups_job_list(fp, ids, http) -> Answer:
    await _job_until(fp, http, FAILING, "FAILED")  # older
    await _job_until(fp, http, _job_body(ids["audience"]), "SUCCEEDED")  # newer: listed first
    return await _ask(http, "GET", f"{fp.url}/data/core/ups/export/jobs?limit=2", headers=_h(fp))


async def fake_ups_job_delete(fp, ids, http) -> Answer:
    _, _, job = await _ask(http, "POST", f"{fp.url}/data/core/ups/export/jobs", json=_job_body(ids["audience"]), headers=_h(fp))
    return await _ask(http, "DELETE", f"{fp.url}/data/core/ups/export/jobs/{job['id']}", headers=_h(fp))


FAKE: dict[str, Any] = {name.removeprefix("fake_"): fn for name, fn in globals().items() if name.startswith("fake_")}
FAKE.update({f"gateway_error_{c}": (lambda c: lambda fp, ids, http: fake_gateway_error(fp, ids, http, c))(c)  # noqa: B023 - bound by the outer lambda's argument
             for c in ("403010", "401013", "403000", "403003", "400003", "403025", "403027")})


@pytest.mark.parametrize("name", [n for n in ALL if load(n)["fake"]])
async def test_the_fake_answers_with_the_samples_shape(name: str, org) -> None:
    fp, ids = org
    f = load(name)
    async with aiohttp.ClientSession() as http:
        status, headers, body = await FAKE[f["fake"]](fp, ids, http)
    assert status == f["status"], (status, body)
    for header, value in (f.get("headers") or {}).items():
        assert header in headers, f"{name}: header {header} missing"
        if header == "Content-Range":
            assert parse_content_range(headers[header])[:2] == parse_content_range(value)[:2]
    sample = f["body"]
    if f.get("keyed_by_id"):
        assert isinstance(body, dict) and len(body) == len(sample), body
        for (_s_key, s_obj), (key, obj) in zip(sample.items(), body.items(), strict=False):
            if "id" in s_obj:
                assert obj["id"] == key
        sample, body = next(iter(sample.values())), next(iter(body.values()))
    problems = shape_problems(sample, body, omit=tuple(f.get("fake_may_omit", ())), maps=tuple(f.get("maps", ())))
    assert not problems, f"{name}: the fake differs from the documented sample: {problems}"
