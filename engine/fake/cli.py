"""`aep-export fake-platform` sub-command (also `python -m engine.fake`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

from .presets import PRESETS

if TYPE_CHECKING:
    from .config import FakeConfig


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("fake-platform", help="run the local fake Adobe Experience Platform",
                              description="Serve a fake AEP (IMS, Catalog, Data Access, export jobs). "
                                          "Prints one JSON line with url/credentials, then serves "
                                          "until SIGTERM/SIGINT.")
    configure(p)
    return p


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--preset", choices=PRESETS, default="demo")
    p.add_argument("--datasets", type=int, help="number of datasets (replaces the preset's)")
    p.add_argument("--files-per-batch", type=int, help="parquet parts per dataSetFile")
    p.add_argument("--file-mb", type=float, help="target part size in MiB")
    p.add_argument("--rows-per-file", type=int)
    p.add_argument("--page-size", type=int, help="listing page size (1..100) for every dataset")
    p.add_argument("--data-dir", help="where generated files live (default: cache in $TMPDIR)")
    p.add_argument("--links", choices=("request", "port", "no_port", "documented"),
                   help="how hrefs and next links spell scheme://host:port (documented: ':443'-style self "
                        "links, next links without a port; port-less forms need the default port, e.g. --port 80)")
    f = p.add_argument_group("faults (deterministic, seeded)")
    f.add_argument("--fault-429", type=float, metavar="P")
    f.add_argument("--retry-after", type=float, metavar="S")
    f.add_argument("--fault-5xx", type=float, metavar="P")
    f.add_argument("--fault-error-body", type=float, metavar="P")
    f.add_argument("--fault-reset", type=float, metavar="P")
    f.add_argument("--fault-corrupt", type=float, metavar="P")
    f.add_argument("--short-ranges", type=float, metavar="P", nargs="?", const=0.5)
    f.add_argument("--ignore-range", type=float, metavar="P", nargs="?", const=1.0)
    f.add_argument("--response-limit", type=float, metavar="SECONDS")
    f.add_argument("--bandwidth", type=float, metavar="BYTES_PER_S")
    f.add_argument("--first-byte-delay", type=float, metavar="S")
    f.add_argument("--token-lifetime", type=float, metavar="S")
    f.add_argument("--redirect", action="store_true", default=None)
    f.add_argument("--send-digest", action="store_true", default=None)
    f.add_argument("--max-faults-per-key", type=int)


FAULT_FLAGS = {
    "fault_429": "p_429", "retry_after": "retry_after_s", "fault_5xx": "p_5xx",
    "fault_error_body": "p_error_body", "fault_reset": "p_reset", "fault_corrupt": "p_corrupt",
    "short_ranges": "p_short_range", "ignore_range": "ignore_range",
    "response_limit": "response_limit_s", "bandwidth": "bandwidth_bps",
    "first_byte_delay": "first_byte_delay_s", "token_lifetime": "token_lifetime_s",
    "redirect": "redirect", "send_digest": "send_digest", "max_faults_per_key": "max_faults_per_key",
}


def config_from_args(args: argparse.Namespace) -> FakeConfig:
    from .config import FakeConfig

    cfg = FakeConfig.preset(args.preset, seed=args.seed)
    specs = list(cfg.datasets)
    if args.datasets:
        with_job = any(s.audience_job for s in specs)
        specs = [dataclasses.replace(specs[i % len(specs)], id=None, name=None, audience_job=(i == 0 and with_job))
                 for i in range(args.datasets)]
    overrides: dict[str, Any] = {}
    if args.files_per_batch:
        overrides["files_per_dataset_file"] = args.files_per_batch
    if args.file_mb:
        overrides.update(file_mb=args.file_mb, rows_per_file=None)
    if args.rows_per_file:
        overrides["rows_per_file"] = args.rows_per_file
    if args.page_size:
        overrides["page_size"] = args.page_size
    specs = [dataclasses.replace(s, **overrides) for s in specs]
    faults = dataclasses.replace(cfg.faults, **{
        field: getattr(args, flag) for flag, field in FAULT_FLAGS.items() if getattr(args, flag) is not None})
    return cfg.replace(datasets=specs, faults=faults, data_dir=args.data_dir,
                       page_size=args.page_size or cfg.page_size, links=args.links or cfg.links)


async def serve(cfg: FakeConfig, host: str, port: int) -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    from .server import FakePlatform

    async with FakePlatform(cfg, host=host, port=port) as fp:
        sys.stdout.write(json.dumps(fp.info()) + "\n")
        sys.stdout.flush()
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"fake-platform: {exc}", file=sys.stderr)
        return 2
    import asyncio  # here, not at the top: the CLI imports this module to build its parser (start-up time)

    asyncio.run(serve(cfg, args.host, args.port))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.fake")
    configure(parser)
    return run(parser.parse_args(argv))
