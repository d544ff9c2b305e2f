"""Narrow unit tests: retry policy, Content-Range, path safety, record counts, digests, listing paging."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import random
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from engine.checks.integrity import DigestClaim, check_digests, digest_claims, expected_record_count, file_digest
from engine.config import Settings
from engine.errors import (
    CredentialsRejected,
    IntegrityError,
    NotFound,
    PlatformError,
    RetryableStatus,
    StoreError,
    Throttled,
    TransferError,
    UnsafeNameError,
)
from engine.layout import safe_component, safe_relative
from engine.output.paths import contained
from engine.platform.auth import TokenProvider
from engine.platform.client import PlatformClient, make_session
from engine.platform.discovery import Discovery
from engine.retry import MAX_RETRY_AFTER, RetryPolicy, is_retryable, parse_retry_after
from engine.transfer.fetcher import parse_content_range

# ----------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(("value", "seconds"), [("38", 38.0), (" 5 ", 5.0), ("0", 0.0), ("100000", MAX_RETRY_AFTER)])
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now=now) == pytest.approx(42.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0  # past: no wait
    assert parse_retry_after(email.utils.formatdate(now + 10_000, usegmt=True), now=now) == MAX_RETRY_AFTER
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 3) == pytest.approx(3.0)


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3"])
def test_retry_after_unusable(value: str | None) -> None:
    assert parse_retry_after(value) is None


# ----------------------------------------------------------------------------- back-off


def test_backoff_full_jitter_within_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0, rng=random.Random(1234))
    for attempt in range(0, 40):
        bound = min(4.0, 0.5 * 2**attempt)
        samples = [policy.backoff(attempt) for _ in range(50)]
        assert all(0.0 <= s <= bound for s in samples), attempt
    # full jitter really spreads (not a constant, not always the cap)
    late = [policy.backoff(10) for _ in range(200)]
    assert min(late) < 1.0 and max(late) > 3.0


def test_delay_for_honours_retry_after_and_throttle_pauses_pool() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0, rng=random.Random(1))
    assert policy.delay_for(RetryableStatus(503, "x", retry_after=7.0), 1) == 7.0
    assert policy.pacer.throttled_count == 0
    assert policy.delay_for(Throttled(429, "x", retry_after=3.0), 1) == 3.0
    assert policy.pacer.throttled_count == 1
    # a throttle without Retry-After still waits at least `base`
    assert policy.delay_for(Throttled(429, "x"), 0) >= 0.5


@pytest.mark.parametrize(("exc", "retryable"), [
    (RetryableStatus(500, "x"), True),
    (RetryableStatus(502, "x"), True),
    (Throttled(429, "x"), True),
    (TransferError("cut"), True),
    (aiohttp.ClientConnectionError(), True),
    (aiohttp.ServerDisconnectedError(), True),
    (aiohttp.ClientPayloadError("short"), True),
    (TimeoutError(), True),
    (TimeoutError(), True),
    (NotFound(404, "x"), False),
    (PlatformError(400, "bad request"), False),
    (CredentialsRejected("no"), False),
    (IntegrityError("bad bytes"), False),
    (UnsafeNameError("../x"), False),
    (ValueError("bug"), False),
])
def test_is_retryable(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


async def test_policy_run_retries_then_succeeds_and_stops_on_fatal() -> None:
    policy = RetryPolicy(max_attempts=4, base=0.0, cap=0.0)
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableStatus(503, "busy")
        return "ok"

    assert await policy.run(flaky, what="t") == "ok" and len(calls) == 3 and policy.retries == 2

    async def fatal() -> None:
        calls.append(1)
        raise NotFound(404, "gone")

    calls.clear()
    with pytest.raises(NotFound):
        await policy.run(fatal, what="t")
    assert len(calls) == 1

    async def always() -> None:
        calls.append(1)
        raise TransferError("reset")

    calls.clear()
    with pytest.raises(TransferError):
        await policy.run(always, what="t")
    assert len(calls) == 4  # max_attempts


# ----------------------------------------------------------------------------- Content-Range


@pytest.mark.parametrize(("value", "parsed"), [
    ("bytes 0-99/200", (0, 99, 200)),
    ("bytes 100-199/200", (100, 199, 200)),
    ("bytes 0-0/1", (0, 0, 1)),
    ("bytes 5-9/*", (5, 9, None)),
    (" bytes 1-2/3 ", (1, 2, 3)),
])
def test_parse_content_range(value: str, parsed: tuple) -> None:
    assert parse_content_range(value) == parsed


@pytest.mark.parametrize("value", [None, "", "bytes */200", "bytes 10-5/200", "bytes 0-200/200", "items 0-1/2",
                                   "bytes 0-99", "bytes=0-99/200"])
def test_parse_content_range_rejects(value: str | None) -> None:
    with pytest.raises(TransferError):
        parse_content_range(value)


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", ["part-0.snappy.parquet", "a/b.parquet", "dir/sub/x", "..foo", "a..b"])
def test_safe_relative_accepts(name: str) -> None:
    assert safe_relative(name) == name


@pytest.mark.parametrize("name", [
    "../x.parquet", "a/../../x", "..", ".", "a/./b", "/etc/passwd", "//server/share", "a\\b", "..\\..\\x",
    "ctl\x01.parquet", "esc\x1b[31m", "nul\x00", "new\nline", "", "a//b", "a/", "x" * 300,
])
def test_safe_relative_refuses(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        safe_relative(name)


def test_safe_component_refuses_separators() -> None:
    for bad in ("a/b", "a\\b", "..", ".", "", "x\x7f"):
        with pytest.raises(UnsafeNameError):
            safe_component(bad, "batch id")
    assert safe_component("01E5QSWCAASFQ054FNBKYV6TIQ-1", "id") == "01E5QSWCAASFQ054FNBKYV6TIQ-1"


def test_contained(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "ds").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    assert contained(root, "ds/b/f.parquet") == (root / "ds" / "b" / "f.parquet").resolve()
    for rel in ("../outside/x", "ds/../../outside/x", "/etc/passwd"):
        with pytest.raises(UnsafeNameError):
            contained(root, rel)
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafeNameError):
        contained(root, "link/x.parquet")
    os.symlink(root / "ds", root / "inner")  # a symlink that stays inside is fine
    assert contained(root, "inner/x") == (root / "ds" / "x").resolve()
    os.symlink(outside, root / "ds" / "escape")  # below a folder already resolved (and cached)
    with pytest.raises(UnsafeNameError):
        contained(root, "ds/escape/deeper/x.parquet")


# ----------------------------------------------------------------------------- record counts


@pytest.mark.parametrize(("batch", "count"), [
    ({"metrics": {"outputRecordCount": 24340, "inputRecordCount": 24340, "inputFileCount": -1}}, 24340),
    ({"metrics": {"recordsRead": 46721830, "recordsWritten": 46721830, "recordsFailed": 0}}, 46721830),
    ({"metrics": {"recordsWritten": "12"}}, 12),
    ({"metrics": {}, "recordCount": 7}, 7),
    ({"metrics": {"outputRecordCount": 0}}, 0),
    ({"metrics": {"outputRecordCount": -1}}, None),
    ({"metrics": {"outputRecordCount": True}}, None),
    ({"metrics": "n/a"}, None),
    ({}, None),
])
def test_expected_record_count(batch: dict, count: int | None) -> None:
    assert expected_record_count(batch) == count


# ----------------------------------------------------------------------------- digests


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BODY = b"PAR1 some parquet bytes PAR1"
SHA256 = hashlib.sha256(BODY).digest()
SHA512 = hashlib.sha512(BODY).digest()
MD5 = hashlib.md5(BODY).digest()


def test_repr_digest_counts_for_partial_bodies_too() -> None:
    claims = digest_claims({"Repr-Digest": f"sha-256=:{_b64(SHA256)}:"}, full_body=False)
    assert claims == [DigestClaim("sha256", SHA256, "Repr-Digest")]


def test_sf_dictionary_with_several_algorithms() -> None:
    claims = digest_claims({"Repr-Digest": f"sha-256=:{_b64(SHA256)}:, sha-512=:{_b64(SHA512)}:, unknown=:AAAA:"},
                           full_body=True)
    assert {(c.algorithm, c.digest) for c in claims} == {("sha256", SHA256), ("sha512", SHA512)}


def test_body_digests_only_for_full_bodies() -> None:
    headers = {"Content-Digest": f"sha-256=:{_b64(SHA256)}:", "Digest": f"SHA-256={_b64(SHA256)},MD5={_b64(MD5)}",
               "Content-MD5": _b64(MD5)}
    assert digest_claims(headers, full_body=False) == []
    claims = digest_claims(headers, full_body=True)
    assert sorted((c.header, c.algorithm) for c in claims) == [
        ("Content-Digest", "sha256"), ("Content-MD5", "md5"), ("Digest", "md5"), ("Digest", "sha256")]
    assert all(c.digest == {"sha256": SHA256, "md5": MD5}[c.algorithm] for c in claims)


def test_malformed_digest_headers_are_ignored() -> None:
    headers = {"Repr-Digest": "sha-256=not-colon-wrapped", "Digest": "sha-256=***not base64***",
               "Content-MD5": "%%%"}
    assert digest_claims(headers, full_body=True) == []


def test_check_digests(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(BODY)
    good = digest_claims({"Repr-Digest": f"sha-256=:{_b64(SHA256)}:", "Content-MD5": _b64(MD5)}, full_body=True)
    def digest_of(algorithm: str) -> bytes:
        return file_digest(path, algorithm)

    check_digests(SHA256.hex(), good, digest_of)
    with pytest.raises(IntegrityError):
        check_digests(SHA256.hex(), [DigestClaim("md5", hashlib.md5(b"other").digest(), "Content-MD5")], digest_of)
    with pytest.raises(IntegrityError):
        check_digests(hashlib.sha256(b"other").hexdigest(), good, digest_of)


# ----------------------------------------------------------------------------- listing paging
# aioresponses 0.7.9 cannot build responses for the installed aiohttp 3.14 (ClientResponse now needs
# `stream_writer`), so paging is tested against a stub client (Discovery only calls get_json), and the
# header/status mapping against a tiny loopback aiohttp app.

BASE = "https://platform.example.test"


def _settings(url: str = BASE) -> Settings:
    return Settings.model_validate({
        "platform": {"url": url, "org_id": "ORG@AdobeOrg"},
        "auth": {"client_id": "cid", "access_token": "static-token-123456"},
        "export": {"max_attempts": 1},
        "datasets": [{"id": "ds"}],
    })


class StubClient:
    """Serves canned JSON bodies by URL (as Discovery passes them) and records the calls."""

    def __init__(self, pages: dict[str, object]):
        self.pages = pages
        self.calls: list[str] = []

    def url(self, path_or_url: str) -> URL:  # as PlatformClient.url: relative hrefs against the gateway
        url = URL(path_or_url)
        return url if url.is_absolute() else URL(BASE).join(url)

    async def get_json(self, url: str, params=None):
        self.calls.append(url)
        if len(self.calls) > 50:
            raise AssertionError("paging does not stop")
        if url not in self.pages:
            raise NotFound(404, f"no page {url}")
        return self.pages[url]


async def _collect(pages: dict[str, object], start: str) -> tuple[list[str], list[str]]:
    stub = StubClient(pages)
    items = [item["name"] async for item in Discovery(stub).data_access._pages(start)]  # type: ignore[arg-type]
    return items, stub.calls


async def test_pages_accepts_a_bare_array() -> None:
    items, calls = await _collect({"/f1": [{"name": "a", "length": 1}, {"name": "b", "length": "2"}, "junk"]}, "/f1")
    assert items == ["a", "b"] and calls == ["/f1"]


async def test_pages_follows_next_links_until_absent() -> None:
    pages = {
        "/f1": {"data": [{"name": "a"}], "_links": {"next": {"href": f"{BASE}/f1?start=b"}}},
        f"{BASE}/f1?start=b": {"data": [{"name": "b"}], "_links": {"next": {"href": "/f1?start=c"}}},
        "/f1?start=c": {"data": [{"name": "c"}], "_links": {"page": {"href": "/f1?start=0", "templated": True}}},
    }
    items, calls = await _collect(pages, "/f1")
    assert items == ["a", "b", "c"] and len(calls) == 3


async def test_pages_empty_page_ends_the_listing() -> None:
    # Repeated pages, cycles and the page cap: tests/test_distrust_listings.py
    items, calls = await _collect({"/e": {"data": [], "_links": {"next": {"href": "/more"}}},
                                   "/more": {"data": [{"name": "never"}]}}, "/e")
    assert items == [] and calls == ["/e"]


def test_client_resolves_relative_and_absolute_hrefs() -> None:
    client = PlatformClient(_settings(BASE + "/"), None, None, None)  # type: ignore[arg-type]
    assert str(client.url("/data/foundation/export/files/x?start=b")) == f"{BASE}/data/foundation/export/files/x?start=b"
    assert str(client.url("https://other.example/y")) == "https://other.example/y"


async def test_client_sends_gateway_headers_and_maps_statuses() -> None:
    from aiohttp import web

    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        status = int(request.match_info["status"])
        body = {"error_code": f"{status}000", "message": "nope"} if status >= 400 else {"ok": True}
        headers = {"Retry-After": "3"} if status == 429 else None
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_get("/s/{status}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    settings = _settings(f"http://{host}:{port}")
    policy = RetryPolicy(max_attempts=1, base=0.0, cap=0.0)
    try:
        async with make_session(settings) as session:
            client = PlatformClient(settings, session, TokenProvider(settings.auth, session, policy), policy)
            assert await client.get_json("/s/200") == {"ok": True}
            with pytest.raises(NotFound):
                await client.get_json("/s/404")
            with pytest.raises(Throttled) as throttled:
                await client.get_json("/s/429")
            assert throttled.value.retry_after == 3.0
            with pytest.raises(RetryableStatus):
                await client.get_json("/s/502")
            with pytest.raises(PlatformError) as bad:
                await client.get_json("/s/400")
            assert not isinstance(bad.value, RetryableStatus) and bad.value.error_code == "400000"
    finally:
        await runner.cleanup()
    h = seen[0]
    assert h["Authorization"] == "Bearer static-token-123456"
    assert (h["x-api-key"], h["x-gw-ims-org-id"], h["x-sandbox-name"]) == ("cid", "ORG@AdobeOrg", "prod")


def test_a_secret_is_masked_inside_the_lists_and_mappings_a_log_field_holds() -> None:
    """Error lists (a batch's errors, the run's) go into log fields as lists: a secret quoted by an
    error message must be masked there as in a plain string field."""
    from engine import logs, masking

    secret = "tok-7f3a9c1e55"
    logs.register_secret(secret)
    try:
        event = logs.redact(None, "info", {"errors": [f"401 for Bearer {secret}", ("x", secret)],
                                           "detail": {"body": f"echo {secret}"}, "plain": f"a {secret}"})
    finally:
        masking._SECRETS.discard(secret)
    assert secret not in repr(event)
    assert event["errors"][0] == f"401 for Bearer {logs.MASK}" and event["errors"][1] == ("x", logs.MASK)
    assert event["detail"] == {"body": f"echo {logs.MASK}"} and event["plain"] == f"a {logs.MASK}"


def test_a_store_failure_that_quotes_a_secret_never_carries_it_into_the_error_text() -> None:
    """translate() (S3 and Azure) makes the error text that reaches _report.json and `run --json`,
    where log masking does not: a SAS or key quoted by an exception (its message, the service's
    reason or Message) is masked there; masked before the cut, so no half of it is left either."""
    from botocore.exceptions import ClientError

    from engine import masking
    from engine.config import StoreURL
    from engine.output import azure, bucket

    secret = "sv=2024&sig=Zm9vYmFyc2VjcmV0"
    masking.register_secret(secret)

    class AzureFailure(Exception):
        status_code, error_code, reason = 500, "InternalError", f"server said {secret}"

    near_the_cut = "x" * 290 + secret  # a cut at 300 before masking would leave its first 10 characters
    failures = [
        azure.translate(OSError(f"GET https://acct.blob.core.windows.net/c/k?{secret} failed"), "read k", StoreURL.parse("az://c/p")),
        azure.translate(OSError(near_the_cut), "read k", StoreURL.parse("az://c/p")),
        azure.translate(AzureFailure("x"), "read k", StoreURL.parse("az://c/p")),
        bucket.translate(RuntimeError(f"connection to ?X-Amz-Signature={secret} reset"), "read k", StoreURL.parse("s3://b/p")),
        bucket.translate(RuntimeError(near_the_cut), "read k", StoreURL.parse("s3://b/p")),
        bucket.translate(ClientError({"Error": {"Code": "InternalError", "Message": f"echo {secret}"}}, "GetObject"), "read k",
                         StoreURL.parse("s3://b/p")),
    ]
    try:
        texts = [str(f) for f in failures]
    finally:
        masking._SECRETS.discard(secret)
    assert all(isinstance(f, StoreError) for f in failures), failures
    assert not [t for t in texts if secret[:10] in t], texts
    assert all(masking.MASK in t for t in texts), texts
