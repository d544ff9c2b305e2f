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


CONTROL = re.compile(r"\x1b\[(\??)(\d*)([A-Za-z])")  # CSI sequences: erase, cursor up, cursor shown/hidden


def render(text: str, cols: int = COLS) -> list[str]:
    """The rows a terminal shows for this output, as a VT100 draws them on a screen: \\r, \\n,
    erase-line (ESC[2K), cursor up (ESC[nA), cursor hidden/shown (ignored) and wrapping at `cols`;
    colours are dropped. A last row left blank (where the cursor waits) is not returned."""
    screen: list[list[str]] = [[]]
    row = col = 0
    text = SGR.sub("", text)
    i = 0
    while i < len(text):
        if text[i] == "\x1b":
            m = CONTROL.match(text, i)
            assert m, f"unexpected escape sequence at {i}: {text[i:i + 8]!r}"
            private, n, op = m.groups()
            if (private, n, op) == ("", "2", "K"):
                screen[row] = []  # the whole row is erased; the cursor stays where it was
            elif (private, op) == ("", "A"):
                row = max(0, row - int(n or 1))
            else:
                assert private == "?" and n == "25" and op in "lh", f"unexpected escape sequence {m.group(0)!r}"
            i = m.end()
            continue
        ch = text[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            screen.extend([] for _ in range(row + 1 - len(screen)))
        else:
            if col >= cols:  # autowrap: the rest goes on the next row
                row, col = row + 1, 0
                screen.extend([] for _ in range(row + 1 - len(screen)))
            cells = screen[row]
            cells.extend(" " * (col + 1 - len(cells)))
            cells[col] = ch
            col += 1
    rows = ["".join(r).rstrip() for r in screen]
    return rows[:-1] if rows and not rows[-1] else rows


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


HEAD = re.compile(r"^⬇ \S+ +(\d+)% · [\d.]+ \S+ / [\d.]+ \S+ · \d+/\d+ files$")
PACE = re.compile(r"^  [\d.]+ \S+/s · \d+:\d\d elapsed · ETA (\d+:\d\d|-)(?: · (\d+) failed)?$")
IN_FLIGHT_ROW = re.compile(r"^  part-\d+\S*…\S+\.parquet +(\d+)% of [\d.]+ \S+$")  # part-00001-tid…c000.snappy.parquet


def frames(raw: str, limit: int = 80) -> list[list[str]]:
    """The screens a terminal showed just before each redraw of the live display (it starts with
    \\r ESC[2K), up to `limit` of them evenly spread, as `render` draws them."""
    cuts = [m.start() for m in re.finditer(re.escape("\r\x1b[2K"), raw)]
    step = max(1, len(cuts) // limit)
    return [render(raw[:cut]) for cut in cuts[::step]]


def test_the_live_display_shows_percent_eta_failures_and_files_in_flight(tmp_path: Path, fake_data_root: Path) -> None:
    """One file that is never found (404) fails early; the rest flow for seconds behind a bandwidth
    cap with long file names: the display shows %, bytes and files, rate, elapsed, ETA, the failure
    and the files in flight with shortened names, then leaves the screen to the logs and summary."""
    from aiohttp import web
    from conftest import with_data_dir

    from engine.fake import FakePlatform
    from engine.fake.server import ThreadedFakePlatform, gw_error

    fp = FakePlatform(with_data_dir(FakeConfig(seed=62, faults=Faults(bandwidth_bps=1e6), datasets=[
        DatasetSpec(batches=1, failed_batch=False, processing_batch=False, files_per_dataset_file=n, rows_per_file=6000)
        for n in (3, 4, 4)]), fake_data_root), host="127.0.0.1", port=0)
    missing = fp.expected_files()[0].name
    serve = fp.h_files

    async def h_files(request: web.Request) -> web.StreamResponse:
        if request.query.get("path", "").endswith(missing):
            return gw_error(404, "404", "file not found")
        return await serve(request)

    fp.h_files = h_files  # type: ignore[method-assign]
    threaded = ThreadedFakePlatform(fp, 600.0)
    try:
        (tmp_path / "c.toml").write_text(toml_config(threaded, tmp_path / "out", extra_export="discovery_concurrency = 1\n"))
        code, raw = run_on_pty(["run", "--config", str(tmp_path / "c.toml"), "--concurrency", "2"], cwd=tmp_path)
    finally:
        threaded.stop()

    assert code == 1, raw[-3000:]
    shown = frames(raw)
    heads = [(m, PACE.match(screen[i + 1])) for screen in shown for i, row in enumerate(screen[:-1]) if (m := HEAD.match(row))]
    assert heads and all(pace for _, pace in heads), f"no live display seen: {shown[-3:]}"
    percents = [int(m.group(1)) for m, _ in heads]
    assert percents == sorted(percents) and any(0 < p < 100 for p in percents), percents
    assert any(pace.group(1) != "-" for _, pace in heads), "never an ETA"
    assert any(pace.group(2) == "1" for _, pace in heads), "the failure never shown"
    in_flight = [row for screen in shown for row in screen if IN_FLIGHT_ROW.match(row)]
    assert in_flight and all(len(r) <= COLS for r in in_flight), "no file in flight shown"

    rows = render(raw)  # at the end: the display is gone, every log line whole, then the summary
    assert not any(HEAD.match(r) or PACE.match(r) or IN_FLIGHT_ROW.match(r) or r.startswith(PROGRESS) for r in rows), rows[-8:]
    assert "" not in rows and sum("file_failed" in r for r in rows) == 1, rows
    assert rows[-1].endswith("exit 1"), rows[-3:]
