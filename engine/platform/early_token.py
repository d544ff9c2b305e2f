"""The IMS token requested as soon as the settings are valid, while the engine is still being imported.

Start-up time (issue #20): a run's first request waited for aiohttp, the exporter and the download
machinery (~0.35 s on a quiet machine after the settings), then for IMS's round trip (100-300 ms
over the internet, TLS included). Here the token request leaves once the CLI has checked all it
checks itself (valid settings, the output folder, no other run holding it: engine/cli.py, export),
from a thread with the standard library's HTTP client, and its round trip overlaps the imports.

It is only a head start: TokenProvider (auth.py) takes its answer when its own settings ask IMS
for exactly what this request asked and it came back 200 with a token. Anything else (no answer
after a read timeout, a refusal, a dropped connection, other settings) is dropped unused, and the
normal exchange runs with its retries and its errors, as if there had been no early request.
Nothing here logs: what it sent or got is said by the normal path, if at all.

Standard library only, and only what the request needs (http.client; ssl for https).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..config import AuthSettings

TOKEN_PATH = "/ims/token/v3"
USER_AGENT = "aep-export/0.1"  # every request of the run says so (platform/client.py: make_session)
_TIMEOUT_S = 60.0  # per socket operation; the thread ends by then at the latest (TokenProvider waits less)
_MAX_BODY = 1 << 20  # a token answer is a few KiB; a larger one is not taken here


@dataclass(frozen=True)
class ExchangeAuth:
    """What a token exchange sends IMS, and where (the secret kept out of reprs)."""

    ims_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...]

    @classmethod
    def of(cls, auth: AuthSettings) -> ExchangeAuth:
        return cls(auth.ims_url, auth.client_id, auth.client_secret.get_secret_value(), tuple(auth.scopes))


class Answer(NamedTuple):
    status: int
    body: bytes


class EarlyToken:
    """One token request in flight for `auth`; `answer` ends with IMS's Answer, or None on any failure."""

    def __init__(self, auth: ExchangeAuth):
        self.auth = auth
        self.answer: Future[Answer | None] = Future()
        self.answer.set_running_or_notify_cancel()  # a waiter that gives up cannot cancel it: the thread always sets it
        threading.Thread(target=self._run, name="aep-early-token", daemon=True).start()

    def asked_for(self, auth: AuthSettings) -> bool:
        """Whether this request asked IMS what these settings ask."""
        return self.auth == ExchangeAuth.of(auth)

    def _run(self) -> None:
        try:
            answer: Answer | None = post_token_form(self.auth)
        except BaseException:  # noqa: BLE001 - any failure means "no head start": the normal exchange says what is wrong
            answer = None
        self.answer.set_result(answer)


def start_early_token(auth: AuthSettings) -> EarlyToken | None:
    """The request on its way, when there is one to make: a ready access token needs none, and an
    IMS URL that is more than scheme, host, port and path is left to the normal path."""
    if auth.access_token.get_secret_value() or not auth.client_secret.get_secret_value() or not _plain_url(auth.ims_url):
        return None
    return EarlyToken(ExchangeAuth.of(auth))


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
