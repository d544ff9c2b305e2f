"""Start-up (issue #20): from `exec` to the first request a run imports only what that request needs,
and its cost stays within a ratio of a bare `import aiohttp`, measured side by side (bench/startup.py)."""

from __future__ import annotations

import socket
import statistics
from pathlib import Path

from bench.startup import commands, imports_before_first_request, time_to_first_request

# Not needed before the first request: the deep check's pyarrow, the bucket's client and modules (only
# for s3://), the fake's data generator, and the console tracebacks structlog would draw with rich.
# (rich and better_exceptions by a submodule: the blocked import of the package itself is listed too)
NOT_BEFORE_THE_FIRST_REQUEST = {"pyarrow", "numpy", "aiobotocore", "botocore", "rich.traceback", "pygments",
                                "better_exceptions.formatter",
                                "engine.output.objectstore", "engine.output.bucket", "engine.output.upload",
                                "engine.output.spool", "engine.fake.server", "engine.fake.data"}
# Import-bound CPU until the first request, engine over a bare aiohttp import (both started the same
# way, alternating, medians). 8149c4a: 2.5-2.8; with the imports above left out and no collections
# during start-up (engine/launch.py): 1.7-1.9.
CPU_OVER_AIOHTTP = 2.3


def test_a_run_imports_nothing_its_first_request_does_not_need(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        argv, cwd = commands(server.getsockname()[1], tmp_path, {})["engine"]
        imported = imports_before_first_request(argv, cwd, server)
    assert {"aiohttp", "engine.exporter", "engine.platform.auth"} <= set(imported)  # it got as far as the token
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
