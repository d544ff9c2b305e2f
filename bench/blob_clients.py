"""`python -m bench.blob_clients [--mib 128] [--reps 3]`: the Azure Blob clients considered for the
DLZ source (issue #23), side by side.

Each candidate downloads the same blobs from Azurite (started here, loopback) with a container
SAS, the way the download model fetches: ranged GETs of 8 MiB, 8 in flight, each streamed into
its file at its offset; in its own measured process (wall, CPU of the process tree, peak RSS),
alternating within each repetition, medians reported. It also says what of the download model
each exposes (a raw ranged GET, the response's ETag and Content-MD5 per request, If-Range).
Azurite is Node: it bounds the throughput, so client CPU per GiB is the figure to compare. Needs
the candidates installed next to the engine (`pip install azure-storage-blob obstore`) and
`npm install -g azurite`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .harness import PYTHON, REPO, run_measured
from .runner import log

RANGE = 8 << 20
CONCURRENCY = 8
BLOBS = 8

_COMMON = """
import asyncio, os, sys
endpoint, container, sas, out, blobs, size = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
RANGE, CONC = {range}, {conc}
jobs = [(f"b{{i}}.bin", start, min(start + RANGE, size)) for i in range(blobs) for start in range(0, size, RANGE)]
fds = {{f"b{{i}}.bin": os.open(os.path.join(out, f"b{{i}}.bin"), os.O_WRONLY | os.O_CREAT, 0o644) for i in range(blobs)}}
"""

CANDIDATES = {
    # the engine's way: aiohttp, Range header, the body streamed by iter_chunks (what engine/transfer/fetcher.py does)
    "aiohttp": """
import aiohttp
async def main():
    sem = asyncio.Semaphore(CONC)
    async with aiohttp.ClientSession(read_bufsize=256 << 10, connector=aiohttp.TCPConnector(limit=CONC)) as http:
        async def get(name, start, end):
            async with sem, http.get(f"{endpoint}/{container}/{name}?{sas}", headers={"Range": f"bytes={start}-{end - 1}"},
                                     auto_decompress=False) as r:
                assert r.status == 206 and r.headers["ETag"]
                pos = start
                async for chunk, _ in r.content.iter_chunks():
                    os.pwrite(fds[name], chunk, pos); pos += len(chunk)
        await asyncio.gather(*(get(*j) for j in jobs))
asyncio.run(main())
""",
    # Microsoft's SDK, async (aiohttp underneath): one BlobClient per blob, download_blob(offset, length) per range
    "azure-storage-blob": """
from azure.storage.blob.aio import ContainerClient
async def main():
    sem = asyncio.Semaphore(CONC)
    async with ContainerClient.from_container_url(f"{endpoint}/{container}?{sas}") as cc:
        async def get(name, start, end):
            async with sem:
                d = await cc.get_blob_client(name).download_blob(offset=start, length=end - start, max_concurrency=1)
                assert d.properties.etag
                pos = start
                async for chunk in d.chunks():
                    os.pwrite(fds[name], chunk, pos); pos += len(chunk)
        await asyncio.gather(*(get(*j) for j in jobs))
asyncio.run(main())
""",
    # obstore (Rust object_store): get_async with a range, its stream of buffers
    "obstore": """
import obstore
from obstore.store import AzureStore
async def main():
    account = endpoint.rstrip("/").rsplit("/", 1)[-1]
    store = AzureStore(container_name=container, account_name=account, endpoint=endpoint, sas_key=sas,
                       client_options={"allow_http": True})
    sem = asyncio.Semaphore(CONC)
    async def get(name, start, end):
        async with sem:
            r = await obstore.get_async(store, name, options={"range": (start, end)})
            assert r.meta["e_tag"]
            pos = start
            async for chunk in r.stream(min_chunk_size=256 << 10):
                b = bytes(chunk); os.pwrite(fds[name], b, pos); pos += len(b)
    await asyncio.gather(*(get(*j) for j in jobs))
asyncio.run(main())
""",
}

# The engine itself: its download model (engine/transfer: Downloader, Fetcher, Scheduler) over
# aiohttp, with what it does per byte besides (SHA-256 in order, fsync, rename) and per file
# (fsync off here: the others do not sync); the SAS added by a FileTask signer.
ENGINE = """
import anyio
from engine.config import Settings
from engine.model import BatchRef, Counters, FileTask
from engine.output.opener import open_destination
from engine.platform.auth import TokenProvider
from engine.platform.client import PlatformClient, make_session
from engine.retry import RetryPolicy
from engine.transfer.download import Downloader
from engine.transfer.scheduler import Scheduler
async def main():
    settings = Settings.model_validate({"platform": {"url": "http://127.0.0.1:9", "org_id": "x@AdobeOrg"}, "datasets": ["d" * 24],
        "auth": {"client_id": "bench", "access_token": "bench-token"},
        "export": {"out_dir": out, "concurrency": CONC, "fsync": False}})  # the others do not fsync either
    ex = settings.export
    policy, counters, scheduler = RetryPolicy.for_export(ex), Counters(), Scheduler(ex)
    async def sign(url):
        return f"{url}?{sas}"
    batch = BatchRef("d" * 24, "run")
    tasks = [FileTask(batch, "exportTime=1", f"b{i}.bin", f"{endpoint}/{container}/b{i}.bin", size,
                      f"{'d' * 24}/run/exportTime=1/b{i}.bin", signer=sign) for i in range(blobs)]
    async with make_session(settings) as session, open_destination(ex, settings.store, scheduler.disk) as dest:
        client = PlatformClient(settings, session, TokenProvider(settings.auth, session, policy), policy)
        downloader = Downloader(client, ex, dest, policy, counters, scheduler)
        results = []
        async with anyio.create_task_group() as tg:
            for t in tasks:
                tg.start_soon(lambda t=t: _fetch(downloader, t, results))
    assert all(r.ok for r in results) and len(results) == blobs, [r.error for r in results]
async def _fetch(downloader, task, results):
    results.append(await downloader.fetch(task))
anyio.run(main)
"""

# What the download model needs of a Blob client (engine/transfer/fetcher.py), per candidate.
FITS = {
    "aiohttp": {"raw ranged GET": True, "ETag/Content-MD5 of each response": True, "If-Range on resume": True,
                "one session, retry policy and origin check with the gateway's": True},
    "azure-storage-blob": {"raw ranged GET": "download_blob(offset, length)", "ETag/Content-MD5 of each response": "properties",
                           "If-Range on resume": "if_match (412, not a 200)",
                           "one session, retry policy and origin check with the gateway's": "its own pipeline and retries"},
    "obstore": {"raw ranged GET": "get(range)", "ETag/Content-MD5 of each response": "e_tag only",
                "If-Range on resume": "if_match (an error)",
                "one session, retry policy and origin check with the gateway's": "its own client (Rust)"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.blob_clients", description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", type=Path)
    p.add_argument("--with-engine", action="store_true", help="also the engine's own download model (its checks included)")
    args = p.parse_args(argv)
    candidates = {**CANDIDATES, **({"engine": ENGINE} if args.with_engine else {})}
    sys.path.insert(0, str(REPO / "tests"))
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
    from azurite import AzuriteServer  # the server the tests use

    work = Path(tempfile.mkdtemp(prefix="aep-bloblib-"))
    size = (args.mib << 20) // BLOBS
    samples: dict[str, list[dict]] = {name: [] for name in candidates}
    with AzuriteServer() as azurite:
        info = azurite  # host, port, account, key, blob_endpoint, connection_string
        service = BlobServiceClient.from_connection_string(info.connection_string)
        service.create_container("bench")
        for i in range(BLOBS):
            service.get_blob_client("bench", f"b{i}.bin").upload_blob(os.urandom(size), overwrite=True)
        sas = generate_container_sas(info.account, "bench", account_key=info.key, expiry=datetime.now(UTC) + timedelta(hours=2),
                                     permission=ContainerSasPermissions(read=True, list=True))
        for rep in range(args.reps):
            for name, code in candidates.items():
                script, out = work / f"candidate_{name}.py", work / f"out-{name}-{rep}"
                script.write_text(_COMMON.format(range=RANGE, conc=CONCURRENCY) + code)
                out.mkdir()
                r = run_measured([PYTHON, str(script), info.blob_endpoint, "bench", sas, str(out), str(BLOBS), str(size)],
                                 timeout=600, log_dir=work / f"log-{name}-{rep}")
                files = [out / f"b{i}.bin" for i in range(BLOBS)] if name != "engine" else \
                    [out / ("d" * 24) / "run" / "exportTime=1" / f"b{i}.bin" for i in range(BLOBS)]
                ok = r.rc == 0 and all(f.is_file() and f.stat().st_size == size for f in files)
                samples[name].append({"wall_s": r.wall_s, "cpu_s": r.cpu_s, "rss": r.peak_rss_mib, "ok": ok})
                log(f"  rep {rep + 1} {name:<18} {args.mib * 1.048576 / r.wall_s:7.1f} MB/s cpu {r.cpu_s:5.2f}s "
                    f"rss {r.peak_rss_mib:6.1f} MiB {'ok' if ok else 'FAILED: ' + r.stderr_tail[-300:]}")
                shutil.rmtree(out, ignore_errors=True)
    rows = {}
    for name, runs in samples.items():
        wall = statistics.median(s["wall_s"] for s in runs)
        rows[name] = {"mb_s": round(args.mib * 1.048576 / wall, 1),
                      "cpu_s_per_gib": round(statistics.median(s["cpu_s"] for s in runs) / (args.mib / 1024), 2),
                      "peak_rss_mib": round(statistics.median(s["rss"] for s in runs), 1),
                      "ok": all(s["ok"] for s in runs), "fits": FITS.get(name, "the download model itself")}
    print(f"\n{args.mib} MiB in {BLOBS} blobs, {RANGE >> 20} MiB ranges x {CONCURRENCY}, {args.reps} reps, medians "
          "(Azurite bounds MB/s)")
    print(f"{'library':<20} {'MB/s':>7} {'CPU s/GiB':>10} {'RSS MiB':>8}")
    for name, row in rows.items():
        print(f"{name:<20} {row['mb_s']:>7} {row['cpu_s_per_gib']:>10} {row['peak_rss_mib']:>8}")
    if args.json:
        args.json.write_text(json.dumps({"mib": args.mib, "reps": args.reps, "results": rows}, indent=2))
    return 0 if all(r["ok"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
