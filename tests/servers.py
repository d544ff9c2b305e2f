"""What the tests' loopback servers (moto, Azurite, Prometheus) share: a free port, starting a
server on one until it answers (another port if it was taken), and stopping a server with
everything it started (each runs in a process group of its own)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Self

START_TRIES = 5  # a port taken between probe and bind: try another


def free_port() -> int:
    """A port free on 127.0.0.1 now (a server may still lose it to another: callers retry)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """A server process, quiet, in a process group of its own (stop_process_group stops all of it)."""
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=None if env is None else dict(env), start_new_session=True)


def start_on_free_port(launch: Callable[[int], subprocess.Popen], probe: Callable[[int], str], timeout: float,
                       what: str) -> tuple[subprocess.Popen, int]:
    """(the process, its port): `launch(port)` on a free port until the URL `probe(port)` answers;
    a server that exits or never answers (its port was taken) is stopped and another port tried."""
    for _ in range(START_TRIES):
        port = free_port()
        proc = launch(port)
        if answers(proc, probe(port), timeout):
            return proc, port
        stop_process_group(proc)
    raise RuntimeError(f"{what} did not start")


def answers(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    """True once `url` gets any HTTP answer (an error status too: an unsigned request may be
    refused), False when the process exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.1)
    return False


def stop_process_group(proc: subprocess.Popen | None) -> None:
    """SIGTERM the server's process group, SIGKILL it after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class LoopbackServer:
    """A server process the tests start (`start`, in subclasses) and stop, also as a context manager."""

    proc: subprocess.Popen | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.proc = None

    def close(self) -> None:
        """Stop it and remove what it kept (a subclass's data folder)."""
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
