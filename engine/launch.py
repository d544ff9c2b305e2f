"""The console script's first stop: `--version` answers without importing the engine (start-up
time: aiohttp, pydantic and structlog alone take a few hundred milliseconds); everything else goes
to the CLI, whose parser is built from the standard library alone, so `--help` and usage errors
do not pay for the engine either (engine/cli.py imports it once a command runs).

A SIGTERM or SIGINT that comes during those imports, before the exporter's own handlers exist,
must not kill the run half-way with no report: it is remembered here, first thing, and the
exporter acts on it as soon as its handlers are installed (engine/exporter.py, exit 130/143 and
a report that says `interrupted`). Commands that install no handlers get the default behaviour
back, and a remembered signal is delivered to them then (`early.restore_default_signals`).
"""

from __future__ import annotations

import gc
import signal
import sys

from .early import remember as _remember

_EARLY = (signal.SIGINT, signal.SIGTERM)


def entry() -> None:
    # Start-up time (issue #20): no garbage collection while some 500 modules are imported (they are
    # kept for the whole run; the collections would scan them over and over: ~40 ms of CPU before the
    # first request). The CLI freezes what start-up built and collects again once a command has its
    # modules (cli.collect_again), before any work that makes garbage.
    gc.disable()
    for signum in _EARLY:
        signal.signal(signum, _remember)
    if sys.argv[1:] == ["--version"]:
        from . import __version__  # start-up time: `--version` answers before the engine's imports

        print(f"aep-export {__version__} (Python {sys.version.split()[0]})")
        return
    from .cli import entry as cli_entry  # start-up time: after the signal handlers above

    cli_entry()

