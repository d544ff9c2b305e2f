"""A SIGTERM or SIGINT that came during start-up, before the exporter's own handlers existed
(engine/launch.py installs `remember` first thing; the exporter takes it once its handlers are in)."""

from __future__ import annotations

received: list[int] = []


def remember(signum: int, _frame: object) -> None:
    received.append(signum)


def take_early_signal() -> int | None:
    """The first signal that came before the exporter's handlers, if one did (taken once)."""
    signum = received[0] if received else None
    received.clear()
    return signum
