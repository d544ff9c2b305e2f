"""Every HTTP exchange of a run's session, told to an observer (the metrics): which endpoint of the
platform it went to and the status class of its answer. Labels stay bounded: a fixed set of
endpoint names, never a path, an id or a file name.

An aiohttp TraceConfig on the session, installed only when someone observes: a run without metrics
pays nothing for it, and no request path needed a call of its own (redirect hops and the IMS token
exchange included).
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
from yarl import URL

from ..config import Settings
from .audiences import SEGMENTATION
from .auth import TOKEN_PATH
from .catalog import CATALOG
from .dataaccess import EXPORT
from .origin import same_origin

# The values of the `endpoint` label, each a part of the platform the engine talks to
ENDPOINTS = ("ims", "catalog", "listing", "download", "segmentation", "redirected", "other")
CODE_CLASSES = ("2xx", "3xx", "4xx", "429", "5xx", "error")  # "429" is not counted in "4xx"; "error": no answer


class ExchangeObserver(Protocol):
    def exchange(self, endpoint: str, code_class: str) -> None: ...


def code_class(status: int | None) -> str:
    if status is None:
        return "error"
    if status == 429:
        return "429"
    return f"{status // 100}xx" if 200 <= status < 600 else "other"


def endpoint_of(url: URL, gateway: URL, ims: URL) -> str:
    """The endpoint an exchange went to: by origin first (a redirect's target is not the gateway),
    then by the gateway's documented path prefixes."""
    path = url.path
    if same_origin(url, ims) and path.startswith(TOKEN_PATH):
        return "ims"
    if not same_origin(url, gateway):
        return "redirected"
    if path.startswith(CATALOG):
        return "catalog"
    if path.startswith(f"{EXPORT}/files/") and "path" in url.query:
        return "download"
    if path.startswith(EXPORT):
        return "listing"
    if path.startswith(SEGMENTATION):
        return "segmentation"
    return "other"


def traced(settings: Settings, observer: ExchangeObserver) -> aiohttp.TraceConfig:
    """A trace config telling `observer` of each exchange once its answer's headers are in (or it failed)."""
    gateway, ims = URL(settings.platform.url), URL(settings.auth.ims_url)
    trace = aiohttp.TraceConfig()

    async def answered(_s: aiohttp.ClientSession, _c: object, params: aiohttp.TraceRequestEndParams) -> None:
        observer.exchange(endpoint_of(params.url, gateway, ims), code_class(params.response.status))

    async def failed(_s: aiohttp.ClientSession, _c: object, params: aiohttp.TraceRequestExceptionParams) -> None:
        observer.exchange(endpoint_of(params.url, gateway, ims), "error")

    trace.on_request_end.append(answered)
    trace.on_request_exception.append(failed)
    return trace
