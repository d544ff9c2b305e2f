"""Platform client: one aiohttp session, gateway headers, status mapping, safe redirects.

Redirects are followed by hand so credentials (Authorization, x-api-key, org and sandbox
headers) are only ever sent to the configured gateway's origin (origin.py: scheme, host and
effective port), never to another host: not after a redirect, not to a link the platform sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import aiohttp
import structlog
from yarl import URL

from .. import limits, sizing
from ..config import Settings
from ..errors import (
    CredentialsRejected,
    NotFound,
    PlatformError,
    PlatformUnreachable,
    RetryableStatus,
    Throttled,
    TransferError,
    error_fields,
    excerpt,
)
from ..reach import connecting
from ..retry import RETRYABLE_STATUSES, THROTTLE_STATUSES, RetryPolicy, parse_retry_after
from .auth import TokenProvider
from .early_token import USER_AGENT
from .origin import origin_of, same_origin

log = structlog.get_logger("aep_export.http")

MAX_REDIRECTS = 5
_ERROR_BODY_LIMIT = 64 << 10
# Gateway codes that mean "these credentials will never work": exit 3, not a retry.
_CREDENTIAL_CODES = {"403000", "403003", "403010", "403025", "403027"}
_AUTH_HEADERS = ("authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name")


def make_session(settings: Settings, trace: Sequence[aiohttp.TraceConfig] = ()) -> aiohttp.ClientSession:
    """One session per run: keep-alive pool sized in engine/sizing.py, no total timeout on bodies.
    `trace`: observers of every exchange (the run's metrics: platform/traffic.py), none by default."""
    ex = settings.export
    connector = aiohttp.TCPConnector(
        limit=sizing.http_pool(ex),
        limit_per_host=0,
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=ex.connect_timeout, sock_read=ex.read_timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        # aiohttp buffers up to 2x this per connection (python -m bench --quick --reps 3 --profiles lan wan
        # --tools engine --engine-ref <1 MiB>: lan 1.11x, 6 MiB less RSS, wan 1.00x)
        read_bufsize=256 << 10,
        headers={"User-Agent": USER_AGENT},
        # Redirects are followed in PlatformClient.request so credentials stay on the gateway.
        requote_redirect_url=False,
        trace_configs=list(trace) or None,
    )


class PlatformClient:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession, tokens: TokenProvider, policy: RetryPolicy):
        self.settings = settings
        self.session = session
        self.tokens = tokens
        self.policy = policy
        self.base = URL(settings.platform.url)
        self.unreachable: PlatformUnreachable | None = None  # set once the platform could not be reached
        self._noticed: set[str] = set()  # hosts already reported as not answering
        # export.tps_limit: every request to the gateway's origin (Catalog, Data Access, export
        # jobs) takes a token; IMS (its own host, not the org's quota) and other hosts do not
        self.rate = limits.request_rate(settings.export.tps_limit, settings.export.tps_burst)

    def url(self, path_or_url: str) -> URL:
        """Absolute URL for a path on the gateway, or a URL the platform sent (hrefs, next links)."""
        url = URL(path_or_url)
        return url if url.is_absolute() else self.base.join(url)

    async def get_json(self, path_or_url: str, params: dict[str, str] | None = None) -> Any:
        return await self.policy.run(lambda: self._json_once("GET", path_or_url, params, None), what=f"GET {path_or_url}")

    async def post_json(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        """POST, repeated only when the gateway said it did not take the request (429/503).

        A POST that may have been carried out (another 5xx, a connection cut after sending) is not
        repeated: creating a dataset or an export job twice is worse than failing that audience.
        """
        attempt = 0
        while True:
            await self.policy.pacer.wait()
            try:
                return await self._json_once("POST", path, None, body, headers)
            except Throttled as exc:
                attempt += 1
                if attempt >= self.policy.max_attempts:
                    raise
                await self.policy.pause(exc, attempt, what=f"POST {path}")

    async def _json_once(self, method: str, path_or_url: str, params: dict[str, str] | None, body: Any,
                         headers: dict[str, str] | None = None) -> Any:
        async with self.request(method, path_or_url, params=params, json_body=body, headers=headers) as resp:
            await raise_for_status(resp)
            raw = await resp.read()
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:  # a proxy's page with a 200: quoted, retried
            raise RetryableStatus(resp.status, f"response is not JSON: {excerpt(raw, 80)}", url=str(resp.url.with_query(None))) from None

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        auto_decompress: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One HTTP exchange with gateway headers; refreshes the token once on 401."""
        if self.unreachable is not None:
            raise self.unreachable  # the run is stopping: no new connection attempts
        for auth_try in range(2):
            try:
                auth = await self.tokens.headers(self.settings.platform)
                resp = await self._send_following_redirects(method, self.url(path_or_url), params, {**auth, **(headers or {})},
                                                            json_body, auto_decompress)
            except PlatformUnreachable as exc:
                self.unreachable = exc  # the coordinator stops the run on it (exit 4)
                raise
            if resp.status in (401, 403) and not same_origin(resp.url, self.base):
                resp.release()
                raise PlatformError(resp.status, f"refused by {origin_of(resp.url)}, which is not the gateway's origin "
                                    f"({origin_of(self.base)}): credentials are only ever sent to the gateway",
                                    url=str(resp.url.with_query(None)))
            if resp.status == 401 and auth_try == 0:
                code, message = await _error_body(resp)
                resp.release()
                if self.tokens.invalidate(auth["Authorization"].removeprefix("Bearer ")):
                    continue
                raise CredentialsRejected(f"the gateway rejected the access token (HTTP 401{f' {code}' if code else ''}: {message})")
            try:
                yield resp
            finally:
                resp.release()
            return

    async def _send_following_redirects(
        self, method: str, url: URL, params: dict[str, str] | None, headers: dict[str, str], json_body: Any, auto_decompress: bool
    ) -> aiohttp.ClientResponse:
        for _ in range(MAX_REDIRECTS + 1):
            gateway = same_origin(url, self.base)
            hop_headers = headers if gateway else _without_credentials(headers)
            send = partial(self.session.request, method, url, params=params, headers=hop_headers, json=json_body,
                           allow_redirects=False, auto_decompress=auto_decompress)
            if gateway and self.rate is not None:
                await self.rate.take()
            try:
                resp = await connecting(send, target=f"the gateway {origin_of(url)}" if gateway else str(origin_of(url)),
                                        setting="platform.url" if gateway else "access to that host", policy=self.policy,
                                        noticed=self._noticed)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise TransferError(f"{method} {url.with_query(None)}: {type(exc).__name__}: {exc}") from exc
            log.debug("http", method=method, url=str(url.with_query(None)), status=resp.status, range=hop_headers.get("Range"))
            if resp.status not in (301, 302, 303, 307, 308) or "Location" not in resp.headers:
                return resp
            location = url.join(URL(resp.headers["Location"]))
            resp.release()
            url, params = location, None
            if resp.status == 303:
                method, json_body = "GET", None
        raise PlatformError(310, f"more than {MAX_REDIRECTS} redirects", url=str(url.with_query(None)))


def _without_credentials(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _AUTH_HEADERS}


async def _error_body(resp: aiohttp.ClientResponse) -> tuple[str | None, str]:
    """(error_code, message) from an error answer, whatever its body (errors.error_fields)."""
    reason = (resp.reason or "").strip()
    try:
        raw = await read_capped(resp, _ERROR_BODY_LIMIT)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, f"{reason} (the body could not be read: {type(exc).__name__})".strip()
    return error_fields(raw, reason)


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to `limit` bytes (one read may return less than is coming)."""
    parts, size = [], 0
    while size < limit and (chunk := await resp.content.read(limit - size)):
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


async def raise_for_status(resp: aiohttp.ClientResponse) -> None:
    """Map an error status to the exception hierarchy; 2xx passes."""
    if resp.status < 400:
        return
    code, message = await _error_body(resp)
    url = str(resp.url.with_query(None))
    if resp.status in THROTTLE_STATUSES:
        raise Throttled(resp.status, message, error_code=code, url=url, retry_after=parse_retry_after(resp.headers.get("Retry-After")))
    if resp.status in RETRYABLE_STATUSES:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        raise RetryableStatus(resp.status, message, error_code=code, url=url, retry_after=retry_after)
    if resp.status == 404:
        raise NotFound(404, message, error_code=code, url=url)
    if resp.status in (401, 403) and (resp.status == 401 or code in _CREDENTIAL_CODES):
        raise CredentialsRejected(f"the gateway refused the credentials: HTTP {resp.status} {code or ''} {message}".strip())
    raise PlatformError(resp.status, message, error_code=code, url=url)
