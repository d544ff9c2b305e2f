"""Seeded, deterministic fault decisions.

A decision is a pure function of (seed, fault kind, method, path+query, range start,
how many times this exact request key was already seen). No shared RNG stream is used,
so the decisions do not depend on the order in which concurrent requests arrive.
Failing faults are capped per request key so that retries always eventually succeed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field

FAILING_KINDS = ("429", "5xx", "error_body", "reset", "corrupt", "response_limit")


@dataclass
class Faults:
    """Fault modes; all off by default. Probabilities are per request (0..1)."""

    p_429: float = 0.0  # 429 + Retry-After + {"error_code":"429050",...}
    retry_after_s: float = 1.0  # Retry-After value (whole seconds, rounded up)
    p_retry_after_date: float = 0.0  # share of 429s whose Retry-After is an HTTP-date
    p_5xx: float = 0.0  # 500/502/503/504 with a JSON body, any /data route
    p_error_body: float = 0.0  # downloads only: 500 JSON error instead of the bytes
    p_reset: float = 0.0  # downloads: send a fraction of the body, then abort
    response_limit_s: float | None = None  # abort bodies still streaming after N s (gateway 60 s)
    bandwidth_bps: float | None = None  # per-response pacing (token bucket)
    first_byte_delay_s: float = 0.0  # latency before the headers of every request
    token_lifetime_s: float = 86399.0  # IMS expires_in; tokens are rejected after it
    p_short_range: float = 0.0  # answer a Range with a shorter (valid) range
    redirect: bool = False  # downloads 307 to a second host that must not get auth
    p_corrupt: float = 0.0  # flip one byte of a full 200 body (detectable with send_digest)
    ignore_range: float = 0.0  # probability (True == always) of a 200 full body for a Range
    send_digest: bool = False  # full 200 downloads carry Repr-Digest: sha-256=:b64:
    max_faults_per_key: int = 2  # failing faults per request key, so retries succeed
    # Sustained throttling: the download requests numbered first..last (arrival order, from 1)
    # all answer 429, retries included (the per-key cap does not apply)
    throttle_downloads: tuple[int, int] | None = None
    chunked: bool = False  # bodies in CHUNK-sized writes, never sendfile: the byte counters follow the wire


def unit(seed: int, kind: str, method: str, target: str, range_start: int | None, seen: int) -> float:
    """Deterministic uniform [0,1) for one fault decision."""
    key = f"{seed}\x1f{kind}\x1f{method}\x1f{target}\x1f{range_start}\x1f{seen}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


@dataclass
class RequestFaultState:
    """Per-request view used by handlers to ask fault questions."""

    engine: FaultEngine
    method: str
    target: str  # path + query string
    range_start: int | None
    seen: int  # times this key was seen before this request

    @property
    def key(self) -> tuple[str, str, int | None]:
        return (self.method, self.target, self.range_start)

    def roll(self, kind: str) -> float:
        return unit(self.engine.seed, kind, self.method, self.target, self.range_start, self.seen)

    def decide(self, kind: str, p: float) -> bool:
        """Whether to inject `kind`; failing kinds obey the per-key cap and are counted."""
        if not p or self.roll(kind) >= float(p):
            return False
        return self.engine.claim(self.key, kind)


@dataclass
class FaultEngine:
    seed: int
    faults: Faults
    seen: Counter[tuple[str, str, int | None]] = field(default_factory=Counter)
    injected_per_key: Counter[tuple[str, str, int | None]] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, method: str, target: str, range_start: int | None) -> RequestFaultState:
        key = (method, target, range_start)
        with self._lock:
            n = self.seen[key]
            self.seen[key] = n + 1
        return RequestFaultState(self, method, target, range_start, n)

    def claim(self, key: tuple[str, str, int | None], kind: str) -> bool:
        with self._lock:
            if kind in FAILING_KINDS:
                if self.injected_per_key[key] >= self.faults.max_faults_per_key:
                    return False
                self.injected_per_key[key] += 1
            self.injected[kind] += 1
        return True

    def count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self.injected_per_key.clear()
            self.injected.clear()
