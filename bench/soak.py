"""Chaos soak: many datasets, every fault mode at once; prints the figures quoted in notes.

    python -m bench.soak [--datasets 12] [--files 8] [--rows 20000] [--seed 7] [--concurrency 16]

Exit 0 only when the export ends with exit 0 and every file is byte-identical to the source.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from engine import logs
from engine.config import Settings
from engine.exporter import Exporter
from engine.fake import DatasetSpec, FakeConfig, FakePlatform, Faults

ALL_FAULTS = dict(
    p_429=0.08, retry_after_s=1, p_retry_after_date=0.3, p_5xx=0.05, p_error_body=0.03, p_reset=0.1,
    p_short_range=0.15, ignore_range=0.05, p_corrupt=0.03, send_digest=True, redirect=True,
    response_limit_s=1.0, bandwidth_bps=6e6, first_byte_delay_s=0.02, token_lifetime_s=5,
)


def soak_config(args: argparse.Namespace) -> FakeConfig:
    variants = [
        {}, {"length_as": "number", "metrics_form": "old"}, {"nested": True}, {"batch_key": "related"},
        {"listing_shape": "bare_array"}, {"success_marker": True, "status_word": "active"}, {"page_size": 3},
    ]
    datasets = [DatasetSpec(files_per_dataset_file=args.files, rows_per_file=args.rows, **variants[i % len(variants)])
                for i in range(args.datasets)]
    return FakeConfig(seed=args.seed, faults=Faults(**ALL_FAULTS), datasets=datasets)


async def soak(args: argparse.Namespace) -> int:
    logs.configure(json_logs=True, level="error")
    out = Path(tempfile.mkdtemp(prefix="aep-soak-"))
    try:
        async with FakePlatform(soak_config(args)) as fp:
            settings = Settings.model_validate({
                "platform": {"url": fp.url, "org_id": fp.org_id, "sandbox": fp.sandbox},
                "auth": {"client_id": fp.client_id, "client_secret": fp.client_secret, "ims_url": fp.ims_url},
                "export": {"out_dir": out, "concurrency": args.concurrency, "response_time_limit": ALL_FAULTS["response_limit_s"]},
                "datasets": [{"id": d} for d in fp.dataset_ids],
            })
            t0 = time.monotonic()
            run = await Exporter(settings, handle_signals=False).execute()
            seconds = time.monotonic() - t0
            expected = fp.expected_files()
            identical = sum(
                1 for e in expected
                if (p := out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name).is_file()
                and hashlib.sha256(p.read_bytes()).hexdigest() == e.sha256
            )
            total = sum(e.size for e in expected)
            figures = {
                "exit_code": run.exit_code,
                "datasets": len(fp.dataset_ids),
                "files": len(expected),
                "files_identical": identical,
                "bytes": total,
                "faults_injected": dict(fp.stats.faults),
                "faults_total": sum(fp.stats.faults.values()),
                "bytes_received_by_engine": run.totals["bytes_fetched"],
                "bytes_resent": run.totals["bytes_fetched"] - total,
                "resent_fraction": round((run.totals["bytes_fetched"] - total) / total, 4),
                "requests": run.totals["requests"],
                "retries": run.totals["retries"],
                "throttled": run.totals["throttled"],
                "restarts": run.totals["restarts"],
                "tokens_issued": fp.stats.tokens_issued,
                "redirect_host_saw_credentials": fp.stats.redirect_saw_auth,
                "seconds": round(seconds, 2),
            }
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    return 0 if figures["exit_code"] == 0 and identical == len(expected) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", type=int, default=12)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=16)
    return asyncio.run(soak(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
