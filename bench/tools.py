"""One function per tool. Each downloads every expected file into `out_dir` and returns a RunResult.

The engine does its own discovery inside its run. The peers get the part URLs and the gateway
headers from the harness's discovery (bench/discovery.py), whose time the runner adds to theirs.
`aria2c-sha` is aria2c handed every file's SHA-256, so it verifies like the engine; `aria2c` is the
same command without them (it verifies nothing), kept for reference.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .harness import PYTHON, REPO, Fake, RemoteFile, RunResult, run_measured

TOOLS = ("engine", "aria2c-sha", "aria2c", "curl", "naive")
PEERS = tuple(t for t in TOOLS if t != "engine")
EXECUTABLE = {"aria2c": "aria2c", "aria2c-sha": "aria2c", "curl": "curl"}


@dataclass
class RunContext:
    fake: Fake
    files: list[RemoteFile]  # discovered part URLs (peers only)
    headers: dict[str, str]  # the 4 gateway headers (peers only)
    out_dir: Path  # must not exist yet; the tool creates it
    work_dir: Path  # scratch for configs/logs of this run (deleted afterwards)
    concurrency: int
    timeout: float
    export_overrides: dict[str, object] = field(default_factory=dict)  # extra [export] keys for the engine
    sha256: dict[Path, str] = field(default_factory=dict)  # rel_path -> hex digest (aria2c-sha)
    resume: bool = False  # the resume profile: the same command runs twice over one out_dir
    interrupt: Callable[[], bool] | None = None  # polled while the tool runs: true -> kill -9
    prefix: list[str] = field(default_factory=list)  # engine only: runs it under this (the profiler)
    repo: Path | None = None  # engine only: the source tree to run it from (default: this checkout)


def available(tool: str) -> str | None:
    """None when the tool can run, else a note saying why not."""
    exe = EXECUTABLE.get(tool)
    if exe and shutil.which(exe) is None:
        return f"{exe} not installed (not on PATH): skipped"
    return None


# ----------------------------------------------------------------------------- engine


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def engine_config(ctx: RunContext) -> str:
    info = ctx.fake.info
    tables: dict[str, dict[str, object]] = {"export": {"out_dir": str(ctx.out_dir), "concurrency": ctx.concurrency}}
    for key, value in ctx.export_overrides.items():  # "metrics.addr": another table than [export]
        table, _, name = key.rpartition(".")
        tables.setdefault(table or "export", {})[name] = value
    lines = [
        "[platform]", f"url = {_toml_value(info['url'])}", f"org_id = {_toml_value(info['org_id'])}",
        f"sandbox = {_toml_value(info['sandbox'])}", "",
        "[auth]", f"client_id = {_toml_value(info['client_id'])}", f"client_secret = {_toml_value(info['client_secret'])}",
        f"ims_url = {_toml_value(info['ims_url'])}", "",
    ]
    for table, values in tables.items():
        lines += [f"[{table}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items()), ""]
    for ds in info["datasets"]:
        lines += ["[[datasets]]", f"id = {_toml_value(ds)}", ""]
    return "\n".join(lines)


def run_engine(ctx: RunContext) -> RunResult:
    cfg = ctx.work_dir / "engine.toml"
    cfg.write_text(engine_config(ctx))
    argv = [*ctx.prefix, PYTHON, "-m", "engine", "run", "--config", str(cfg), "--out", str(ctx.out_dir),
            "--json-logs", "--no-progress"]
    return _run(ctx, argv, cwd=ctx.repo or REPO)  # `python -m engine` imports the tree it runs in


def _run(ctx: RunContext, argv: list[str], cwd: Path | None = None) -> RunResult:
    # logs beside the output: a resumed run's second invocation must not overwrite the first's
    logs = ctx.work_dir / ("logs" if not (ctx.work_dir / "logs").exists() else "logs-rerun")
    return run_measured(argv, timeout=ctx.timeout, cwd=cwd, log_dir=logs, interrupt=ctx.interrupt)


# ----------------------------------------------------------------------------- aria2c


def aria2c_input(files: list[RemoteFile], headers: dict[str, str], out_dir: Path,
                 sha256: dict[Path, str] | None = None) -> str:
    """aria2c's `-i` file: one entry per part; with `sha256`, a `checksum=sha-256=<hex>` line each."""
    lines = []
    for f in files:
        lines.append(f.url)
        lines += [f"  header={k}: {v}" for k, v in headers.items()]
        lines += [f"  dir={out_dir / f.rel_path.parent}", f"  out={f.rel_path.name}"]
        if sha256 is not None:
            lines.append(f"  checksum=sha-256={sha256[f.rel_path]}")  # KeyError: a file without a digest
    return "\n".join(lines) + "\n"


def aria2c_argv(inp: Path, concurrency: int, resume: bool) -> list[str]:
    c = str(concurrency)
    argv = ["aria2c", "-i", str(inp), "-j", c, "-x", "1", "-s", "1", "--file-allocation=none",
            "--console-log-level=warn", "--summary-interval=0", "--max-tries=5", "--retry-wait=1",
            "--auto-file-renaming=false", "--allow-overwrite=true", "--show-console-readout=false"]
    if resume:
        # its control file (.aria2) saved every second instead of every 60 s, and --continue: the
        # best aria2c can do after a kill -9 (with the default it restarts every file from zero)
        argv += ["--continue=true", "--auto-save-interval=1"]
    return argv


def _aria2c(ctx: RunContext, verify: bool) -> RunResult:
    inp = ctx.work_dir / "aria2c.input"
    inp.write_text(aria2c_input(ctx.files, ctx.headers, ctx.out_dir, ctx.sha256 if verify else None))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return _run(ctx, aria2c_argv(inp, ctx.concurrency, ctx.resume))


def run_aria2c(ctx: RunContext) -> RunResult:
    return _aria2c(ctx, verify=False)


def run_aria2c_sha(ctx: RunContext) -> RunResult:
    return _aria2c(ctx, verify=True)


# ----------------------------------------------------------------------------- curl


def _curl_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def curl_config(files: list[RemoteFile], headers: dict[str, str], out_dir: Path, resume: bool = False) -> str:
    """One curl operation per file (separated by `next`): url, output and the 4 headers each."""
    lines: list[str] = []
    for i, f in enumerate(files):
        if i:
            lines.append("next")
        lines += [f"url = {_curl_quote(f.url)}", f"output = {_curl_quote(str(out_dir / f.rel_path))}",
                  "create-dirs", "fail", "retry = 5"]
        if resume:
            lines.append('continue-at = "-"')  # per operation (`next` resets it): from the bytes on disk
        lines += [f"header = {_curl_quote(f'{k}: {v}')}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def run_curl(ctx: RunContext) -> RunResult:
    conf = ctx.work_dir / "curl.config"
    conf.write_text(curl_config(ctx.files, ctx.headers, ctx.out_dir, ctx.resume))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    # --parallel-immediate: open the C connections at once. Without it curl waits to see whether new
    # transfers can share (multiplex) a connection, which HTTP/1.1 never allows: with 50 ms to first
    # byte that halved curl's rate on a 16 x 8 MiB wan-like export
    argv = ["curl", "-sS", "--fail", "--retry", "5", "--parallel", "--parallel-immediate",
            "--parallel-max", str(ctx.concurrency), "--config", str(conf)]
    return _run(ctx, argv)


# ----------------------------------------------------------------------------- naive


def run_naive(ctx: RunContext) -> RunResult:
    spec = {"headers": ctx.headers,
            "files": [{"url": f.url, "out": str(ctx.out_dir / f.rel_path)} for f in ctx.files]}
    lst = ctx.work_dir / "naive.json"
    lst.write_text(json.dumps(spec))
    argv = [PYTHON, "-m", "bench.naive_client", str(lst)]
    return _run(ctx, argv, cwd=REPO)


RUNNERS: dict[str, Callable[[RunContext], RunResult]] = {
    "engine": run_engine, "aria2c-sha": run_aria2c_sha, "aria2c": run_aria2c, "curl": run_curl, "naive": run_naive,
}
