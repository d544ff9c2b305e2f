"""`python -m bench.s3_libraries [--mib 256] [--reps 3]`: the S3 client libraries we considered, side by side.

Each candidate uploads the same local file to a moto server (started here, loopback) as a
multipart upload with 8 MiB parts, 8 parts at once, in its own measured process (wall, CPU of the
process tree, peak RSS); alternating within each repetition, medians reported. It also says which
of the operations resume across pods needs each library exposes. Not part of the default
benchmark: it needs the candidates installed next to the engine
(`pip install 'moto[server]' obstore aiobotocore boto3`). moto is Python: it bounds the
throughput, so the client CPU per GiB is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from .harness import PYTHON, REPO, run_measured
from .runner import log

PART = 8 << 20
CONCURRENCY = 8

_COMMON = """
import os, sys
endpoint, path, key = sys.argv[1], sys.argv[2], sys.argv[3]  # credentials: the AWS_* environment
PART, CONC = {part}, {conc}
"""

CANDIDATES = {
    # per part: UploadPart with x-amz-checksum-sha256 (what the engine does), 8 at once, bodies in memory
    "aiobotocore": """
import asyncio, base64, hashlib
from aiobotocore.session import get_session
from botocore.config import Config
async def main():
    cfg = Config(s3={"payload_signing_enabled": False}, max_pool_connections=CONC)
    async with get_session().create_client("s3", endpoint_url=endpoint, config=cfg) as s3:
        up = await s3.create_multipart_upload(Bucket="bench", Key=key, ChecksumAlgorithm="SHA256")
        size = os.path.getsize(path); sem = asyncio.Semaphore(CONC)
        async def part(n):
            async with sem:
                with open(path, "rb") as f:
                    f.seek(n * PART); body = f.read(PART)
                digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
                r = await s3.upload_part(Bucket="bench", Key=key, UploadId=up["UploadId"], PartNumber=n + 1,
                                         Body=body, ChecksumSHA256=digest)
                return {"PartNumber": n + 1, "ETag": r["ETag"], "ChecksumSHA256": digest}
        parts = await asyncio.gather(*(part(n) for n in range(-(-size // PART))))
        await s3.complete_multipart_upload(Bucket="bench", Key=key, UploadId=up["UploadId"],
                                           MultipartUpload={"Parts": parts})
asyncio.run(main())
""",
    # the same, each part streamed from the file as the engine streams its spool (less memory)
    "aiobotocore-stream": """
import asyncio, base64, hashlib, io
from aiobotocore.session import get_session
from botocore.config import Config
class Slice(io.RawIOBase):
    def __init__(self, start, length):
        super().__init__(); self.f = open(path, "rb"); self.start, self.length, self.pos = start, length, 0
    def readable(self): return True
    def seekable(self): return True
    def tell(self): return self.pos
    def seek(self, off, whence=0):
        self.pos = {0: 0, 1: self.pos, 2: self.length}[whence] + off; return self.pos
    def readinto(self, b):
        n = min(len(b), self.length - self.pos); self.f.seek(self.start + self.pos)
        data = self.f.read(n); b[:len(data)] = data; self.pos += len(data); return len(data)
async def main():
    cfg = Config(s3={"payload_signing_enabled": False}, max_pool_connections=CONC)
    async with get_session().create_client("s3", endpoint_url=endpoint, config=cfg) as s3:
        up = await s3.create_multipart_upload(Bucket="bench", Key=key, ChecksumAlgorithm="SHA256")
        size = os.path.getsize(path); sem = asyncio.Semaphore(CONC)
        async def part(n):
            async with sem:
                length = min(PART, size - n * PART)
                h = hashlib.sha256(); body = Slice(n * PART, length)
                for block in iter(lambda: body.read(1 << 20), b""):
                    h.update(block)
                body.seek(0); digest = base64.b64encode(h.digest()).decode()
                r = await s3.upload_part(Bucket="bench", Key=key, UploadId=up["UploadId"], PartNumber=n + 1,
                                         Body=body, ContentLength=length, ChecksumSHA256=digest)
                return {"PartNumber": n + 1, "ETag": r["ETag"], "ChecksumSHA256": digest}
        parts = await asyncio.gather(*(part(n) for n in range(-(-size // PART))))
        await s3.complete_multipart_upload(Bucket="bench", Key=key, UploadId=up["UploadId"],
                                           MultipartUpload={"Parts": parts})
asyncio.run(main())
""",
    # obstore's own multipart put (no per-part control: it cannot be resumed, see the table)
    "obstore": """
import obstore
from obstore.store import S3Store
store = S3Store("bench", endpoint=endpoint, region="us-east-1", client_options={"allow_http": True},
                checksum_algorithm="sha256", access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
obstore.put(store, key, open(path, "rb"), chunk_size=PART, max_concurrency=CONC)
""",
    # boto3's transfer manager (threads)
    "boto3": """
import boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url=endpoint)
s3.upload_file(path, "bench", key, Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
               max_concurrency=CONC, use_threads=True), ExtraArgs={"ChecksumAlgorithm": "SHA256"})
""",
}

# What resuming an upload from a fresh pod needs, per library (checked by hand against their APIs).
RESUME = {
    "aiobotocore-stream": {"persist upload id": True, "list uploaded parts": True, "complete/abort by id": True,
                           "list abandoned uploads": True, "server-side copy (>5 GiB too)": True, "gs:// az://": "no"},
    "aiobotocore": {"persist upload id": True, "list uploaded parts": True, "complete/abort by id": True,
                    "list abandoned uploads": True, "server-side copy (>5 GiB too)": True, "gs:// az://": "no"},
    "obstore": {"persist upload id": False, "list uploaded parts": False, "complete/abort by id": False,
                "list abandoned uploads": False, "server-side copy (>5 GiB too)": "copy only", "gs:// az://": "yes"},
    "boto3": {"persist upload id": True, "list uploaded parts": True, "complete/abort by id": True,
              "list abandoned uploads": True, "server-side copy (>5 GiB too)": True, "gs:// az://": "no"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.s3_libraries", description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from s3server import MotoServer  # the server the tests use

    work = Path(tempfile.mkdtemp(prefix="aep-s3lib-"))
    src = work / "src.bin"
    with open(src, "wb") as f:
        for _ in range(args.mib):
            f.write(os.urandom(1 << 20))
    samples: dict[str, list[dict]] = {name: [] for name in CANDIDATES}
    with MotoServer() as moto:
        moto.create_bucket("bench")
        for rep in range(args.reps):
            for name, code in CANDIDATES.items():
                script = work / f"candidate_{name}.py"
                script.write_text(_COMMON.format(part=PART, conc=CONCURRENCY) + code)
                r = run_measured([PYTHON, str(script), moto.endpoint, str(src), f"{name}-{rep}"], timeout=600,
                                 env={**os.environ, **moto.env()}, log_dir=work / f"log-{name}-{rep}")
                ok = r.rc == 0 and moto.size_of("bench", f"{name}-{rep}") == args.mib << 20
                samples[name].append({"wall_s": r.wall_s, "cpu_s": r.cpu_s, "rss": r.peak_rss_mib, "ok": ok})
                log(f"  rep {rep + 1} {name:<18} {args.mib * 1.048576 / r.wall_s:7.1f} MB/s cpu {r.cpu_s:5.2f}s "
                    f"rss {r.peak_rss_mib:6.1f} MiB {'ok' if ok else 'FAILED: ' + r.stderr_tail[-300:]}")
    rows = {}
    for name, runs in samples.items():
        wall = statistics.median(s["wall_s"] for s in runs)
        rows[name] = {"mb_s": round(args.mib * 1.048576 / wall, 1),
                      "cpu_s_per_gib": round(statistics.median(s["cpu_s"] for s in runs) / (args.mib / 1024), 2),
                      "peak_rss_mib": round(statistics.median(s["rss"] for s in runs), 1),
                      "ok": all(s["ok"] for s in runs), "resume": RESUME[name]}
    print(f"\n{args.mib} MiB, {PART >> 20} MiB parts x {CONCURRENCY}, {args.reps} reps, medians (moto bounds MB/s)")
    print(f"{'library':<18} {'MB/s':>7} {'CPU s/GiB':>10} {'RSS MiB':>8}  resume across pods")
    for name, row in rows.items():
        print(f"{name:<18} {row['mb_s']:>7} {row['cpu_s_per_gib']:>10} {row['peak_rss_mib']:>8}  "
              + ", ".join(f"{k}: {v}" for k, v in row["resume"].items()))
    if args.json:
        args.json.write_text(json.dumps({"mib": args.mib, "reps": args.reps, "results": rows}, indent=2))
    return 0 if all(r["ok"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
