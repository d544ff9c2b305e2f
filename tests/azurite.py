"""A real Azure Blob server for the tests (and bench/): Azurite (npm package `azurite`) on loopback.

`AzuriteServer` starts `azurite-blob` on a free 127.0.0.1 port with its data in a fresh temporary
folder, in its own process group, and stops exactly that group. It checks Shared Key signatures
like Azure (a wrong key is refused with 403), speaks the account in the path
(http://127.0.0.1:PORT/devstoreaccount1), and, with telemetry off, sends nothing anywhere else.
Its debug log records every request: `requests(...)` counts them (Put Block calls, say).

What a test or another fixture needs: `host`, `port`, `account`, `key`, `blob_endpoint`,
`connection_string`, `env()` (the standard AZURE_STORAGE_* variables), and a plain
azure-storage-blob client (`.service`) to read the container back independently of the engine.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from servers import LoopbackServer, spawn, start_on_free_port

ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public, the same in every Azurite)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="



def azurite_command() -> str | None:
    """`azurite-blob` on PATH, or in a local npm prefix (node_modules/.bin)."""
    found = shutil.which("azurite-blob")
    if found:
        return found
    local = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else None


class AzuriteServer(LoopbackServer):
    def __init__(self) -> None:
        self.proc = None
        self.host, self.port = "127.0.0.1", 0
        self.account, self.key = ACCOUNT, KEY
        self.folder = ""
        self._service: Any = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.blob_endpoint};")

    @property
    def debug_log(self) -> Path:
        return Path(self.folder) / "debug.log"

    def start(self) -> AzuriteServer:
        command = azurite_command()
        if command is None:
            raise RuntimeError("azurite-blob is not installed (npm install -g azurite; .ci/run does it)")
        self.folder = tempfile.mkdtemp(prefix="azurite-")
        self.proc, self.port = start_on_free_port(
            lambda port: spawn([command, "--blobHost", self.host, "--blobPort", str(port), "--location", self.folder,
                                "--debug", str(self.debug_log), "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                                "--silent"]),
            lambda port: f"http://{self.host}:{port}/{self.account}?comp=list", 60, "azurite")  # unsigned: refused, but up
        return self

    def close(self) -> None:
        self.stop()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def env(self, **extra: str) -> dict[str, str]:
        """The connection string the standard way (AZURE_STORAGE_CONNECTION_STRING), for a subprocess."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string, **extra}

    def requests(self, method: str, pattern: str = "") -> int:
        """Requests Azurite served so far with this method whose URL matches the regex (e.g. PUT, comp=block&)."""
        if not self.debug_log.exists():
            return 0
        url = re.compile(pattern)
        count = 0
        with open(self.debug_log, errors="replace") as log:
            for line in log:
                if f"RequestMethod={method} " in line:
                    target = line.partition("RequestURL=")[2].partition(" ")[0]
                    count += bool(url.search(target))
        return count

    # -- reading the container back (azure-storage-blob's sync client, not the engine's code) ----

    @property
    def service(self) -> Any:
        if self._service is None:
            from azure.storage.blob import BlobServiceClient

            self._service = BlobServiceClient.from_connection_string(self.connection_string)
        return self._service

    def create_container(self, name: str) -> None:
        self.service.create_container(name)

    def blobs(self, container: str, prefix: str = "") -> dict[str, int]:
        """Every committed blob under the prefix: name -> size."""
        client = self.service.get_container_client(container)
        return {b.name: b.size for b in client.list_blobs(name_starts_with=prefix or None)}

    def uncommitted(self, container: str, prefix: str = "") -> dict[str, list[tuple[str, int]]]:
        """Blobs with uncommitted blocks only: name -> [(block id, size)]."""
        client = self.service.get_container_client(container)
        every = {b.name for b in client.list_blobs(name_starts_with=prefix or None, include=["uncommittedblobs"])}
        found = {}
        from azure.core.exceptions import ResourceNotFoundError

        for name in sorted(every - set(self.blobs(container, prefix))):
            try:
                _, blocks = client.get_blob_client(name).get_block_list("uncommitted")
            except ResourceNotFoundError:  # committed and deleted (a staging blob) since the listing
                continue
            found[name] = [(b.id, b.size) for b in blocks]
        return found

    def read(self, container: str, name: str) -> bytes:
        return self.service.get_blob_client(container, name).download_blob().readall()

    def metadata(self, container: str, name: str) -> dict[str, str]:
        return self.service.get_blob_client(container, name).get_blob_properties().metadata
