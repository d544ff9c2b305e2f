"""The IMS token requested first thing, while the rest of the engine is still being imported.

Start-up time (issue #20): a run's first request waited for aiohttp, pydantic, the validated
settings and the download machinery (~0.5 s on a quiet machine), then for IMS's round trip
(100-300 ms over the internet). Here the token request leaves as soon as the CLI knows it is a
run, from a thread with the standard library's HTTP client, and its round trip overlaps the
imports. It is only a head start: TokenProvider (auth.py) takes its answer when the validated
settings ask IMS for exactly what this request asked (config_early.py reads them by the same
rules) and it came back 200 with a token; anything else (no answer yet after read_timeout, a
refusal, a dropped connection, settings that differ or fail validation) is dropped unused and the
normal exchange runs, with its retries and its errors. Nothing here logs: what it sent or got is
said by the normal path, if at all.

Standard library only, and only what the request needs (http.client; ssl for https).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import NamedTuple

from ..config_early import ExchangeAuth

TOKEN_PATH = "/ims/token/v3"
USER_AGENT = "aep-export/0.1"  # every request of the run says so (platform/client.py: make_session)
_TIMEOUT_S = 60.0  # per socket operation; the thread ends by then at the latest (TokenProvider waits less)
_MAX_BODY = 1 << 20  # a token answer is a few KiB; a larger one is not taken here


class Answer(NamedTuple):
    status: int
    body: bytes


class EarlyToken:
    """One token request in flight for `auth`; `answer` ends with IMS's Answer, or None on any failure."""

    def __init__(self, auth: ExchangeAuth):
        self.auth = auth
        self.answer: Future[Answer | None] = Future()
        threading.Thread(target=self._run, name="aep-early-token", daemon=True).start()

    def asked_for(self, ims_url: str, client_id: str, client_secret: str, scopes: list[str]) -> bool:
        """Whether this request asked for what validated settings would ask."""
        return self.auth == ExchangeAuth(ims_url, client_id, client_secret, tuple(scopes))

    def _run(self) -> None:
        try:
            answer: Answer | None = post_token_form(self.auth)
        except BaseException:  # noqa: BLE001 - any failure means "no head start": the normal exchange says what is wrong
            answer = None
        self.answer.set_result(answer)


def start_early_token(auth: ExchangeAuth | None) -> EarlyToken | None:
    return EarlyToken(auth) if auth is not None and _plain_url(auth.ims_url) else None


def token_form(auth: ExchangeAuth) -> dict[str, str]:
    """What IMS is sent, the same by either path (OAuth Server-to-Server: client credentials)."""
    return {"grant_type": "client_credentials", "client_id": auth.client_id, "client_secret": auth.client_secret,
            "scope": ",".join(auth.scopes)}


def _plain_url(url: str) -> bool:
    """scheme://host[:port][/path] and nothing else: no userinfo, query or fragment that two URL
    parsers (this one and aiohttp's) could read differently, so the credentials go where the
    normal path would send them."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc
            and not parts.query and not parts.fragment and "?" not in url and "#" not in url)


def post_token_form(auth: ExchangeAuth) -> Answer | None:
    """POST the form to IMS (no redirect followed, no proxy: as the run's session does); its answer."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(auth.ims_url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        import ssl

        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=_TIMEOUT_S, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=_TIMEOUT_S)
    try:
        conn.request("POST", parts.path + TOKEN_PATH, body=urlencode(token_form(auth)).encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT, "Accept": "*/*"})
        resp = conn.getresponse()
        body = resp.read(_MAX_BODY + 1)
        return Answer(resp.status, body) if len(body) <= _MAX_BODY else None
    finally:
        conn.close()
