"""The one table of exit codes (a contract: the README's "Exit codes" table is checked against it,
tests/test_exit_codes.py). The errors that end a whole run carry theirs (errors.RunFatal); the
coordinator (exporter.py) and the CLI (cli.py) both take the code from here."""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CREDENTIALS = 3
EXIT_UNREACHABLE = 4
EXIT_BUSY = 5  # another run holds the destination (runlock.py): nothing attempted, nothing written
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "everything exported and verified",
    EXIT_FAILED: "the run finished but something failed (_report.json says what), or the disk filled up",
    EXIT_USAGE: "usage or configuration error: nothing attempted",
    EXIT_CREDENTIALS: "credentials rejected",
    EXIT_UNREACHABLE: "the platform cannot be reached",
    EXIT_BUSY: "another run is writing into the output folder: nothing attempted",
    EXIT_SIGNAL[signal.SIGINT]: "interrupted by SIGINT",
    EXIT_SIGNAL[signal.SIGTERM]: "interrupted by SIGTERM",
}
