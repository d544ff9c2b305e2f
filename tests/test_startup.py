"""Start-up (issue #20): from `exec` to the first request a run imports only what that request needs,
and its cost stays within a ratio of a bare `import aiohttp`, measured side by side (bench/startup.py).
The first request is the IMS token, sent once the settings are valid and before aiohttp and the
exporter are imported (engine/platform/early_token.py; tests/test_early_token.py: how it is used)."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
from pathlib import Path

from bench.startup import commands, imports_before_first_request, time_to_first_request

# Not needed before the first request: the deep check's pyarrow, the bucket's client and modules (only
# for s3://), the fake's data generator, and the console tracebacks structlog would draw with rich.
# (rich and better_exceptions by a submodule: the blocked import of the package itself is listed too)
NOT_BEFORE_THE_FIRST_REQUEST = {"pyarrow", "numpy", "aiobotocore", "botocore", "rich.traceback", "pygments",
                                "better_exceptions.formatter",
                                "engine.output.objectstore", "engine.output.bucket", "engine.output.upload",
                                "engine.output.spool", "engine.fake.server", "engine.fake.data"}
# Not imported when the token request is started: it leaves before them, its round trip overlapping them.
AFTER_THE_TOKEN_REQUEST = {"aiohttp", "anyio", "engine.exporter", "engine.platform.auth", "engine.transfer",
                           "engine.output.report", "engine.checks"}
# Import-bound CPU until the first request, engine over a bare aiohttp import (both started the same
# way, alternating, medians). 8149c4a: 2.5-2.8; with the imports above left out and no collections
# during start-up (engine/launch.py): 1.7-1.9 (9bbe5da); with the token request sent before aiohttp
# and the exporter are imported: 0.6-0.8.
CPU_OVER_AIOHTTP = 1.4
# Started like `python -m engine`, noting what is imported when the run starts its token request.
NOTING = """import sys
from engine.platform import early_token
start = early_token.EarlyToken.__init__
def noting(self, auth):
    print("imported:", *sorted(sys.modules), file=sys.stderr, flush=True)
    start(self, auth)
early_token.EarlyToken.__init__ = noting
from engine.launch import entry
entry()
"""


def test_a_run_imports_nothing_its_first_request_does_not_need(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        argv, cwd = commands(server.getsockname()[1], tmp_path, {})["engine"]
        imported = imports_before_first_request(argv, cwd, server)
    assert {"engine.config", "engine.platform.early_token"} <= set(imported)  # it got as far as the token
    assert not set(imported) & NOT_BEFORE_THE_FIRST_REQUEST, sorted(set(imported) & NOT_BEFORE_THE_FIRST_REQUEST)


def test_the_first_request_costs_a_bounded_multiple_of_importing_aiohttp(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        cmds = commands(server.getsockname()[1], tmp_path, {})
        ratios = []
        for _ in range(5):  # paired runs: each ratio from two runs side by side on the same machine
            engine = time_to_first_request(*cmds["engine"], server)
            bare = time_to_first_request(*cmds["aiohttp"], server)
            ratios.append(engine.cpu_s / bare.cpu_s)
    assert statistics.median(ratios) <= CPU_OVER_AIOHTTP, ratios


def test_the_token_request_starts_before_aiohttp_and_the_exporter_are_imported(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        argv, cwd = commands(server.getsockname()[1], tmp_path, {})["engine"]
        assert argv[1:3] == ["-m", "engine"]
        proc = subprocess.Popen([sys.executable, "-c", NOTING, *argv[3:]], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            server.settimeout(60)
            conn, _ = server.accept()
            with conn:
                assert conn.recv(64).startswith(b"POST /ims/token/v3 ")  # the first request is the token's
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
        stderr = proc.communicate()[1]
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("imported:")]
    imported = set(line.split()[1:])
    assert "engine.config" in imported  # after the settings were validated
    assert not {m for m in imported if m in AFTER_THE_TOKEN_REQUEST or m.split(".")[0] in AFTER_THE_TOKEN_REQUEST
                or m.startswith(("engine.transfer.", "engine.checks."))}, sorted(imported & AFTER_THE_TOKEN_REQUEST)
