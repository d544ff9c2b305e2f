"""Error bodies as they come (issue #17): a failed answer in any AEP shape, or in none, ends in an
error that quotes what it got, never in a parsing error.

Through the real client (engine/platform/client.py) and token provider (engine/platform/auth.py),
with aioresponses standing in for the network: the documented samples of tests/fixtures, the
problem shape with `report` and `error-chain` that newer AEP services send, and bodies that are no
shape at all (an HTML page from a proxy, nothing, invalid JSON, a JSON list or string, bytes that
are not UTF-8, a megabyte of text).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses

from engine.config import Settings
from engine.errors import CredentialsRejected, NotFound, PlatformError, RetryableStatus, Throttled
from engine.logs import MASK
from engine.platform.auth import TOKEN_PATH, TokenProvider
from engine.platform.client import PlatformClient, make_session
from engine.retry import RetryPolicy

GATEWAY = "https://platform.example.test"
IMS = "https://ims.example.test"
SECRET = "s3cr3t-client-secret-value"
FIXTURES = Path(__file__).parent / "fixtures"
PATH = "/data/foundation/catalog/batches"
HTML = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n"

# The problem shape of newer AEP services (Observability Insights' /metrics errors, as documented
# in AdobeDocs/experience-platform help/observability/api/metrics.md).
PROBLEM = {
    "type": "http://ns.adobe.com/aep/errors/INSGHT-1000-400",
    "title": "Bad Request - Start date cannot be after end date.",
    "status": 400,
    "report": {"tenantInfo": {"sandboxName": "prod", "sandboxId": "49f58060-5d47-34rd-aawf-a5384333ff12",
                              "imsOrgId": "{IMS_ORG}"}, "additionalContext": None},
    "error-chain": [{"serviceId": "INSGHT", "errorCode": "INSGHT-1000-400", "invokingServiceId": "INSGHT",
                     "unixTimeStampMs": 1602095177129}],
}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _settings(**auth: str) -> Settings:
    return Settings.model_validate({
        "platform": {"url": GATEWAY, "org_id": "ORG@AdobeOrg"},
        "auth": {"client_id": "cid", "ims_url": IMS, **(auth or {"access_token": "static-token-123456"})},
        "datasets": ["5cd9146b31dae914b75f654f"]})


@pytest.fixture
async def client() -> AsyncIterator[PlatformClient]:
    settings, policy = _settings(), RetryPolicy(max_attempts=1, base=0.0, cap=0.0)
    async with make_session(settings) as session:
        yield PlatformClient(settings, session, TokenProvider(settings.auth, session, policy), policy)


async def _gateway_error(client: PlatformClient, status: int, body: bytes, headers: dict[str, str] | None = None) -> Exception:
    with aioresponses() as mock:
        mock.get(GATEWAY + PATH, status=status, body=body, headers=headers)
        with pytest.raises(Exception) as info:
            await client.get_json(PATH)
    return info.value


# ----------------------------------------------------------------------------- documented shapes


@pytest.mark.parametrize("name", [*sorted(p.stem for p in FIXTURES.glob("gateway_error_*.json")), "throttled_429"])
async def test_the_gateway_shape_gives_its_code_and_message(name: str, client: PlatformClient) -> None:
    f = fixture(name)
    exc = await _gateway_error(client, f["status"], json.dumps(f["body"]).encode(), f.get("headers"))
    code, message = f["body"]["error_code"], f["body"]["message"]
    if isinstance(exc, CredentialsRejected):  # 401 and the credential codes: exit 3, the code and message said
        assert code in str(exc) and message in str(exc), exc
    else:
        assert isinstance(exc, PlatformError) and exc.error_code == code and message in str(exc), exc
    if name == "throttled_429":
        assert isinstance(exc, Throttled) and exc.retry_after == 38.0


async def test_the_problem_shape_gives_its_title_and_detail(client: PlatformClient) -> None:
    f = fixture("content_type_error_400")
    exc = await _gateway_error(client, 400, json.dumps(f["body"]).encode())
    assert type(exc) is PlatformError and exc.status == 400
    assert "HTTP 400: BadRequestError: A valid content-type must be specified" in str(exc), exc


async def test_the_problem_shape_with_an_error_chain_gives_its_code(client: PlatformClient) -> None:
    exc = await _gateway_error(client, 400, json.dumps(PROBLEM).encode())
    assert type(exc) is PlatformError and exc.error_code == "INSGHT-1000-400", exc
    assert "HTTP 400 INSGHT-1000-400: Bad Request - Start date cannot be after end date." in str(exc), exc
    assert "tenantInfo" not in str(exc)  # the report's context is not the message


async def test_the_problem_shape_without_a_chain_takes_the_code_from_its_type(client: PlatformClient) -> None:
    body = {k: v for k, v in PROBLEM.items() if k != "error-chain"} | {"status": 500}
    exc = await _gateway_error(client, 500, json.dumps(body).encode())
    assert isinstance(exc, RetryableStatus) and exc.error_code == "INSGHT-1000-400", exc


# ----------------------------------------------------------------------------- no shape at all


@pytest.mark.parametrize(("status", "body", "quoted"), [
    (502, HTML, "Bad Gateway: '<!DOCTYPE html>\\n<html><head><title>502 Bad Gateway</title></head><body>nginx</bo'…"),
    (500, b"", "Internal Server Error (empty body)"),
    (503, b" \r\n", "Service Unavailable (empty body)"),
    (400, b'{"error_code": "400003", "mess', "Bad Request: '{\"error_code\": \"400003\", \"mess'"),
    (404, b'["no", "such", "batch"]', "Not Found: '[\"no\", \"such\", \"batch\"]'"),
    (400, b'"Bad request"', "Bad Request: '\"Bad request\"'"),
    (400, b"null", "Bad Request: 'null'"),
    (400, b'{"reason": "quota"}', "Bad Request: '{\"reason\": \"quota\"}'"),
    (500, b"\xff\xfe\x00\x01 not UTF-8", "Internal Server Error: '\\xff\\xfe\\x00\\x01 not UTF-8'"),
], ids=["html", "empty", "blank", "invalid-json", "json-list", "json-string", "json-null", "unknown-keys", "not-utf8"])
async def test_a_body_in_no_known_shape_is_quoted(status: int, body: bytes, quoted: str, client: PlatformClient) -> None:
    exc = await _gateway_error(client, status, body)
    assert isinstance(exc, PlatformError) and exc.status == status, repr(exc)  # never a parsing error
    assert quoted in str(exc), str(exc)
    assert isinstance(exc, NotFound) == (status == 404) and isinstance(exc, RetryableStatus) == (status >= 500)


async def test_a_huge_error_body_is_quoted_short(client: PlatformClient) -> None:
    exc = await _gateway_error(client, 500, b"x" * (1 << 20))
    assert isinstance(exc, RetryableStatus) and "'xxxx" in str(exc) and len(str(exc)) < 400, len(str(exc))


async def test_a_gateway_message_with_control_characters_is_printable(client: PlatformClient) -> None:
    body = json.dumps({"error_code": "500000", "message": "line one\nline two\x1b[31m"}).encode()
    exc = await _gateway_error(client, 500, body)
    assert "line one\\nline two\\x1b[31m" in str(exc) and "\n" not in str(exc), str(exc)


async def test_a_200_that_is_not_json_is_quoted_and_retried(client: PlatformClient) -> None:
    exc = await _gateway_error(client, 200, HTML)
    assert isinstance(exc, RetryableStatus), repr(exc)
    assert "response is not JSON: '<!DOCTYPE html>" in str(exc), str(exc)


# ----------------------------------------------------------------------------- IMS


async def _ims_error(status: int, body: bytes, content_type: str = "application/json") -> Exception:
    settings, policy = _settings(client_secret=SECRET), RetryPolicy(max_attempts=1, base=0.0, cap=0.0)
    async with make_session(settings) as session:
        tokens = TokenProvider(settings.auth, session, policy)
        with aioresponses() as mock:
            mock.post(IMS + TOKEN_PATH, status=status, body=body, content_type=content_type)
            with pytest.raises(Exception) as info:
                await tokens.token()
    return info.value


async def test_the_ims_shape_gives_its_code() -> None:
    f = fixture("ims_error_invalid_scope")
    exc = await _ims_error(f["status"], json.dumps(f["body"]).encode())
    assert isinstance(exc, CredentialsRejected) and "(HTTP 400, error=invalid_scope)" in str(exc), exc


async def test_the_ims_description_is_quoted_with_the_secret_masked() -> None:
    body = {"error": "invalid_client", "error_description": f"invalid client_secret parameter {SECRET}"}
    exc = await _ims_error(401, json.dumps(body).encode())
    assert isinstance(exc, CredentialsRejected), exc
    assert f"error=invalid_client: invalid client_secret parameter {MASK}" in str(exc) and SECRET not in str(exc), exc


@pytest.mark.parametrize(("status", "body", "kind", "quoted"), [
    (400, HTML, CredentialsRejected, "(HTTP 400: Bad Request: '<!DOCTYPE html>"),
    (503, HTML, RetryableStatus, "IMS unavailable: Service Unavailable: '<!DOCTYPE html>"),
    (502, b"", RetryableStatus, "IMS unavailable: Bad Gateway (empty body)"),
    (200, HTML, CredentialsRejected, "IMS answered with something that is not JSON: '<!DOCTYPE html>"),
    (200, b"\xff\xfe not UTF-8", CredentialsRejected, "not JSON: '\\xff\\xfe not UTF-8'"),
    (400, b"\xff\xfe not UTF-8", CredentialsRejected, "(HTTP 400: Bad Request: '\\xff\\xfe not UTF-8')"),
], ids=["html-400", "html-503", "empty-502", "html-200", "not-utf8-200", "not-utf8-400"])
async def test_an_ims_answer_in_no_known_shape_is_quoted(status: int, body: bytes, kind: type, quoted: str) -> None:
    exc = await _ims_error(status, body, content_type="text/html")
    assert isinstance(exc, kind), repr(exc)
    assert quoted in str(exc), str(exc)
