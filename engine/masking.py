"""The run's secrets (client secret, tokens), registered once and masked wherever text leaves the
process: log fields (engine/logs.py) and quotes of what the platform sent (errors.excerpt). No
import beyond the standard library: errors.py needs it, and the CLI's `--help` imports errors."""

from __future__ import annotations

from typing import Any

_SECRETS: set[str] = set()
MASK = "***"


def register_secret(value: str | None) -> None:
    if value and len(value) >= 6:
        _SECRETS.add(value)


def mask(value: Any) -> Any:
    """Every known secret replaced, in strings and in the lists and mappings that hold them."""
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    return value
