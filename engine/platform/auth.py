"""Adobe IMS OAuth Server-to-Server tokens, or a ready token, and the four gateway headers.

There is no refresh token for Server-to-Server: a fresh token is simply requested again with
the same credentials, before the old one expires and once after a 401 (401013).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import structlog

from ..config import AuthSettings, PlatformSettings
from ..errors import CredentialsRejected, RetryableStatus, TransferError, error_fields, excerpt
from ..masking import register_secret
from ..reach import connecting
from ..retry import RetryPolicy, parse_retry_after
from .early_token import TOKEN_PATH as TOKEN_PATH  # one place for both paths (and traffic.py's endpoint)
from .early_token import Answer, EarlyToken, ExchangeAuth, token_form
from .origin import origin_of

log = structlog.get_logger("aep_export.auth")

# The legacy JWT exchange answered in milliseconds; anything this large cannot be seconds.
_MS_THRESHOLD = 10_000_000
_EARLY_WAIT_S = 60.0  # for a session without a read timeout (the run's has export.read_timeout)


class TokenProvider:
    """`early`: the token request the CLI sent before the engine was imported (early_token.py),
    taken for the first token when it asked for these very settings and got one; `on_early`: told
    that request's answer status (the run's metrics count it as an IMS exchange)."""

    def __init__(self, auth: AuthSettings, session: aiohttp.ClientSession, policy: RetryPolicy,
                 early: EarlyToken | None = None, on_early: Callable[[int], None] | None = None):
        self._auth = auth
        self._early = early
        self._on_early = on_early
        self._session = session
        self._policy = policy
        self._token: str | None = auth.access_token.get_secret_value() or None
        register_secret(self._token)
        register_secret(auth.client_secret.get_secret_value())  # an error body may echo the form
        self._static = self._token is not None
        self._expires_at = float("inf") if self._static else 0.0
        self._refresh_margin = 300.0
        self._lock = asyncio.Lock()
        self._noticed: set[str] = set()  # IMS already reported as not answering
        self.exchanges = 0

    @property
    def can_exchange(self) -> bool:
        return bool(self._auth.client_secret.get_secret_value())

    async def token(self) -> str:
        if self._token is None or time.monotonic() >= self._expires_at - self._refresh_margin:
            async with self._lock:
                if self._token is None or time.monotonic() >= self._expires_at - self._refresh_margin:
                    await self._refresh()
        assert self._token is not None
        return self._token

    def invalidate(self, token: str) -> bool:
        """Forget a token the gateway rejected. False when no new one can be had."""
        if not self.can_exchange:
            return False
        if self._token == token:
            self._token = None
            self._static = False
        return True

    async def headers(self, platform: PlatformSettings) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {await self.token()}",
            "x-api-key": self._auth.client_id,
            "x-gw-ims-org-id": platform.org_id,
            "x-sandbox-name": platform.sandbox,
        }

    async def _refresh(self) -> None:
        if not self.can_exchange:
            raise CredentialsRejected("the access token was rejected or expired and no auth.client_secret is set to get a new one")
        early = await self._early_answer()
        token, expires_in = parse_token(early if early is not None else await self._policy.run(self._exchange, what="ims token"))
        register_secret(token)
        self._token = token
        self._expires_at = time.monotonic() + expires_in
        # Renew 5 minutes early, or at 90% of a short lifetime.
        self._refresh_margin = min(300.0, expires_in * 0.1)
        self.exchanges += 1
        log.info("token_obtained", expires_in_s=int(expires_in), **({"early": True} if early is not None else {}))

    async def _early_answer(self) -> dict[str, Any] | None:
        """The early request's token answer (once), if it asked for these settings and IMS said 200
        with a token; None sends the caller to the normal exchange. It is waited for at most a
        read timeout: an early request that hangs costs what one attempt of the normal one would."""
        early, self._early = self._early, None
        if early is None or not early.asked_for(self._auth):
            return None
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(early.answer), self._session.timeout.sock_read or _EARLY_WAIT_S)
        except TimeoutError:
            return None
        if answer is not None and self._on_early is not None:
            self._on_early(answer.status)
        return _token_body(answer)

    async def _exchange(self) -> dict[str, Any]:
        form = token_form(ExchangeAuth.of(self._auth))
        url = self._auth.ims_url + TOKEN_PATH
        # IMS gets the form and nothing else: no gateway header, no redirect followed.
        send = partial(self._session.post, url, data=form, allow_redirects=False)
        try:
            async with await connecting(send, target=f"IMS {origin_of(url)}", setting="auth.ims_url", policy=self._policy,
                                        noticed=self._noticed) as resp:
                raw = await resp.read()  # bytes: a body that is not UTF-8 is quoted, never a decoding error
                if resp.status in (429, 500, 502, 503, 504):
                    raise RetryableStatus(resp.status, f"IMS unavailable{_ims_error(raw, resp.reason or '')}",
                                          retry_after=parse_retry_after(resp.headers.get("Retry-After")), url=url)
                if resp.status != 200:
                    why = _ims_error(raw, resp.reason or "")
                    raise CredentialsRejected(f"IMS rejected the client credentials (HTTP {resp.status}{why});"
                                              " check auth.client_id, auth.client_secret and auth.scopes")
                try:
                    return dict(json.loads(raw))
                except ValueError:
                    raise CredentialsRejected(f"IMS answered with something that is not JSON: {excerpt(raw, 80)}") from None
        except aiohttp.ClientConnectionError as exc:
            raise TransferError(f"cannot reach IMS at {self._auth.ims_url}: {exc}") from exc


def _token_body(answer: Answer | None) -> dict[str, Any] | None:
    """An answer the normal exchange would have returned as is: 200 and a JSON object with a token."""
    if answer is None or answer.status != 200:
        return None
    try:
        body = json.loads(answer.body)
        parse_token(body)
    except (ValueError, CredentialsRejected):
        return None
    return body if isinstance(body, dict) else None


def parse_token(body: Any) -> tuple[str, float]:
    """(access token, lifetime in seconds) from IMS's answer; the legacy JWT exchange's
    milliseconds (86399992) are told apart from seconds (86399) by size."""
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise CredentialsRejected("IMS answered without an access_token")
    try:
        expires_in = float(body.get("expires_in") or 86399)
    except (TypeError, ValueError):
        expires_in = 86399.0
    if expires_in > _MS_THRESHOLD:
        expires_in /= 1000.0
    return token, expires_in


def _ims_error(raw: bytes | str, reason: str = "") -> str:
    """What IMS said, to follow the status: `, error=invalid_client: <description>` (known secrets
    masked; a description that repeats the code is left out), or its body quoted as it came."""
    code, message = error_fields(raw.encode() if isinstance(raw, str) else raw, reason)
    if code is None:
        return f": {message}" if message else ""
    return f", error={code}" + (f": {message}" if message and message != code else "")
