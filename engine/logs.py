"""Structured logs on stderr: JSON lines when stderr is not a terminal, readable console output when it is.

Every secret the run knows (client secret, tokens) is registered and masked in every field,
a second line of defence behind SecretStr and never logging headers.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

from .masking import MASK, register_secret  # noqa: F401 - register_secret re-exported
from .masking import mask as _mask

# Start-up time (issue #20): `import structlog` imports structlog.dev, which imports rich and
# better_exceptions when they are installed (rich comes with the dev tools: import-linter), some 70
# modules and 30-50 ms before the first request, only to draw tracebacks in console logs. Plain
# tracebacks serve here: a None in sys.modules makes those two imports fail, for structlog alone.
_HIDDEN = [name for name in ("rich", "better_exceptions") if name not in sys.modules]
sys.modules.update(dict.fromkeys(_HIDDEN))  # type: ignore[arg-type]
try:
    import structlog
finally:
    for _name in _HIDDEN:
        if sys.modules.get(_name, False) is None:
            del sys.modules[_name]

_SENSITIVE_KEYS = ("token", "secret", "authorization", "password", "api_key")


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if any(s in key.lower() for s in _SENSITIVE_KEYS):
            event[key] = MASK
        else:
            event[key] = _mask(value)
    return event


class Terminal:
    """stderr as shared by log lines and the live progress line.

    Every log line goes out in ONE write, followed by a redraw of the live line: structlog's
    PrintLogger prints the line and its newline as two writes, and clearing the live line before
    each write erased the log line just written (a blank row on the terminal). The live line is
    cut to the terminal's width, so it never wraps onto a row that clearing would not reach.
    """

    _lock = threading.Lock()
    live: str | None = None
    _through: Callable[[str], None] | None = None  # the live display's printer, while it is on screen

    @classmethod
    def stream(cls) -> TextIO:
        return sys.stderr

    @classmethod
    def print_through(cls, printer: Callable[[str], None] | None) -> None:
        """Log lines go through `printer` (a rich Live display prints them above itself), or, with
        None, straight to stderr again."""
        with cls._lock:
            cls._through = printer

    @classmethod
    def log_line(cls, message: str) -> None:
        with cls._lock:
            if cls._through is not None:
                cls._through(message)
            elif cls.live is None:
                sys.stderr.write(message + "\n")
            else:
                sys.stderr.write("\r\x1b[2K" + message + "\n" + cls.live)
            sys.stderr.flush()

    @classmethod
    def show_live(cls, text: str) -> None:
        with cls._lock:
            cls.live = _fit(text)
            sys.stderr.write("\r\x1b[2K" + cls.live)
            sys.stderr.flush()

    @classmethod
    def clear_live(cls) -> None:
        with cls._lock:
            if cls.live is not None:
                cls.live = None
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()


def _fit(text: str) -> str:
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return text
    return text if len(text) < columns else text[: max(1, columns - 2)] + "…"


class _StderrLogger:
    """structlog's logger: each rendered event through Terminal.log_line (whatever sys.stderr is now)."""

    def msg(self, message: str) -> None:
        Terminal.log_line(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


_LOGGER = _StderrLogger()


def configure(*, json_logs: bool | None = None, level: str = "info") -> None:
    if json_logs is None:  # logs go to stderr: its terminal decides (`run > summary.txt` still reads well)
        json_logs = not sys.stderr.isatty()
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
        logger_factory=lambda *_args: _LOGGER,
        cache_logger_on_first_use=False,
    )
