"""What the tests' loopback servers (moto, Azurite, Prometheus) share: a free port, and stopping a
server with everything it started (each runs in a process group of its own)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess


def free_port() -> int:
    """A port free on 127.0.0.1 now (a server may still lose it to another: callers retry)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
