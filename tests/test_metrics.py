"""Prometheus metrics (issue #21) against real servers: a Prometheus scraping a running export, a
Pushgateway receiving its pushes. Every figure is compared with the fake platform's own counts and
the run's report, never with a time.

A run is held open at its end by an on_batch_complete hook that reads a FIFO: the test reads the
servers while the run is still live (Prometheus marks the series of a target that went away as
stale), then writes to the FIFO to let it finish.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from conftest import clean_env, read_report, run_cli, settings_for, toml_config
from prom import free_port, prometheus, pushgateway, wait_until

from engine.exporter import Exporter
from engine.fake import FakeConfig, FakePlatform
from engine.fake.faults import Faults
from engine.layout import report_name
from engine.outcome import EXIT_OK
from engine.shard import parse_shard

CONCURRENCY = 4


def _fake_config() -> FakeConfig:
    """One dataset, one batch of six files; a share of 429s (Retry-After 1 s) that pause the pool."""
    return FakeConfig.small(n_datasets=1, files=6, rows=3000, seed=2101, faults=Faults(p_429=0.25, retry_after_s=1))


def _held_settings(fp: FakePlatform, out: Path, fifo: Path, **metrics: Any) -> Any:
    os.mkfifo(fifo)
    settings = settings_for(fp, out, concurrency=CONCURRENCY)
    hold = shlex.join(["sh", "-c", 'cat "$1" > /dev/null', "hold", str(fifo)])  # returns once the test writes
    return settings.model_copy(update={"metrics": settings.metrics.model_copy(update=metrics),
                                       "hooks": settings.hooks.model_copy(update={"on_batch_complete": hold, "timeout": 120.0})})


def _release(fifo: Path) -> None:
    with fifo.open("w") as f:  # blocks until the hook has it open for reading
        f.write("go\n")


async def _run_held(exporter: Exporter, fifo: Path, while_held: Callable[[], None]) -> Any:
    """Run the export; once it holds at its end, call `while_held` (in a thread), then release it."""
    async with anyio.create_task_group() as tg:
        result: list[Any] = []

        async def run() -> None:
            result.append(await exporter.execute())

        tg.start_soon(run)
        try:
            await anyio.to_thread.run_sync(while_held)
        finally:
            await anyio.to_thread.run_sync(_release, fifo)
    return result[0]


def _by_endpoint(fp: FakePlatform) -> dict[str, int]:
    """The fake's own request counts, under the metrics' endpoint names."""
    routes = fp.stats.requests
    return {"ims": routes["ims.token"], "catalog": sum(n for r, n in routes.items() if r.startswith("catalog.")),
            "listing": routes["export.listing"] + routes["export.batchFiles"], "download": routes["export.download"]}


async def test_a_real_prometheus_scrapes_the_right_figures_from_a_running_export(tmp_path: Path, make_fake) -> None:
    port = free_port()
    out, fifo = tmp_path / "out", tmp_path / "hold"
    seen: dict[str, Any] = {}
    async with make_fake(_fake_config()) as fp:
        exporter = Exporter(_held_settings(fp, out, fifo, addr=f"127.0.0.1:{port}"), handle_signals=False)

        def while_held() -> None:
            with prometheus(tmp_path / "prom", f"127.0.0.1:{port}") as prom:
                # the batch is finished and the run still live: every figure below is final
                wait_until(lambda: prom.value('aep_export_batches_finished_total{status="ok"}') == 1, "a scrape after the batch")
                seen["files"] = prom.values("aep_export_files_total", "result")
                seen["bytes"] = prom.values("aep_export_bytes_total", "result")
                seen["requests"] = prom.values("aep_export_requests_total", "endpoint", "code_class")
                for name in ("bytes_received_total", "retries_total", "throttled_total", "paused_seconds_total", "files_in_flight",
                             "connections_in_flight", "connections_allowed", "files_discovered_total", "bytes_discovered_total"):
                    seen[name] = prom.value(f"aep_export_{name}")
                seen["status"] = prom.values("aep_export_run_status", "status")
                seen["finished"] = prom.value("aep_export_run_finished")
                seen["up"] = prom.value('up{job="aep_export"}')

        run = await _run_held(exporter, fifo, while_held)
    assert run.exit_code == EXIT_OK, run.errors
    totals = read_report(out)["totals"]
    expected = fp.expected_files()
    n, size = len(expected), sum(e.size for e in expected)
    assert seen["up"] == 1 and seen["status"] == {("running",): 1} and seen["finished"] == 0
    assert seen["files"] == {("downloaded",): n, ("reused",): 0, ("failed",): 0} and totals["files_downloaded"] == n
    assert seen["bytes"] == {("downloaded",): size, ("reused",): 0, ("failed",): 0} and totals["bytes"] == size
    assert seen["files_discovered_total"] == n and seen["bytes_discovered_total"] == size
    assert seen["bytes_received_total"] == totals["bytes_fetched"] == fp.stats.bytes_sent
    # every exchange, by endpoint, as the fake counted it; its 429s as the fake sent them
    by_endpoint: dict[str, float] = {}
    for (endpoint, _), count in seen["requests"].items():
        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + count
    assert by_endpoint == _by_endpoint(fp), (seen["requests"], dict(fp.stats.requests))
    throttled = sum(c for (_, code_class), c in seen["requests"].items() if code_class == "429")
    assert throttled == fp.stats.statuses[429] > 0, dict(fp.stats.statuses)
    assert seen["throttled_total"] == totals["throttled"] == throttled
    assert seen["retries_total"] == totals["retries"] >= throttled
    assert seen["paused_seconds_total"] >= 1.0  # at least one whole Retry-After (1 s) paused the pool
    assert seen["files_in_flight"] == 0 and seen["connections_in_flight"] == 0 and seen["connections_allowed"] == CONCURRENCY


async def test_a_real_pushgateway_gets_periodic_pushes_and_the_outcome(tmp_path: Path, make_fake) -> None:
    out, fifo = tmp_path / "out", tmp_path / "hold"
    seen: dict[str, Any] = {}
    with pushgateway(tmp_path / "pgw") as gateway:
        async with make_fake(_fake_config()) as fp:
            settings = _held_settings(fp, out, fifo, push=gateway.url, push_interval=1.0, job="nightly")
            exporter = Exporter(settings, handle_signals=False, shard=parse_shard("0/1"))

            def while_held() -> None:  # a periodic push, made while the run was live
                def pushed_finished() -> dict[str, Any]:
                    got = gateway.samples("nightly", shard="0/1")
                    done = got.get("aep_export_batches_finished_total", {}).get((("status", "ok"),))
                    return got if done == 1 else {}

                seen["during"] = wait_until(pushed_finished, "a push after the batch")

            run = await _run_held(exporter, fifo, while_held)
        final = gateway.samples("nightly", shard="0/1")
    assert run.exit_code == EXIT_OK, run.errors
    totals = json.loads((out / report_name(run.shard)).read_text())["totals"]
    during = seen["during"]
    assert during["aep_export_run_status"] == {(("status", "running"),): 1} and during["aep_export_run_finished"] == {(): 0}
    assert "aep_export_run_exit_code" not in during  # no exit code while running
    # the last push: the outcome, and the same figures as the report and the fake
    assert final["aep_export_run_status"] == {(("status", "ok"),): 1} and final["aep_export_run_finished"] == {(): 1}
    assert final["aep_export_run_exit_code"] == {(): EXIT_OK}
    files = final["aep_export_files_total"]
    assert files[(("result", "downloaded"),)] == totals["files_downloaded"] == len(fp.expected_files())
    assert final["aep_export_bytes_total"][(("result", "downloaded"),)] == totals["bytes"]
    assert final["aep_export_retries_total"] == {(): totals["retries"]}
    assert final["aep_export_hooks_total"] == {(("event", "batch_complete"), ("outcome", "ok")): 1}
    assert final["aep_export_info"] == {(("version", _version()),): 1}  # its shard label is the group's (left out here)
    downloads = sum(v for labels, v in final["aep_export_requests_total"].items() if ("endpoint", "download") in labels)
    assert downloads == fp.stats.requests["export.download"]


def _version() -> str:
    import engine

    return engine.__version__


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_prometheus_client_is_imported_only_when_metrics_are_asked_for(tmp_path: Path, threaded_fake) -> None:
    """`--help` and a run without metrics do not pay for prometheus_client; --metrics-push does (and
    a Pushgateway that does not answer costs a warning, not the run)."""
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=2, rows=40, seed=2102))

    def run(*args: str, out: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / f"{out}.toml"
        config.write_text(toml_config(fp, tmp_path / out))
        return subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "run", "-c", str(config), *args],
                              capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=120)

    helped = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "run", "--help"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert helped.returncode == 0 and "--metrics-addr" in helped.stdout and "--on-batch-complete" in helped.stdout
    assert "prometheus_client" not in _imported(helped.stderr)
    plain = run(out="plain")
    assert plain.returncode == EXIT_OK, plain.stderr[-3000:]
    assert "engine.exporter" in _imported(plain.stderr) and "prometheus_client" not in _imported(plain.stderr)
    pushed = run("--metrics-push", f"http://127.0.0.1:{free_port()}", out="pushed")  # nothing listens there
    assert pushed.returncode == EXIT_OK, pushed.stderr[-3000:]
    assert "prometheus_client" in _imported(pushed.stderr) and "metrics_push_failed" in pushed.stderr


def test_a_metrics_address_that_cannot_be_served_stops_before_anything(tmp_path: Path, threaded_fake) -> None:
    import socket

    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=2, rows=40, seed=2103))
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, tmp_path / "out"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = run_cli("run", "-c", str(config), "--metrics-addr", f"127.0.0.1:{port}", cwd=tmp_path)
    assert p.returncode == 2 and f"metrics.addr 127.0.0.1:{port}: cannot serve there" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "out" / "_report.json").exists() and fp.stats.requests["export.download"] == 0
