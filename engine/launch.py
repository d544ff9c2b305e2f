"""The console script's first stop: `--version` answers without importing the engine (start-up
time: aiohttp, pydantic and structlog alone take a few hundred milliseconds); everything else goes
to the CLI, whose parser is built from the standard library alone, so `--help` and usage errors
do not pay for the engine either (engine/cli.py imports it once a command runs)."""

from __future__ import annotations

import sys


def entry() -> None:
    if sys.argv[1:] == ["--version"]:
        from . import __version__

        print(f"aep-export {__version__} (Python {sys.version.split()[0]})")
        return
    from .cli import entry as cli_entry

    cli_entry()
