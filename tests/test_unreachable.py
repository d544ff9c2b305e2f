"""A platform that cannot be reached ends the run fast with exit 4 and one clear line.

Connection refused, DNS and TLS failures on the gateway or IMS: not minutes of retries ending
"0 failed". The bound asserted is loose (< 40 s for a ~15 s budget): machines here are shared."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import clean_env, read_report, run_export, settings_for

from engine.fake import FakeConfig, Faults
from engine.outcome import EXIT_UNREACHABLE
from engine.retry import UNREACHABLE_AFTER_S

BOUND_S = 40.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def _config(tmp_path: Path, name: str, url: str, ims_url: str, fp) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        'datasets = ["5cd9146b31dae914b75f654f", "0123456789abcdef01234567"]\n'
        f'[platform]\nurl = "{url}"\norg_id = "{fp.org_id}"\n'
        f'[auth]\nclient_id = "{fp.client_id}"\nclient_secret = "{fp.client_secret}"\nims_url = "{ims_url}"\n'
        f'[export]\nout_dir = "{tmp_path / name}"\n')  # the default retry policy: the bound must hold with it
    return path


def test_unreachable_gateway_or_ims_exit_4_in_bounded_time(tmp_path: Path, threaded_fake) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=99))  # a reachable IMS
    refused = f"http://127.0.0.1:{closed_port()}"
    tls_to_plain_http = fp.url.replace("http://", "https://")
    cases = {  # name -> (command, gateway, IMS, what the line names)
        "ims_refused": ("run", refused, refused, ("IMS", "auth.ims_url")),
        "gateway_refused": ("run", refused, fp.ims_url, ("the gateway", "platform.url")),
        "check_gateway_refused": ("check", refused, fp.ims_url, ("the gateway", "platform.url")),
        "gateway_dns": ("run", "https://aep-export-test.invalid", fp.ims_url, ("DNS lookup failed", "platform.url")),
        "gateway_tls": ("run", tls_to_plain_http, fp.ims_url, ("TLS handshake failed", "platform.url")),
    }
    started = time.monotonic()
    procs = {}
    for name, (command, url, ims, _) in cases.items():  # at once: each waits out its budget
        cfg = _config(tmp_path, name, url, ims, fp)
        procs[name] = subprocess.Popen([sys.executable, "-m", "engine", command, "--config", str(cfg), "--json-logs"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=clean_env())
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        elapsed = time.monotonic() - started
        command, _, _, words = cases[name]
        assert proc.returncode == EXIT_UNREACHABLE, f"{name}: {stdout}{stderr}"
        assert elapsed < BOUND_S, f"{name} took {elapsed:.0f} s"
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        last = lines[-1]
        assert last.startswith("aep-export: platform unreachable: cannot connect to"), stderr
        assert all(w in last for w in words) and "Traceback" not in stderr, (name, last)
        logged = [json.loads(ln) for ln in lines[:-1]]  # the rest are log lines: at most one warning per host
        assert [e["event"] for e in logged if e["level"] != "info"] in ([], ["cannot_connect"]), logged
        assert stdout == "", stdout  # no summary table of nothing, no "0 failed"
        if command == "run":
            report = read_report(tmp_path / name)
            assert report["exit_code"] == EXIT_UNREACHABLE and report["status"] == "unreachable"
            assert report["errors"] and "cannot connect" in report["errors"][0]
        else:
            assert not (tmp_path / name).exists()


async def test_the_gateway_going_away_mid_run_stops_it_with_exit_4(tmp_path: Path, make_fake) -> None:
    """The platform disappears while files stream: the run stops within the budget (exit 4), the
    partial files are kept for a rerun, and the report says why."""
    cfg = FakeConfig.small(n_datasets=2, files=3, rows=3000, seed=98, faults=Faults(bandwidth_bps=200_000))
    fp = make_fake(cfg)
    await fp.start()
    try:
        out = tmp_path / "out"
        task = asyncio.ensure_future(run_export(settings_for(fp, out, concurrency=2)))
        while fp.stats.bytes_sent < 50_000:
            assert not task.done(), "the run ended before the platform went away"
            await asyncio.sleep(0.02)
    finally:
        await fp.stop()
    gone = time.monotonic()
    run = await asyncio.wait_for(task, timeout=120)
    assert time.monotonic() - gone < UNREACHABLE_AFTER_S + 25
    assert run.exit_code == EXIT_UNREACHABLE and run.status == "unreachable"
    report = read_report(out)
    assert report["status"] == "unreachable" and "cannot connect to the gateway" in report["errors"][0]
    assert any(p.name.endswith(".part") for p in out.rglob("*")), "partial work should be kept for the rerun"
