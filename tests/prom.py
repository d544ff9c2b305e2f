"""Real Prometheus servers for the metrics tests (issue #21): the Debian packages `prometheus` and
`prometheus-pushgateway` (.ci/run installs them), started on loopback free ports.

Missing binaries skip the tests on a developer's machine, and fail them in CI (CI=true): CI
installs them, so missing there is a broken CI, not a reason to skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import missing
from servers import free_port

READY_WITHIN_S = 60.0  # a loaded CI machine starts Prometheus slowly; a hung one fails here


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (apt-get install -y prometheus prometheus-pushgateway; .ci/run does)")
    return str(path)


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def wait_until(check: Callable[[], Any], what: str, within: float = READY_WITHIN_S) -> Any:
    """Poll an outside server until `check` returns something true (there is no event to await on
    another process's readiness); fails with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError, KeyError) as exc:  # not listening yet, not ready yet
            last = exc
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {within:g} s (last: {last!r})")


@contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector result: [{"metric": {labels}, "value": [t, "v"]}, …]."""
        body = json.loads(get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """{(label values…): value} of an instant query."""
        return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in self.query(expr)}

    def value(self, expr: str) -> float | None:
        found = self.query(expr)
        assert len(found) <= 1, found
        return float(found[0]["value"][1]) if found else None


@contextmanager
def prometheus(tmp: Path, target: str, interval: str = "200ms") -> Iterator[Prometheus]:
    """Prometheus scraping `target` (HOST:PORT) every `interval`, on a free loopback port."""
    exe = binary("prometheus")
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
                      f"scrape_configs:\n  - job_name: aep_export\n    static_configs:\n      - targets: ['{target}']\n")
    argv = [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]
    with _process(argv, tmp / "prometheus.log"):
        server = Prometheus(f"http://127.0.0.1:{port}")
        wait_until(lambda: get(f"{server.url}/-/ready"), "Prometheus ready")
        yield server


class Pushgateway:
    def __init__(self, url: str):
        self.url = url

    def groups(self) -> list[dict[str, Any]]:
        """/api/v1/metrics: every group pushed, with its labels and its metrics' last values."""
        body = json.loads(get(f"{self.url}/api/v1/metrics"))
        assert body["status"] == "success", body
        return list(body["data"])

    def samples(self, job: str, **grouping: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """{metric name: {sorted labels (the group's own left out): value}} of the group `job` + `grouping`."""
        found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for group in self.groups():
            if group["labels"] != {"job": job, **grouping}:
                continue
            own = {*group["labels"], "instance"}
            for name, family in group.items():
                if isinstance(family, dict) and "metrics" in family:
                    for m in family["metrics"]:
                        labels = tuple(sorted((k, v) for k, v in m["labels"].items() if k not in own))
                        found.setdefault(name, {})[labels] = float(m["value"])
        return found


@contextmanager
def pushgateway(tmp: Path) -> Iterator[Pushgateway]:
    exe = binary("prometheus-pushgateway")
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    argv = [exe, f"--web.listen-address=127.0.0.1:{port}", f"--persistence.file={tmp / 'pushgateway.store'}"]
    with _process(argv, tmp / "pushgateway.log"):
        server = Pushgateway(f"http://127.0.0.1:{port}")
        wait_until(lambda: get(f"{server.url}/-/ready"), "Pushgateway ready")
        yield server
