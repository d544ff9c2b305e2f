"""Every HTTP exchange of a run's session, told to an observer (the metrics): which endpoint of the
platform it went to and the status class of its answer. Labels stay bounded: a fixed set of
endpoint names, never a path, an id or a file name.

An aiohttp TraceConfig on the session, installed only when someone observes: a run without metrics
pays nothing for it, and no request path needed a call of its own (redirect hops and the IMS token
exchange included).

The Data Landing Zone's Blob container is named only by the DLZ credentials endpoint, mid-run: the
DLZ source tells its origin (`count_as_blob`, kept per session), and an exchange with that origin
counts as "blob" where any other origin but the gateway's and IMS's counts as "redirected".
"""

from __future__ import annotations

from typing import Protocol
from weakref import WeakKeyDictionary

import aiohttp
from yarl import URL

from ..config import Settings
from .audiences import SEGMENTATION
from .auth import TOKEN_PATH
from .catalog import CATALOG
from .dataaccess import EXPORT
from .flowservice import ADHOC, CREDENTIALS, FLOWSERVICE
from .origin import Origin, origin_of, same_origin

# The values of the `endpoint` label, each a part of the platform the engine talks to
ENDPOINTS = ("ims", "catalog", "listing", "download", "segmentation", "flowservice", "blob", "redirected", "other")
# Flow Service and the calls of a `dlz` entry beside it (the DLZ's SAS, the ad hoc run)
FLOW_PATHS = (FLOWSERVICE, CREDENTIALS, ADHOC)

_blob_origins: WeakKeyDictionary[aiohttp.ClientSession, frozenset[Origin]] = WeakKeyDictionary()
CODE_CLASSES = ("2xx", "3xx", "4xx", "429", "5xx", "error")  # "429" is not counted in "4xx"; "error": no answer


class ExchangeObserver(Protocol):
    def exchange(self, endpoint: str, code_class: str) -> None: ...


def code_class(status: int | None) -> str:
    if status is None:
        return "error"
    if status == 429:
        return "429"
    return f"{status // 100}xx" if 200 <= status < 600 else "other"


def count_as_blob(session: aiohttp.ClientSession, container: URL) -> None:
    """The DLZ container's origin, once known: the session's exchanges with it count as "blob"."""
    _blob_origins[session] = _blob_origins.get(session, frozenset()) | {origin_of(container)}


def endpoint_of(url: URL, gateway: URL, ims: URL, blob: frozenset[Origin] = frozenset()) -> str:
    """The endpoint an exchange went to: by origin first (a redirect's target is not the gateway;
    `blob`: the DLZ containers' origins), then by the gateway's documented path prefixes."""
    path = url.path
    if same_origin(url, ims) and path.startswith(TOKEN_PATH):
        return "ims"
    if not same_origin(url, gateway):
        return "blob" if origin_of(url) in blob else "redirected"
    if path.startswith(CATALOG):
        return "catalog"
    if path.startswith(f"{EXPORT}/files/") and "path" in url.query:
        return "download"
    if path.startswith(EXPORT):
        return "listing"
    if path.startswith(SEGMENTATION):
        return "segmentation"
    if path.startswith(FLOW_PATHS):
        return "flowservice"
    return "other"


def traced(settings: Settings, observer: ExchangeObserver) -> aiohttp.TraceConfig:
    """A trace config telling `observer` of each exchange once its answer's headers are in (or it failed)."""
    gateway, ims = URL(settings.platform.url), URL(settings.auth.ims_url)
    trace = aiohttp.TraceConfig()

    def endpoint(session: aiohttp.ClientSession, url: URL) -> str:
        return endpoint_of(url, gateway, ims, _blob_origins.get(session, frozenset()))

    async def answered(session: aiohttp.ClientSession, _c: object, params: aiohttp.TraceRequestEndParams) -> None:
        observer.exchange(endpoint(session, params.url), code_class(params.response.status))

    async def failed(session: aiohttp.ClientSession, _c: object, params: aiohttp.TraceRequestExceptionParams) -> None:
        observer.exchange(endpoint(session, params.url), "error")

    trace.on_request_end.append(answered)
    trace.on_request_exception.append(failed)
    return trace
