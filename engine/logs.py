"""Structured logs: JSON lines when stdout is not a terminal, readable console output when it is.

Every secret the run knows (client secret, tokens) is registered and masked in every field,
a second line of defence behind SecretStr and never logging headers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRETS: set[str] = set()
_SENSITIVE_KEYS = ("token", "secret", "authorization", "password", "api_key")
MASK = "***"


def register_secret(value: str | None) -> None:
    if value and len(value) >= 6:
        _SECRETS.add(value)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, MASK)
    return value


def redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if any(s in key.lower() for s in _SENSITIVE_KEYS):
            event[key] = MASK
        else:
            event[key] = _mask(value)
    return event


_live_line = False  # a progress line is being redrawn on the terminal


def set_live_line(active: bool) -> None:
    global _live_line
    _live_line = active


class _CurrentStderr:
    """Writes to whatever sys.stderr is now; clears a live progress line first (it is redrawn)."""

    def write(self, text: str) -> int:
        return sys.stderr.write("\r\x1b[2K" + text if _live_line else text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, json_logs: bool | None = None, level: str = "info") -> None:
    if json_logs is None:
        json_logs = not sys.stdout.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
