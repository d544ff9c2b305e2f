"""A SIGTERM or SIGINT that came during start-up, before the exporter's own handlers existed
(engine/launch.py installs `remember` first thing; the exporter takes it once its handlers are in)."""

from __future__ import annotations

import os
import signal

received: list[int] = []


def remember(signum: int, _frame: object) -> None:
    received.append(signum)


def take_early_signal() -> int | None:
    """The first signal that came before the exporter's handlers, if one did (taken once)."""
    signum = received[0] if received else None
    received.clear()
    return signum


def restore_default_signals() -> None:
    """For commands without handlers of their own: the default actions again, and a signal that
    came during start-up delivered now (so it acts as it always would have)."""
    if signal.getsignal(signal.SIGTERM) is not remember:
        return  # not started through launch.entry() (tests calling cli.main), or done already
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if (signum := take_early_signal()) is not None:
        os.kill(os.getpid(), signum)
