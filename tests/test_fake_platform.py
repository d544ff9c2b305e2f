"""Contract tests for the fake AEP server (engine/fake), against a real loopback server."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from engine.fake import DatasetSpec, FakeConfig, FakePlatform, Faults

CAT = "/data/foundation/catalog"
EXP = "/data/foundation/export"


def headers(fp: FakePlatform, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or fp.static_token}", "x-api-key": fp.client_id,
            "x-gw-ims-org-id": fp.org_id, "x-sandbox-name": fp.sandbox}


@pytest.fixture
async def fp() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(FakeConfig.demo(), host="127.0.0.1", port=0) as p:
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def get_json(http: aiohttp.ClientSession, url: str, hdrs: dict[str, str], status: int = 200) -> Any:
    async with http.get(url, headers=hdrs) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def list_all(http: aiohttp.ClientSession, fp: FakePlatform, url: str) -> list[dict[str, Any]]:
    """Follow _links.next; accept the bare-array shape too."""
    out: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        body = await get_json(http, next_url, headers(fp))
        if isinstance(body, list):
            return out + body
        out += body["data"]
        next_url = body.get("_links", {}).get("next", {}).get("href")
    return out


async def collect_parts(http: aiohttp.ClientSession, fp: FakePlatform, batch_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Walk batch -> dataSetFiles (-> nested dataSetFiles) -> parts, like a client would."""
    parts: list[tuple[str, dict[str, Any]]] = []
    todo = [f["_links"]["self"]["href"] for f in await list_all(http, fp, f"{fp.url}{EXP}/batches/{batch_id}/files")]
    while todo:
        href = todo.pop()
        for item in await list_all(http, fp, href):
            if "dataSetFileId" in item:
                todo.append(item["_links"]["self"]["href"])
            else:
                parts.append((href, item))
    return parts


# ----------------------------------------------------------------------------- IMS + gateway


async def test_token_exchange_and_wrong_secret(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    form = {"grant_type": "client_credentials", "client_id": fp.client_id,
            "client_secret": fp.client_secret, "scope": "openid,AdobeID,read_organizations"}
    async with http.post(f"{fp.ims_url}/ims/token/v3", data=form) as r:
        assert r.status == 200
        tok = await r.json()
    assert tok["token_type"] == "bearer" and tok["expires_in"] == 86399
    await get_json(http, f"{fp.url}{CAT}/dataSets/{fp.dataset_ids[0]}", headers(fp, tok["access_token"]))
    async with http.post(f"{fp.ims_url}/ims/token/v3", data={**form, "client_secret": "nope"}) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_client"
    assert fp.stats.tokens_issued == 1


async def test_token_expiry() -> None:
    cfg = FakeConfig.small(1, files=1, rows=10, faults=Faults(token_lifetime_s=0.2))
    async with FakePlatform(cfg) as fp, aiohttp.ClientSession() as http:
        form = {"grant_type": "client_credentials", "client_id": fp.client_id,
                "client_secret": fp.client_secret, "scope": "openid"}
        async with http.post(f"{fp.ims_url}/ims/token/v3", data=form) as r:
            tok = await r.json()
        assert tok["expires_in"] == 1
        url = f"{fp.url}{CAT}/dataSets/{fp.dataset_ids[0]}"
        await get_json(http, url, headers(fp, tok["access_token"]))
        import asyncio
        await asyncio.sleep(0.3)
        body = await get_json(http, url, headers(fp, tok["access_token"]), status=401)
        assert body["error_code"] == "401013"


@pytest.mark.parametrize("drop,change,status,code", [
    ("Authorization", None, 403, "403010"),
    (None, ("Authorization", "Bearer bogus"), 401, "401013"),
    ("x-api-key", None, 403, "403000"),
    (None, ("x-api-key", "other"), 403, "403003"),
    ("x-gw-ims-org-id", None, 400, "400003"),
    (None, ("x-gw-ims-org-id", "ABC@AdobeOrg"), 403, "403025"),
    (None, ("x-gw-ims-org-id", "not-an-org"), 403, "403027"),
    (None, ("x-sandbox-name", "dev"), 403, "403001"),
])
async def test_gateway_header_errors(fp: FakePlatform, http: aiohttp.ClientSession, drop: str | None,
                                     change: tuple[str, str] | None, status: int, code: str) -> None:
    h = headers(fp)
    if drop:
        del h[drop]
    if change:
        h[change[0]] = change[1]
    body = await get_json(http, f"{fp.url}{CAT}/batches", h, status=status)
    assert body["error_code"] == code and body["message"]


# ----------------------------------------------------------------------------- Catalog


async def test_catalog_limit_validation(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    for bad in ("0", "101", "x"):
        body = await get_json(http, f"{fp.url}{CAT}/batches?limit={bad}", headers(fp), status=400)
        assert "100" in body["detail"]
    assert len(await get_json(http, f"{fp.url}{CAT}/batches?limit=3", headers(fp))) == 3
    assert await get_json(http, f"{fp.url}{CAT}/batches?dataSet=000000000000000000000000", headers(fp)) == {}


async def test_catalog_default_limit(http: aiohttp.ClientSession) -> None:
    async with FakePlatform(FakeConfig.small(6, files=1, rows=5)) as fp:  # 24 batches
        assert len(await get_json(http, f"{fp.url}{CAT}/batches", headers(fp))) == 20
        assert len(await get_json(http, f"{fp.url}{CAT}/batches?start=20", headers(fp))) == 4


async def test_catalog_latest_successful_batch(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    ds = fp.dataset_ids[0]
    q = f"dataSet={ds}&createdClient=acp_foundation_push&status=success&orderBy=desc:created&limit=1"
    body = await get_json(http, f"{fp.url}{CAT}/batches?{q}", headers(fp))
    (key, batch), = body.items()
    assert key == batch["id"] == fp.latest_batch(ds).key
    assert batch["metrics"]["outputRecordCount"] == sum(e.rows for e in fp.expected_files() if e.dataset_id == ds)
    # newer batches exist but are not successful
    everything = await get_json(http, f"{fp.url}{CAT}/batches?dataSet={ds}&orderBy=desc:created", headers(fp))
    statuses = [b["status"] for b in everything.values()]
    assert statuses[:3] == ["processing", "failed", "success"]
    created = [b["created"] for b in everything.values()]
    assert created == sorted(created, reverse=True)
    # negation, exclusive createdAfter, legacy sort, properties
    not_ok = await get_json(http, f"{fp.url}{CAT}/batches?dataSet={ds}&status=!success", headers(fp))
    assert {b["status"] for b in not_ok.values()} == {"processing", "failed"}
    after = await get_json(http, f"{fp.url}{CAT}/batches?dataSet={ds}&createdAfter={batch['created']}", headers(fp))
    assert key not in after and len(after) == 2
    asc = await get_json(http, f"{fp.url}{CAT}/batches?dataSet={ds}&sort=asc:created&properties=status", headers(fp))
    assert next(iter(asc.values())) == {"status": "success"}
    paged = await get_json(http, f"{fp.url}{CAT}/batches?dataSet={ds}&orderBy=desc:created&limit=1&start=1", headers(fp))
    assert next(iter(paged.values()))["status"] == "failed"


async def test_catalog_variants(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    old_ds, related_ds = fp.dataset_ids[1], fp.dataset_ids[2]
    old = await get_json(http, f"{fp.url}{CAT}/batches?dataSet={old_ds}&status=active", headers(fp))
    assert "recordsWritten" in next(iter(old.values()))["metrics"]
    rel = await get_json(http, f"{fp.url}{CAT}/batches?dataSet={related_ds}&status=success&orderBy=desc:created&limit=1", headers(fp))
    (key, b), = rel.items()
    data_id = next(r["id"] for r in b["relatedObjects"] if r["type"] == "batch")
    assert data_id != key
    assert (await get_json(http, f"{fp.url}{EXP}/batches/{key}/files", headers(fp)))["data"] == []
    assert len(await list_all(http, fp, f"{fp.url}{EXP}/batches/{data_id}/files")) == 2
    await get_json(http, f"{fp.url}{CAT}/dataSets/000000000000000000000000", headers(fp), status=404)
    ds = await get_json(http, f"{fp.url}{CAT}/dataSets/{related_ds}", headers(fp))
    assert ds[related_ds]["lastSuccessfulBatch"] == key


# ----------------------------------------------------------------------------- Data Access


async def test_listings_cover_every_file_once(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    expected = fp.expected_files()
    got: list[tuple[str, str]] = []
    for ds in fp.dataset_ids:
        for href, item in await collect_parts(http, fp, fp.latest_batch(ds).data_id):
            if item["name"] == "_SUCCESS":
                assert str(item["length"]) == "0"
                continue
            assert int(item["length"]) == next(e.size for e in expected if e.name == item["name"]
                                               and href.endswith("/" + e.dataset_file_id))
            got.append((href.rsplit("/", 1)[1], item["name"]))
    assert sorted(got) == sorted((e.dataset_file_id, e.name) for e in expected)
    assert fp.stats.requests["export.listing"] >= 6  # paged dataset needs 3 pages alone


async def test_listing_shapes(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    paged = fp.latest_batch(fp.dataset_ids[1])
    first = await get_json(http, f"{fp.url}{EXP}/files/{paged.data_id}-1", headers(fp))
    assert len(first["data"]) == 5 and "next" in first["_links"] and isinstance(first["data"][0]["length"], int)
    bare = fp.latest_batch(fp.dataset_ids[2])
    arr = await get_json(http, f"{fp.url}{EXP}/files/{bare.data_id}-1", headers(fp))
    assert isinstance(arr, list) and len(arr) == 2
    nested = fp.latest_batch(fp.dataset_ids[3])
    top = await get_json(http, f"{fp.url}{EXP}/files/{nested.data_id}-1", headers(fp))
    assert all("dataSetFileId" in i for i in top["data"]) and "next" not in top["_links"]
    plain = await get_json(http, f"{fp.url}{EXP}/files/{fp.latest_batch(fp.dataset_ids[0]).data_id}-1", headers(fp))
    assert isinstance(plain["data"][0]["length"], str) and plain["data"][0]["name"] == "_SUCCESS"


async def test_download_bytes_match_expected(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    for e in fp.expected_files():
        url = f"{fp.url}{EXP}/files/{e.dataset_file_id}"
        async with http.get(url, params={"path": e.name}, headers=headers(fp)) as r:
            assert r.status == 200
            data = await r.read()
        assert len(data) == e.size and hashlib.sha256(data).hexdigest() == e.sha256
        assert data[:4] == b"PAR1" and data[-4:] == b"PAR1"
    assert fp.stats.bytes_sent == sum(e.size for e in fp.expected_files())


async def test_range_head_and_errors(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    e = fp.expected_files()[0]
    url, p, h = f"{fp.url}{EXP}/files/{e.dataset_file_id}", {"path": e.name}, headers(fp)
    raw = e.source_path.read_bytes()
    async with http.get(url, params=p, headers={**h, "Range": "bytes=0-99"}) as r:
        assert r.status == 206 and r.headers["Content-Range"] == f"bytes 0-99/{e.size}"
        assert r.headers["Content-Length"] == "100" and await r.read() == raw[:100]
    async with http.get(url, params=p, headers={**h, "Range": "bytes=100-"}) as r:
        assert r.status == 206 and await r.read() == raw[100:]
    async with http.get(url, params=p, headers={**h, "Range": f"bytes={e.size}-"}) as r:
        assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{e.size}"
    async with http.head(url, params=p, headers=h) as r:
        assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["Content-Length"] == str(e.size) and r.headers["Content-Type"] == "application/parquet"
    body = await get_json(http, f"{url}?path=nope.parquet", h, status=404)
    assert body["error_code"] and body["message"]
    await get_json(http, f"{fp.url}{EXP}/files/does-not-exist", h, status=404)


async def test_hostile_names_are_served_by_path(http: aiohttp.ClientSession) -> None:
    cfg = FakeConfig(datasets=[DatasetSpec(files_per_dataset_file=4, rows_per_file=50, hostile_names=True)])
    async with FakePlatform(cfg) as fp:
        parts = await collect_parts(http, fp, fp.latest_batch(fp.dataset_ids[0]).data_id)
        names = {i["name"] for _, i in parts}
        assert "../../evil.parquet" in names and any("\x01" in n for n in names)
        for _href, item in parts:
            async with http.get(item["_links"]["self"]["href"], headers=headers(fp)) as r:
                assert r.status == 200 and len(await r.read()) == int(item["length"])


# ----------------------------------------------------------------------------- Segmentation


async def test_export_job_lifecycle(fp: FakePlatform, http: aiohttp.ClientSession) -> None:
    (jid,) = fp.export_job_ids
    url = f"{fp.url}/data/core/ups/export/jobs/{jid}"
    seen = [(await get_json(http, url, headers(fp)))["status"] for _ in range(3)]
    assert seen == ["PROCESSING", "SUCCEEDED", "SUCCEEDED"]
    job = await get_json(http, url, headers(fp))
    parts = await collect_parts(http, fp, job["destination"]["batchId"])
    assert len(parts) == 2
    h = {**headers(fp), "Content-Type": "application/json"}
    body = {"destination": {"datasetId": fp.dataset_ids[0]}, "schema": {"name": "_xdm.context.profile"}}
    async with http.post(f"{fp.url}/data/core/ups/export/jobs", json=body, headers=h) as r:
        assert r.status == 200
        new = await r.json()
    assert new["status"] == "NEW" and isinstance(new["id"], int)
    lst = await get_json(http, f"{fp.url}/data/core/ups/export/jobs?limit=1", headers(fp))
    assert lst["records"][0]["id"] == new["id"] and lst["link"]["next"].startswith("/export/jobs/")
    async with http.delete(f"{fp.url}/data/core/ups/export/jobs/{new['id']}", headers=headers(fp)) as r:
        assert (await r.json())["status"] is True


# ----------------------------------------------------------------------------- faults


async def fault_trace(seed: int) -> list[int]:
    """Statuses of a fixed request sequence under 429/5xx faults."""
    cfg = FakeConfig.small(1, files=2, rows=20, seed=seed)
    cfg.faults = Faults(p_429=0.3, p_5xx=0.2, retry_after_s=0)
    async with FakePlatform(cfg) as fp, aiohttp.ClientSession() as http:
        out = []
        for i in range(40):
            async with http.get(f"{fp.url}{CAT}/batches?limit={1 + i % 4}", headers=headers(fp)) as r:
                out.append(r.status)
                if r.status == 429:
                    assert r.headers["Retry-After"] == "0"
                    assert (await r.json())["error_code"] == "429050"
        assert fp.stats.faults["429"] == out.count(429)
        return out


async def test_faults_deterministic_and_capped() -> None:
    a, b = await fault_trace(1), await fault_trace(1)
    assert a == b and any(s != 200 for s in a)
    assert a != await fault_trace(2)
    # each key (4 distinct URLs, 10 times each) faults at most max_faults_per_key=2 times
    for k in range(4):
        assert sum(1 for s in a[k::4] if s != 200) <= 2


async def test_short_range_ignore_range_and_digest(http: aiohttp.ClientSession) -> None:
    cfg = FakeConfig.small(1, files=1, rows=200, faults=Faults(p_short_range=1.0, send_digest=True))
    async with FakePlatform(cfg) as fp:
        e = fp.expected_files()[0]
        url, p = f"{fp.url}{EXP}/files/{e.dataset_file_id}", {"path": e.name}
        async with http.get(url, params=p, headers={**headers(fp), "Range": "bytes=0-999"}) as r:
            assert r.status == 206 and r.headers["Content-Range"] == f"bytes 0-499/{e.size}"
            assert len(await r.read()) == 500
        async with http.get(url, params=p, headers=headers(fp)) as r:
            digest = base64.b64encode(bytes.fromhex(e.sha256)).decode()
            assert r.headers["Repr-Digest"] == f"sha-256=:{digest}:"
        fp.faults.p_short_range, fp.faults.ignore_range = 0.0, True
        async with http.get(url, params=p, headers={**headers(fp), "Range": "bytes=0-9"}) as r:
            assert r.status == 200 and len(await r.read()) == e.size
        assert fp.stats.faults["short_range"] == 1 and fp.stats.faults["ignore_range"] == 1


@pytest.mark.parametrize("kind", ["reset", "corrupt"])
async def test_reset_and_corrupt_are_capped(http: aiohttp.ClientSession, kind: str) -> None:
    cfg = FakeConfig.small(1, files=1, rows=3000, faults=Faults(**{f"p_{kind}": 1.0}))
    async with FakePlatform(cfg) as fp:
        e = fp.expected_files()[0]
        url, p = f"{fp.url}{EXP}/files/{e.dataset_file_id}", {"path": e.name}
        outcomes = []
        for _ in range(4):
            try:
                async with http.get(url, params=p, headers=headers(fp)) as r:
                    data = await r.read()
                    outcomes.append("ok" if hashlib.sha256(data).hexdigest() == e.sha256 else "corrupt")
            except aiohttp.ClientError:
                outcomes.append("reset")
        assert outcomes == [kind, kind, "ok", "ok"]  # cap of 2 failing faults per key
        assert fp.stats.faults[kind] == 2


async def test_redirect_host_records_headers(http: aiohttp.ClientSession) -> None:
    cfg = FakeConfig.small(1, files=1, rows=100, faults=Faults(redirect=True))
    async with FakePlatform(cfg) as fp:
        e = fp.expected_files()[0]
        url = f"{fp.url}{EXP}/files/{e.dataset_file_id}"
        async with http.get(url, params={"path": e.name}, headers=headers(fp), allow_redirects=False) as r:
            assert r.status == 307
            loc = r.headers["Location"]
        assert not loc.startswith(fp.url)
        async with http.get(loc, headers={"Range": "bytes=0-9"}) as r:
            assert r.status == 206 and await r.read() == e.source_path.read_bytes()[:10]
        assert fp.stats.redirect_requests == 1 and not fp.stats.redirect_saw_auth
        async with http.get(loc, headers=headers(fp)) as r:  # a careless client
            assert r.status == 200
        assert fp.stats.redirect_saw_auth and "x-api-key" in fp.stats.redirect_header_names[-1]


def test_run_in_thread() -> None:
    import urllib.request
    h = FakePlatform.run_in_thread(FakeConfig.small(1, files=1, rows=10))
    try:
        e = h.expected_files()[0]
        req = urllib.request.Request(f"{h.url}{EXP}/files/{e.dataset_file_id}?path={e.name}", headers=headers(h))
        with urllib.request.urlopen(req) as r:
            assert hashlib.sha256(r.read()).hexdigest() == e.sha256
    finally:
        h.stop()


async def test_pacing_limits_and_error_modes(http: aiohttp.ClientSession) -> None:
    import time
    cfg = FakeConfig.small(1, files=1, rows=4000, faults=Faults(
        bandwidth_bps=400_000, response_limit_s=0.25, first_byte_delay_s=0.05))
    async with FakePlatform(cfg) as fp:
        e = fp.expected_files()[0]
        assert e.size > 200_000  # so the 0.25 s limit cuts it at 400 kB/s
        url, p = f"{fp.url}{EXP}/files/{e.dataset_file_id}", {"path": e.name}
        t0 = time.monotonic()
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url, params=p, headers=headers(fp)) as r:
                await r.read()
        assert time.monotonic() - t0 >= 0.25 and fp.stats.faults["response_limit"] == 1  # cut at the limit, not before
        t0 = time.monotonic()
        async with http.get(url, params=p, headers={**headers(fp), "Range": "bytes=0-39999"}) as r:
            assert len(await r.read()) == 40_000
        assert time.monotonic() - t0 >= 0.14  # 50 ms delay + 100 ms of paced body: never faster than paced
        fp.faults.bandwidth_bps = fp.faults.response_limit_s = None
        fp.faults.first_byte_delay_s = 0
        fp.faults.p_error_body, fp.faults.p_429, fp.faults.p_retry_after_date = 1.0, 0, 1.0
        body = await get_json(http, f"{url}?path={e.name}", headers(fp), status=500)
        assert body["error_code"].startswith("500")
        fp.faults.p_error_body, fp.faults.p_429 = 0, 1.0
        async with http.get(f"{fp.url}{CAT}/batches", headers=headers(fp)) as r:
            assert r.status == 429 and r.headers["Retry-After"].endswith("GMT")
        fp.faults.p_429, fp.faults.p_5xx = 0, 1.0
        async with http.get(f"{fp.url}{CAT}/batches?x=1", headers=headers(fp)) as r:
            assert r.status in (500, 502, 503, 504) and "error_code" in await r.json()


def test_cli_config_overrides() -> None:
    import argparse

    from engine.fake.cli import add_parser, config_from_args
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["fake-platform", "--preset", "small", "--datasets", "2", "--files-per-batch", "5",
                              "--page-size", "2", "--fault-429", "0.1", "--redirect", "--bandwidth", "1e6"])
    cfg = config_from_args(args)
    assert len(cfg.datasets) == 2 and cfg.datasets[1].files_per_dataset_file == 5
    assert cfg.faults.p_429 == 0.1 and cfg.faults.redirect and cfg.faults.bandwidth_bps == 1e6
    assert cfg.page_size == 2 and cfg.datasets[0].page_size == 2
