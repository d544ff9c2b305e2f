"""One function per tool. Each downloads every expected file into `out_dir` and returns a RunResult.

The engine does its own discovery (its time includes it); the peers get the part URLs and the
gateway headers from the harness for free.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .harness import PYTHON, REPO, Fake, RemoteFile, RunResult, run_measured

TOOLS = ("engine", "aria2c", "curl", "naive")


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


def available(tool: str) -> str | None:
    """None when the tool can run, else a note saying why not."""
    if tool in ("aria2c", "curl") and shutil.which(tool) is None:
        return f"{tool} not installed (not on PATH): skipped"
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
    export = {"out_dir": str(ctx.out_dir), "concurrency": ctx.concurrency, **ctx.export_overrides}
    lines = [
        "[platform]", f"url = {_toml_value(info['url'])}", f"org_id = {_toml_value(info['org_id'])}",
        f"sandbox = {_toml_value(info['sandbox'])}", "",
        "[auth]", f"client_id = {_toml_value(info['client_id'])}", f"client_secret = {_toml_value(info['client_secret'])}",
        f"ims_url = {_toml_value(info['ims_url'])}", "",
        "[export]", *(f"{k} = {_toml_value(v)}" for k, v in export.items()), "",
    ]
    for ds in info["datasets"]:
        lines += ["[[datasets]]", f"id = {_toml_value(ds)}", ""]
    return "\n".join(lines)


def run_engine(ctx: RunContext) -> RunResult:
    cfg = ctx.work_dir / "engine.toml"
    cfg.write_text(engine_config(ctx))
    argv = [PYTHON, "-m", "engine", "run", "--config", str(cfg), "--out", str(ctx.out_dir), "--json-logs", "--no-progress"]
    return run_measured(argv, timeout=ctx.timeout, cwd=REPO, log_dir=ctx.work_dir / "logs")


# ----------------------------------------------------------------------------- aria2c


def run_aria2c(ctx: RunContext) -> RunResult:
    lines = []
    for f in ctx.files:
        lines.append(f.url)
        lines += [f"  header={k}: {v}" for k, v in ctx.headers.items()]
        lines += [f"  dir={ctx.out_dir / f.rel_path.parent}", f"  out={f.rel_path.name}"]
    inp = ctx.work_dir / "aria2c.input"
    inp.write_text("\n".join(lines) + "\n")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    c = str(ctx.concurrency)
    argv = ["aria2c", "-i", str(inp), "-j", c, "-x", "1", "-s", "1", "--file-allocation=none",
            "--console-log-level=warn", "--summary-interval=0", "--max-tries=5", "--retry-wait=1",
            "--auto-file-renaming=false", "--allow-overwrite=true", "--show-console-readout=false"]
    return run_measured(argv, timeout=ctx.timeout, log_dir=ctx.work_dir / "logs")


# ----------------------------------------------------------------------------- curl


def _curl_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_curl(ctx: RunContext) -> RunResult:
    """One curl operation per file (separated by `next`): url, output and the 4 headers each."""
    lines: list[str] = []
    for i, f in enumerate(ctx.files):
        if i:
            lines.append("next")
        lines += [f"url = {_curl_quote(f.url)}", f"output = {_curl_quote(str(ctx.out_dir / f.rel_path))}",
                  "create-dirs", "fail", "retry = 5"]
        lines += [f"header = {_curl_quote(f'{k}: {v}')}" for k, v in ctx.headers.items()]
    conf = ctx.work_dir / "curl.config"
    conf.write_text("\n".join(lines) + "\n")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    argv = ["curl", "-sS", "--fail", "--retry", "5", "--parallel", "--parallel-max", str(ctx.concurrency),
            "--config", str(conf)]
    return run_measured(argv, timeout=ctx.timeout, log_dir=ctx.work_dir / "logs")


# ----------------------------------------------------------------------------- naive


def run_naive(ctx: RunContext) -> RunResult:
    spec = {"headers": ctx.headers,
            "files": [{"url": f.url, "out": str(ctx.out_dir / f.rel_path)} for f in ctx.files]}
    lst = ctx.work_dir / "naive.json"
    lst.write_text(json.dumps(spec))
    argv = [PYTHON, "-m", "bench.naive_client", str(lst)]
    return run_measured(argv, timeout=ctx.timeout, cwd=REPO, log_dir=ctx.work_dir / "logs")


RUNNERS: dict[str, Callable[[RunContext], RunResult]] = {
    "engine": run_engine, "aria2c": run_aria2c, "curl": run_curl, "naive": run_naive,
}
