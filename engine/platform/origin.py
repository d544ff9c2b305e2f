"""Origins as the web defines them (RFC 6454): where credentials may go.

Two URLs share an origin when scheme, host and *effective* port match: the host compared without
case and without one trailing dot, the port 443 for https and 80 for http when none is written.
The gateway writes its links as `https://platform.adobe.io:443/...` (aep-api.md §4.1), its `next`
links without the port, and a configuration says `https://platform.adobe.io`: one origin.
(yarl's URL equality would tell `:443` apart from no port, hence this module.)
"""

from __future__ import annotations

from typing import NamedTuple

from yarl import URL

DEFAULT_PORTS = {"https": 443, "http": 80}


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int | None

    def __str__(self) -> str:
        default = DEFAULT_PORTS.get(self.scheme)
        port = "" if self.port is None or self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"


def origin_of(url: URL | str) -> Origin:
    url = url if isinstance(url, URL) else URL(url)
    scheme = (url.scheme or "").lower()
    host = (url.host or "").lower()
    if host.endswith("."):
        host = host[:-1]  # one trailing dot: the fully qualified spelling of the same name
    port = url.explicit_port if url.explicit_port is not None else DEFAULT_PORTS.get(scheme)
    return Origin(scheme, host, port)


def same_origin(a: URL | str, b: URL | str) -> bool:
    return origin_of(a) == origin_of(b)
