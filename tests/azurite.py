"""A real Azure Blob server for the tests: Azurite (npm package `azurite`, installed by .ci/run)
on loopback.

`Azurite` starts `azurite-blob` on a free 127.0.0.1 port with its data in a temporary folder,
in its own process group, and stops exactly that group. It gives what a client needs: host,
port, the well-known development account and key, a connection string and the blob endpoint.
Requests are authenticated (Shared Key or SAS) as Azure does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

# Azurite's documented development account (https://learn.microsoft.com/azure/storage/common/storage-use-azurite)
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AzuriteInfo:
    host: str
    port: int
    account: str
    key: str

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.blob_endpoint};")


class Azurite:
    """`with Azurite() as az:` a running azurite-blob; `az.info` says where."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.location = ""
        self.info = AzuriteInfo("127.0.0.1", 0, ACCOUNT, KEY)

    def start(self) -> Azurite:
        exe = shutil.which("azurite-blob")
        if exe is None:
            raise RuntimeError("azurite-blob is not installed: npm install -g azurite (.ci/run does)")
        self.location = tempfile.mkdtemp(prefix="azurite-")
        for _ in range(5):  # a port taken between probe and bind: try another
            port = _free_port()
            self.proc = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", self.location,
                                          "--loose", "--skipApiVersionCheck", "--silent"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
            self.info = AzuriteInfo("127.0.0.1", port, ACCOUNT, KEY)
            if self._wait_up(60):
                return self
            self._kill()
        raise RuntimeError("azurite-blob did not start")

    def _wait_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"{self.info.blob_endpoint}?comp=list", timeout=2)
            except urllib.error.HTTPError:
                return True  # it answers (an unsigned request is refused): up
            except OSError:
                time.sleep(0.1)
                continue
            return True
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
