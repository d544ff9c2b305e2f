"""The benchmark's fake platform process: `python -m bench.fake_server [fake-platform flags] [--datasets-json J]`.

It is `aep-export fake-platform` (the same flags, parsed by engine/fake/cli.py, the same FakePlatform)
with two additions that the benchmark needs and the product's fake does not:

- `--datasets-json '[{"files_per_dataset_file": 2, "file_mb": 24}, ...]'`: one DatasetSpec per object
  (replaces the preset's datasets), so a profile can compose datasets of different part sizes (skew).
- a stats listener on another loopback port (`stats_url` in the JSON line): `GET /bytes` returns the
  fake's live download counters, `{"bytes_sent": N, "bytes_by_file": {"<dataSetFileId>/<name>": N}}`.
  The resume profile kills a tool at half the bytes and counts bytes refetched from them.

Nothing here changes what the fake serves on its own port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from engine.fake import cli as fake_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fake_server")
    fake_cli.configure(p)
    p.add_argument("--datasets-json", help="JSON list of DatasetSpec fields, one object per dataset")
    return p


def config_from_argv(argv: list[str]):
    """The FakeConfig for these flags: the fake's own parsing, then the composed datasets if given."""
    from engine.fake import DatasetSpec

    args = parser().parse_args(argv)
    cfg = fake_cli.config_from_args(args)
    if args.datasets_json:
        try:
            specs = [DatasetSpec(**spec) for spec in json.loads(args.datasets_json)]
        except TypeError as exc:  # an unknown DatasetSpec field
            raise ValueError(f"--datasets-json: {exc}") from None
        if not specs:
            raise ValueError("--datasets-json: at least one dataset")
        cfg = cfg.replace(datasets=specs)
    return cfg, args


def counters(stats: Any) -> dict[str, Any]:
    return {"bytes_sent": stats.bytes_sent, "bytes_by_file": dict(stats.bytes_by_file)}


async def serve(argv: list[str]) -> None:
    from aiohttp import web

    from engine.fake import FakePlatform

    cfg, args = config_from_argv(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakePlatform(cfg, host=args.host, port=args.port) as fp:

        async def bytes_sent(_request: web.Request) -> web.Response:
            return web.json_response(counters(fp.stats))

        app = web.Application()
        app.router.add_get("/bytes", bytes_sent)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        try:
            sys.stdout.write(json.dumps(fp.info() | {"stats_url": f"http://{host}:{port}"}) + "\n")
            sys.stdout.flush()
            await stop.wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    try:
        asyncio.run(serve(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        print(f"bench.fake_server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
