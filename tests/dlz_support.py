"""Helpers of the DLZ tests: the fake platform's export runs written into Azurite (a real Blob
server), the SAS signed by Microsoft's SDK (independently of the engine), and the files a DLZ
entry must end up with."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from engine.config import Settings
from engine.fake import FakeConfig, FakePlatform
from engine.fake.data import ExpectedFile

_containers = itertools.count()


class AzuriteBlobs:
    """The fake's BlobStore in Azurite: one fresh container per fake (engine/fake/blob.py)."""

    def __init__(self, info: Any):
        self.info = info
        self.account = info.account
        self.container = f"dlz-destination-{next(_containers)}"
        self.service = BlobServiceClient.from_connection_string(info.connection_string)
        self.service.create_container(self.container)

    async def put(self, name: str, path: Path) -> None:
        data = await asyncio.to_thread(path.read_bytes)
        await self.replace(name, data)

    async def replace(self, name: str, data: bytes) -> None:
        client = self.service.get_blob_client(self.container, name)
        await asyncio.to_thread(client.upload_blob, data, overwrite=True)

    def container_url(self) -> str:
        return f"{self.info.blob_endpoint}/{self.container}"

    def sas(self, ttl_s: float) -> str:
        now = datetime.now(UTC)
        return generate_container_sas(self.account, self.container, account_key=self.info.key,
                                      permission=ContainerSasPermissions(read=True, list=True),
                                      start=now - timedelta(minutes=5) + min(timedelta(seconds=ttl_s), timedelta(0)) * 2,
                                      expiry=now + timedelta(seconds=ttl_s))


def dlz_fake(cfg: FakeConfig, azurite: Any, data_root: Path) -> FakePlatform:
    """A fake platform whose dataset exports land in Azurite (not yet started: `async with`)."""
    if cfg.data_dir is None:
        from engine.fake.data import spec_cache_key

        cfg.data_dir = data_root / spec_cache_key(cfg.seed, cfg.datasets)
    return FakePlatform(cfg, host="127.0.0.1", port=0, blobs=AzuriteBlobs(azurite))


def with_via(settings: Settings, via: dict[str, str], **entry: Any) -> Settings:
    """The settings with `via` (and other per-entry keys) set on the entries of the given dataset ids."""
    data = settings.model_dump()
    data["auth"]["client_secret"] = settings.auth.client_secret.get_secret_value()
    data["auth"]["access_token"] = settings.auth.access_token.get_secret_value()
    for ds in data["datasets"]:
        if ds["id"] in via:
            ds.update({"via": via[ds["id"]], **entry})
    return Settings.model_validate(data)


def dlz_expected(fp: FakePlatform, dataset_id: str) -> list[ExpectedFile]:
    """The files of the dataset's newest successful DLZ run, where a correct export puts them:
    {out}/{dataset}/{run id}/exportTime=…/{part}."""
    run = [r for r in fp.dlz_runs(dataset_id) if not r.failed][-1]
    out = []
    for name, size, rows in run.files:
        folder, _, part = name.rpartition("/")
        out.append(ExpectedFile(dataset_id, run.id, folder.rsplit("/", 1)[-1], part, size,
                                _blob_sha256(fp, name), rows, Path(name)))
    return out


def _blob_sha256(fp: FakePlatform, name: str) -> str:
    blobs = fp.blobs
    if isinstance(blobs, AzuriteBlobs):
        data = blobs.service.get_blob_client(blobs.container, name).download_blob().readall()
    else:
        data = blobs._blobs[name].data or blobs._blobs[name].path.read_bytes()  # type: ignore[attr-defined]
    return hashlib.sha256(data).hexdigest()


class PacedProxy:
    """A TCP proxy in front of Azurite that paces what it sends back (bytes/s per connection), so
    that a kill lands mid-download; requests pass unchanged. Runs on its own loop in a thread."""

    def __init__(self, port: int, rate: float):
        import threading

        self.target, self.rate = port, rate
        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def _run(self, ready: Any) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, paced: bool) -> None:
            try:
                while data := await r.read(16 << 10):
                    w.write(data)
                    await w.drain()
                    if paced:
                        await asyncio.sleep(len(data) / self.rate)
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(client_r, up_w, False), pipe(up_r, client_w, True))

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class ProxiedAzuriteBlobs(AzuriteBlobs):
    """Azurite, reached by the engine through a PacedProxy (the fake uploads directly)."""

    def __init__(self, info: Any, proxy: PacedProxy):
        super().__init__(info)
        self.proxy = proxy

    def container_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/{self.account}/{self.container}"
