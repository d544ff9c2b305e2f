"""What the fake platform counts as it serves (tests read it: requests, statuses, bytes sent).

Its own module: the route mixins (ims.py, dataaccess.py) count into it, and server.py imports them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeStats:
    requests: Counter[str] = field(default_factory=Counter)  # by route name
    statuses: Counter[int] = field(default_factory=Counter)
    bytes_sent: int = 0  # download body bytes, all files
    bytes_by_file: Counter[str] = field(default_factory=Counter)  # "{dataSetFileId}/{name}"
    faults: Counter[str] = field(default_factory=Counter)  # shared with the FaultEngine
    tokens_issued: int = 0
    redirect_requests: int = 0
    redirect_header_names: list[list[str]] = field(default_factory=list)  # per request, lowercase
    redirect_saw_auth: bool = False  # any Authorization / x-api-key reached the redirect host
    # every download body as sent: (file key, first byte, bytes sent), so a test can tell bytes
    # sent twice (a stream abandoned past a split point) from bytes sent once
    bodies: list[list[Any]] = field(default_factory=list)  # [key, start, sent], sent counted as it goes
    # Rates and concurrency on the fake's own clock (time.monotonic), for the limits' tests:
    sent_log: list[tuple[float, int]] = field(default_factory=list)  # (when, bytes_sent after it) per count
    request_log: list[tuple[float, str]] = field(default_factory=list)  # (when, route) per request received
    downloads_in_flight: int = 0  # download bodies being sent now
    in_flight_at_start: list[int] = field(default_factory=list)  # per download body, in order: bodies in flight with it

    def sent(self, n: int) -> None:
        self.bytes_sent += n
        self.sent_log.append((time.monotonic(), self.bytes_sent))

    def received(self, route: str) -> None:
        self.requests[route] += 1
        self.request_log.append((time.monotonic(), route))

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests), "statuses": dict(self.statuses),
            "bytes_sent": self.bytes_sent, "bytes_by_file": dict(self.bytes_by_file),
            "faults": dict(self.faults), "tokens_issued": self.tokens_issued,
            "redirect_requests": self.redirect_requests,
            "redirect_header_names": self.redirect_header_names,
            "redirect_saw_auth": self.redirect_saw_auth,
        }
