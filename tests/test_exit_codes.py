"""The exit codes are a contract with one table (engine/outcome.py): the README's table says the
same codes, and every error that ends a run takes its code from that table."""

from __future__ import annotations

import re
from pathlib import Path

from engine import errors
from engine.outcome import EXIT_CODES

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_codes() -> set[int]:
    section = README.read_text(encoding="utf-8").split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| code")]
    codes = {int(c) for row in rows for c in re.findall(r"\d+", row.split("|")[1])}
    assert codes, "no table under README's 'Exit codes'"
    return codes


def test_the_readme_table_lists_exactly_the_engines_codes() -> None:
    assert readme_codes() == set(EXIT_CODES)


def test_every_run_fatal_error_has_a_code_from_the_table() -> None:
    fatal = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.RunFatal) and c is not errors.RunFatal]
    assert {c.__name__ for c in fatal} >= {"CredentialsRejected", "PlatformUnreachable", "DiskFull", "DestinationBusy"}
    for cls in fatal:
        assert cls.exit_code in EXIT_CODES, cls
        assert cls.status, cls
