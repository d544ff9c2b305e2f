"""Prometheus metrics of a run (issue #21): served on metrics.addr while the run lasts, pushed to a
Pushgateway (metrics.push) every push_interval and once more with the run's outcome.

Read, not fed: one collector reads the figures the engine already keeps, when Prometheus asks
(the progress counters, the scheduler's files and connections, the retry policy's retries and
pauses, the run's batches and outcome). The only figures counted for the metrics alone are HTTP
exchanges, told by the session's trace (platform/traffic.py). So nothing is added to the per-chunk
path, and a run without metrics does not even import prometheus_client (the CLI and the exporter
import this module only when a metrics setting is given).

Labels are bounded: result, status, endpoint, code class, hook event and outcome, each from a fixed
set. No file name, and no dataset or batch id: a run selects datasets by pattern or creates them
(audiences), and every id ever seen would stay a series in Prometheus (and in the Pushgateway)
forever; per-dataset figures are in report.json.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector, push_to_gateway, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.registry import Collector
from yarl import URL

from . import __version__
from .config import MetricsSettings
from .config_ops import split_host_port
from .errors import ConfigError
from .masking import register_secret
from .model import Counters
from .output.report import RunOutcome

if TYPE_CHECKING:
    from .retry import RetryPolicy
    from .transfer.scheduler import Scheduler

log = structlog.get_logger("aep_export.metrics")

PREFIX = "aep_export_"
FINISHED = ("ok", "failed", "cancelled", "replaced")  # a batch's final statuses
PUSH_TIMEOUT = 10.0  # seconds: a Pushgateway that does not answer costs a warning, never the run


@dataclass(frozen=True)
class Gateway:
    """metrics.push as pushed to: the URL without its user:password (what is logged), which go in
    an Authorization header instead (urllib would take them for part of the host name)."""

    url: str
    handler: Callable[..., Callable[[], None]]

    @classmethod
    def of(cls, push: str) -> Gateway:
        typed = URL(push)
        if typed.user is None and typed.password is None:
            return cls(push, default_handler)
        register_secret(typed.password)  # masked wherever an error quotes it
        return cls(str(typed.with_user(None)), functools.partial(_basic_auth, typed.user or "", typed.password or ""))


def _basic_auth(username: str, password: str, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
    return basic_auth_handler(url, method, timeout, headers, data, username, password)


@dataclass
class Sources:
    """Where the figures are read from; the scheduler and the policy exist once the run starts."""

    counters: Counters
    run: RunOutcome
    scheduler: Scheduler[Any] | None = None
    policy: RetryPolicy | None = None
    finished: bool = False  # the report is written: the run's status and exit code are final


class RunMetrics(Collector):
    """The run's registry and its one collector; also the session's exchange observer."""

    def __init__(self, settings: MetricsSettings, sources: Sources):
        self.settings = settings
        self.sources = sources
        self.exchanges: Counter[tuple[str, str]] = Counter()  # (endpoint, code class), on the event loop
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # the process's memory, CPU and open files
        self.started_at = time.time()
        self._server: Any = None
        self._ended: float | None = None
        self._pusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._push_lock = threading.Lock()  # the periodic push and the last one never interleave
        self._gateway = Gateway.of(settings.push) if settings.push is not None else None

    # -- fed: the session's trace (platform/traffic.py) -------------------------------------------

    def exchange(self, endpoint: str, code_class: str) -> None:
        self.exchanges[(endpoint, code_class)] += 1

    # -- read: when scraped or pushed --------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._files_and_bytes(self.sources.counters)
        yield from self._requests()
        yield from self._pool()
        yield from self._batches(self.sources.run)
        yield from self._outcome(self.sources.run)

    def _files_and_bytes(self, c: Counters) -> Iterator[Metric]:
        files = CounterMetricFamily(PREFIX + "files", "Files finished, by result (downloaded, reused: verified by an earlier run, "
                                                      "failed)", labels=["result"])
        size = CounterMetricFamily(PREFIX + "bytes", "Bytes of the files finished, by result (failed: their listed sizes)",
                                   labels=["result"])
        for result, n_files, n_bytes in (("downloaded", c.files_done - c.files_reused, c.bytes_done - c.bytes_reused),
                                         ("reused", c.files_reused, c.bytes_reused), ("failed", c.files_failed, c.bytes_failed)):
            files.add_metric([result], n_files)
            size.add_metric([result], n_bytes)
        yield files
        yield size
        yield CounterMetricFamily(PREFIX + "files_discovered", "Files listed so far", value=c.files_total)
        yield CounterMetricFamily(PREFIX + "bytes_discovered", "Listed sizes of the files listed so far", value=c.bytes_total)
        yield CounterMetricFamily(PREFIX + "bytes_received", "Body bytes received from the platform (bytes sent again included)",
                                  value=c.bytes_fetched)
        yield CounterMetricFamily(PREFIX + "file_restarts", "Files started over (changed on the server, corrupted in transit)",
                                  value=c.restarts)

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(PREFIX + "requests", "HTTP exchanges by endpoint and status class (429 apart from 4xx; "
                                                            "error: no answer)", labels=["endpoint", "code_class"])
        for (endpoint, code_class), n in sorted(dict(self.exchanges).items()):
            requests.add_metric([endpoint, code_class], n)
        yield requests
        policy = self.sources.policy
        yield CounterMetricFamily(PREFIX + "retries", "Requests retried", value=policy.retries if policy else 0)
        yield CounterMetricFamily(PREFIX + "throttled", "Throttling answers (429, 503) that paused the whole pool",
                                  value=policy.pacer.throttled_count if policy else 0)
        yield CounterMetricFamily(PREFIX + "paused_seconds", "Seconds the pool was paused by throttling (Retry-After)",
                                  value=policy.pacer.paused_s if policy else 0.0)

    def _pool(self) -> Iterator[Metric]:
        s = self.sources.scheduler
        yield GaugeMetricFamily(PREFIX + "files_in_flight", "Files being fetched or verified", value=s.files_in_flight if s else 0)
        yield GaugeMetricFamily(PREFIX + "connections_in_flight", "Requests on the wire (a connection each)",
                                value=s.connections.in_use if s else 0)
        # The cap in use: export.concurrency, or less while adaptive concurrency holds it down
        yield GaugeMetricFamily(PREFIX + "connections_allowed", "Connections the pool may use now",
                                value=s.allowed_connections() if s else 0)

    def _batches(self, run: RunOutcome) -> Iterator[Metric]:
        batches = CounterMetricFamily(PREFIX + "batches_finished", "Batches finished, by status", labels=["status"])
        hooks = CounterMetricFamily(PREFIX + "hooks", "Completion hooks run, by event and outcome", labels=["event", "outcome"])
        done = Counter(b.status for b in run.batches() if b.status in FINISHED)
        ran = Counter((b.hook["event"], b.hook["outcome"]) for b in run.batches() if b.hook)
        for status in FINISHED:
            batches.add_metric([status], done[status])
        for (event, outcome), n in sorted(ran.items()):
            hooks.add_metric([event, outcome], n)
        yield batches
        yield hooks

    def _outcome(self, run: RunOutcome) -> Iterator[Metric]:
        shard = run.shard or "all"
        info = GaugeMetricFamily(PREFIX + "info", "The exporting process: version and shard", labels=["version", "shard"])
        info.add_metric([__version__, shard], 1)
        yield info
        status = GaugeMetricFamily(PREFIX + "run_status", "1 for the run's status (running, ok, failed, interrupted, "
                                                          "credentials, unreachable, …)", labels=["status"])
        finished = self.sources.finished
        status.add_metric([run.status if finished else "running"], 1)
        yield status
        yield GaugeMetricFamily(PREFIX + "run_finished", "1 once the run has ended (its exit code is then set)", value=int(finished))
        if finished:
            yield GaugeMetricFamily(PREFIX + "run_exit_code", "The run's exit code (README: exit codes)", value=run.exit_code)
        yield GaugeMetricFamily(PREFIX + "run_start_time_seconds", "When the run started (Unix time)", value=self.started_at)
        if finished and self._ended is None:
            self._ended = time.monotonic()
        yield GaugeMetricFamily(PREFIX + "run_duration_seconds", "Seconds since the run started (to its end, once ended)",
                                value=(self._ended or time.monotonic()) - run.started)

    # -- serving and pushing -----------------------------------------------------------------------

    def start(self) -> None:
        """Serve /metrics (metrics.addr) and push every push_interval (metrics.push), each in a thread
        of its own: whatever the run's event loop is doing, and until close()."""
        if self.settings.addr is not None:
            host, port = split_host_port(self.settings.addr)
            try:
                self._server, _thread = start_http_server(port, host, registry=self.registry)
            except OSError as exc:  # the port is taken, the address is not this host's: nothing attempted (exit 2)
                raise ConfigError(f"metrics.addr {self.settings.addr}: cannot serve there: {exc.strerror or exc}") from None
            log.info("metrics_serving", url=f"http://{self.settings.addr}/metrics")
        if self.settings.push is not None:
            self._pusher = threading.Thread(target=self._push_periodically, name="metrics-push", daemon=True)
            self._pusher.start()

    def push(self) -> None:
        """One push (blocking: run in a thread); a failure is a warning."""
        gateway = self._gateway
        if gateway is None:
            return
        key = {"shard": self.sources.run.shard or "all"}
        with self._push_lock:
            try:
                push_to_gateway(gateway.url, job=self.settings.job, registry=self.registry, grouping_key=key,
                                timeout=PUSH_TIMEOUT, handler=gateway.handler)
            except OSError as exc:  # refused, timed out, an HTTP error (urllib's are OSErrors)
                log.warning("metrics_push_failed", gateway=gateway.url, error=f"{type(exc).__name__}: {exc}")

    def _push_periodically(self) -> None:
        while not self._stop.wait(self.settings.push_interval):
            self.push()

    def close(self) -> None:
        """The last push (the run's outcome), then the server stops. Blocking."""
        self.sources.finished = self.sources.run.status != "running"  # else the run never started (a busy folder)
        self._stop.set()
        if self._pusher is not None:
            self._pusher.join()
        self.push()
        if self._server is not None:  # in the background: shutdown() waits out the server's 0.5 s poll
            threading.Thread(target=_stop_serving, args=(self._server,), name="metrics-stop", daemon=True).start()


def _stop_serving(server: Any) -> None:
    server.shutdown()
    server.server_close()
