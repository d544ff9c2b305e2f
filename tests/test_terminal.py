"""On a terminal: the live progress line never blanks a log line (checked on the raw bytes a pty gets)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from conftest import clean_env, toml_config

from engine.fake import DatasetSpec, FakeConfig, Faults

PROGRESS = "⬇"  # the live line's first character (engine/progress.py)
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours; every other escape is interpreted below
COLS = 100


def run_on_pty(args: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pty of COLS columns; everything the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLS, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=clean_env(TERM="xterm", COLUMNS=str(COLS)), close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer closed the pty
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def render(text: str, cols: int = COLS) -> list[str]:
    """The rows a terminal shows for this output: \\r, \\n, erase-line (ESC[2K) and wrapping at
    `cols`, as a VT100 does; colours are dropped."""
    rows: list[str] = []
    row: list[str] = []
    col = 0
    text = SGR.sub("", text)
    i = 0
    while i < len(text):
        if text.startswith("\x1b[2K", i):
            row = [" "] * col  # the whole row is erased; the cursor stays where it was
            i += 4
            continue
        ch = text[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            rows.append("".join(row).rstrip())
            row, col = [], 0
        else:
            assert ch != "\x1b", f"unexpected escape sequence at {i}: {text[i - 1:i + 8]!r}"
            if col >= cols:  # autowrap: the rest goes on the next row
                rows.append("".join(row).rstrip())
                row, col = [], 0
            row.extend(" " * (col + 1 - len(row)))
            row[col] = ch
            col += 1
    if "".join(row).strip():
        rows.append("".join(row).rstrip())
    return rows


def test_render_models_the_blanking_bug() -> None:
    """The model itself: a line cleared after being written (the old bug) renders blank."""
    assert render(f"\r\x1b[2K{PROGRESS} 1 MiB\r\x1b[2Khello\r\x1b[2K\n") == [""]
    assert render(f"\r\x1b[2K{PROGRESS} 1 MiB\r\x1b[2Khello\n{PROGRESS} 2 MiB\r\x1b[2K") == ["hello"]
    assert render("x" * (COLS + 5) + "\r\x1b[2K") == ["x" * COLS]  # only the last row is erased


def test_every_log_line_is_intact_while_progress_is_live(tmp_path: Path, threaded_fake) -> None:
    # Five datasets of different sizes behind a bandwidth cap: batches finish (and log) one by one
    # over ~3 s while the progress line is being redrawn.
    fp = threaded_fake(FakeConfig(seed=61, faults=Faults(bandwidth_bps=2e6), datasets=[
        DatasetSpec(files_per_dataset_file=n, rows_per_file=6000) for n in (1, 2, 3, 4, 5)]))
    out = tmp_path / "out"
    (tmp_path / "c.toml").write_text(toml_config(fp, out, extra_export="discovery_concurrency = 1\n"))

    code, raw = run_on_pty(["run", "--config", str(tmp_path / "c.toml"), "--concurrency", "2"], cwd=tmp_path)

    assert code == 0, raw[-3000:]
    plain = SGR.sub("", raw)
    first, last = plain.find(PROGRESS), plain.rfind(PROGRESS)
    assert first >= 0, "the live progress line was never drawn: stderr was not taken for a terminal"
    # the point of the test: log lines were written while the live line was on screen
    while_live = plain[first:last].count("batch_done")
    assert while_live >= 2, f"only {while_live} batch_done lines were written while progress was live"

    rows = render(raw)
    assert "" not in rows, f"a blank row on the terminal: {rows}"
    assert not any(r.startswith(PROGRESS) for r in rows), "a progress line was left on the screen"
    assert sum("batch_found" in r for r in rows) == 5 and sum("batch_done" in r for r in rows) == 5, rows
    assert all(len(r) <= COLS for r in rows)
    assert rows[-1].endswith("exit 0"), rows[-3:]  # the summary follows the logs, intact
