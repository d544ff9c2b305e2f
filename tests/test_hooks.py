"""Completion hooks (issue #21): a command per batch as soon as it ends, told about it in
AEP_EXPORT_HOOK_* variables and given no credential; a failing one is reported and changes nothing
else; a hanging one is killed at hooks.timeout, with what it started."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import clean_env, read_report, run_cli, run_export, settings_for, toml_config
from prom import wait_until

from engine.config import StoreURL
from engine.fake import DatasetSpec, FakeConfig
from engine.hooks import location_of
from engine.layout import SUCCESS
from engine.model import BatchRef
from engine.outcome import EXIT_FAILED, EXIT_OK

# A hook that records what it was given: its environment, whether its batch folder held _SUCCESS
# and what _report.json said at that moment; then tells the test's socket (the batch id) and exits
# with the code it was given.
RECORDER = """
import json, os, socket, sys
out, code, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = dict(os.environ)
where = env.get("AEP_EXPORT_HOOK_LOCATION", "")
report = os.path.join(env.get("AEP_EXPORT_HOOK_OUT_DIR", ""), "_report.json")
seen = {"env": env, "argv": sys.argv[1:], "success_marker": os.path.exists(os.path.join(where, "_SUCCESS")),
        "report_status": json.load(open(report))["status"] if os.path.exists(report) else None}
with open(os.path.join(out, env["AEP_EXPORT_HOOK_BATCH_ID"] + ".json"), "w") as f:
    json.dump(seen, f)
if port:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(env["AEP_EXPORT_HOOK_BATCH_ID"].encode())
print("recorded", env["AEP_EXPORT_HOOK_BATCH_ID"])
sys.exit(code)
"""


def _recorder(tmp_path: Path, code: int = 0, port: int = 0) -> str:
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    seen = tmp_path / "seen"
    seen.mkdir(exist_ok=True)
    return shlex.join([sys.executable, str(script), str(seen), str(code), str(port)])


def _seen(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "seen").glob("*.json")}


def _with_hooks(settings: Any, **hooks: Any) -> Any:
    return settings.model_copy(update={"hooks": settings.hooks.model_copy(update=hooks)})


async def test_each_batch_hook_runs_as_it_ends_told_the_batch_and_no_credential(tmp_path: Path, make_fake,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The second dataset's listing is held until the first batch's hook has run: hooks run as
    batches end (an engine that ran them after the run would wait out the hold and fail)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-hooks-0123")
    monkeypatch.setenv("SOME_TOKEN", "not-for-hooks-4567")
    monkeypatch.setenv("HOOK_VISIBLE", "named-in-pass-env")
    first_hook = asyncio.Event()
    events: list[str] = []

    async def told(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        events.append(f"hook {(await reader.read()).decode()}")
        first_hook.set()
        writer.close()

    server = await asyncio.start_server(told, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fp = make_fake(FakeConfig.small(n_datasets=2, files=2, rows=40, seed=2111))
    held_batch = fp.expected_files()[-1].batch_id
    original = fp.h_batch_files

    async def h_batch_files(request: web.Request) -> web.StreamResponse:
        if request.match_info["id"] == held_batch:
            try:
                await asyncio.wait_for(first_hook.wait(), timeout=20)
            except TimeoutError:
                events.append("timeout")
            events.append(f"listing {held_batch}")
        return await original(request)

    fp.h_batch_files = h_batch_files  # routes are bound when the server starts
    async with server, fp:
        settings = _with_hooks(settings_for(fp, tmp_path / "out", concurrency=4), on_batch_complete=_recorder(tmp_path, port=port),
                               pass_env=["HOOK_VISIBLE"])
        run = await run_export(settings)
    assert run.exit_code == EXIT_OK, run.errors
    assert "timeout" not in events and events[1] == f"listing {held_batch}", events
    report = read_report(tmp_path / "out")
    seen = _seen(tmp_path)
    batches = {b["batch_id"]: (d, b) for d in report["datasets"] for b in d["batches"]}
    assert set(seen) == set(batches) and len(seen) == 2
    for batch_id, (dataset, batch) in batches.items():
        env = seen[batch_id]["env"]
        told = {k.removeprefix("AEP_EXPORT_HOOK_"): v for k, v in env.items() if k.startswith("AEP_EXPORT_HOOK_")}
        folder = (tmp_path / "out" / dataset["dataset_id"] / batch_id).resolve()
        assert told == {"EVENT": "batch_complete", "DATASET_ID": dataset["dataset_id"], "DATASET_NAME": dataset["name"],
                        "BATCH_ID": batch_id, "SOURCE": "dataset", "STATUS": "ok", "LOCATION": str(folder),
                        "OUT_DIR": str(tmp_path / "out"), "FILES": str(batch["files"]), "FILES_REUSED": "0", "BYTES": str(batch["bytes"]),
                        "ROWS": str(batch["records_found"]), "ERROR": "", "SHARD": ""}
        assert seen[batch_id]["success_marker"] and seen[batch_id]["report_status"] == "running"
        # no setting of the run, no credential, only the basic variables and those named
        assert not [k for k in env if k.startswith("AEP_EXPORT_") and not k.startswith("AEP_EXPORT_HOOK_")]
        assert "AWS_SECRET_ACCESS_KEY" not in env and "SOME_TOKEN" not in env and env["HOOK_VISIBLE"] == "named-in-pass-env"
        assert not [k for k, v in env.items() if fp.client_secret in v or "not-for-hooks" in v]
        assert env["PATH"] == os.environ["PATH"]
        assert batch["hook"]["event"] == "batch_complete" and batch["hook"]["outcome"] == "ok" and batch["hook"]["exit_code"] == 0
    assert report["totals"]["hooks"] == 2 and report["totals"]["hooks_failed"] == 0


async def test_under_hive_the_hook_location_is_the_batch_folder_that_holds_its_success(tmp_path: Path, make_fake) -> None:
    """export.layout = "hive": AEP_EXPORT_HOOK_LOCATION names `dataset=<id>/batch=<id>`, the folder
    that exists and holds the batch's _SUCCESS (not the plain layout's `<id>/<id>`, which is not there)."""
    async with make_fake(FakeConfig.small(n_datasets=1, files=2, rows=40, seed=2116)) as fp:
        settings = _with_hooks(settings_for(fp, tmp_path / "out", layout="hive"), on_batch_complete=_recorder(tmp_path))
        run = await run_export(settings)
    assert run.exit_code == EXIT_OK, run.errors
    [(batch_id, seen)] = _seen(tmp_path).items()
    dataset_id = seen["env"]["AEP_EXPORT_HOOK_DATASET_ID"]
    location = Path(seen["env"]["AEP_EXPORT_HOOK_LOCATION"])
    assert location == (tmp_path / "out" / f"dataset={dataset_id}" / f"batch={batch_id}").resolve()
    assert seen["success_marker"] and (location / SUCCESS).is_file()


def test_the_location_of_a_batch_in_an_object_store_follows_its_layout() -> None:
    """What a hook is told for s3:// and az:// out_dirs: the store URL of the batch's folder, in its layout."""
    for url in ("s3://bucket/exports", "az://container/exports"):
        out = StoreURL.parse(url)
        assert location_of(out, BatchRef("ds1", "b1", layout="hive")) == f"{url}/dataset=ds1/batch=b1"
        assert location_of(out, BatchRef("ds1", "b1")) == f"{url}/ds1/b1"

def test_a_failing_hook_is_reported_never_fails_or_repeats_the_batch(tmp_path: Path, threaded_fake) -> None:
    """Exit 3 from on_batch_complete: the batch stays ok, the run exits 0, the hook ran once per
    batch, and the failure is in _report.json, the --json document and the summary line."""
    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=2, rows=40, seed=2112))
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, tmp_path / "out"))
    p = run_cli("run", "-c", str(config), "--json", "--on-batch-complete", _recorder(tmp_path, code=3), cwd=tmp_path)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    [dataset] = doc["datasets"]
    [batch] = dataset["batches"]
    assert batch["status"] == "ok" and batch["hook"]["outcome"] == "failed" and batch["hook"]["exit_code"] == 3
    assert batch["hook"]["error"] == "exit code 3"
    assert doc["totals"]["hooks"] == 1 and doc["totals"]["hooks_failed"] == 1
    assert read_report(tmp_path / "out")["datasets"][0]["batches"][0]["hook"] == batch["hook"]
    assert list(_seen(tmp_path)) == [batch["batch_id"]]  # once
    failed = [json.loads(line) for line in p.stderr.splitlines() if '"hook_failed"' in line]
    assert len(failed) == 1 and failed[0]["output"] == f"recorded {batch['batch_id']}" and failed[0]["exit_code"] == 3
    # a command that is not there is reported the same way
    again = run_cli("run", "-c", str(config), "--on-batch-complete", str(tmp_path / "no-such-hook"), cwd=tmp_path,
                    env=clean_env(AEP_EXPORT_EXPORT__OUT_DIR=str(tmp_path / "out2")))
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    assert read_report(tmp_path / "out2")["datasets"][0]["batches"][0]["hook"]["outcome"] == "not_started"
    assert "1 of 1 hooks failed" in again.stdout


async def test_a_hanging_hook_is_killed_with_what_it_started(tmp_path: Path, make_fake) -> None:
    """The hook starts a child and both wait forever: at hooks.timeout the whole process group is
    killed, the run ends ok and the report says timed_out."""
    pids = tmp_path / "pids"
    hang = shlex.join(["sh", "-c", 'sleep 600 & echo "$$ $!" > "$1"; wait', "hang", str(pids)])
    async with make_fake(FakeConfig.small(n_datasets=1, files=2, rows=40, seed=2113)) as fp:
        run = await run_export(_with_hooks(settings_for(fp, tmp_path / "out"), on_batch_complete=hang, timeout=1.0))
    assert run.exit_code == EXIT_OK, run.errors
    [batch] = read_report(tmp_path / "out")["datasets"][0]["batches"]
    assert batch["status"] == "ok" and batch["hook"]["outcome"] == "timed_out" and batch["hook"]["exit_code"] is None
    assert batch["hook"]["seconds"] >= 1.0
    shell, sleep = map(int, pids.read_text().split())
    assert not _alive(shell)  # the hook: killed and reaped before the run ended
    wait_until(lambda: not _alive(sleep), "what the hook started is killed too", within=10)  # SIGKILL lands asynchronously


def _alive(pid: int) -> bool:
    """Running (a killed orphan may stay a zombie until whoever adopted it reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


async def test_a_failed_batch_runs_on_batch_failed_with_its_error(tmp_path: Path, make_fake) -> None:
    """A batch whose listing names unsafe files fails: on_batch_failed runs for it (STATUS failed,
    ERROR its first error), on_batch_complete for the good one, and nothing else."""
    cfg = FakeConfig(seed=2114, datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=30),
                                          DatasetSpec(files_per_dataset_file=2, rows_per_file=30, hostile_names=True)])
    async with make_fake(cfg) as fp:
        settings = _with_hooks(settings_for(fp, tmp_path / "out"), on_batch_complete=_recorder(tmp_path),
                               on_batch_failed=_recorder(tmp_path))
        run = await run_export(settings)
    assert run.exit_code == EXIT_FAILED
    report = read_report(tmp_path / "out")
    seen = _seen(tmp_path)
    statuses = {b["batch_id"]: b for d in report["datasets"] for b in d["batches"]}
    assert sorted(b["status"] for b in statuses.values()) == ["failed", "ok"] and set(seen) == set(statuses)
    for batch_id, batch in statuses.items():
        env = seen[batch_id]["env"]
        assert env["AEP_EXPORT_HOOK_STATUS"] == batch["status"]
        assert env["AEP_EXPORT_HOOK_EVENT"] == {"ok": "batch_complete", "failed": "batch_failed"}[batch["status"]]
        assert env["AEP_EXPORT_HOOK_ERROR"] == (batch["errors"][0] if batch["errors"] else "")
        assert seen[batch_id]["success_marker"] is (batch["status"] == "ok")
        assert batch["hook"]["event"] == env["AEP_EXPORT_HOOK_EVENT"] and batch["hook"]["outcome"] == "ok"
    assert not (tmp_path / "out" / report["datasets"][1]["dataset_id"] / seen_failed(statuses) / SUCCESS).exists()


def seen_failed(statuses: dict[str, Any]) -> str:
    return next(b for b, batch in statuses.items() if batch["status"] == "failed")


def test_hook_settings_come_from_config_environment_and_flags(tmp_path: Path) -> None:
    from engine.config import load_settings
    from engine.errors import ConfigError

    base = {"AEP_EXPORT_PLATFORM__ORG_ID": "X@AdobeOrg", "AEP_EXPORT_AUTH__CLIENT_ID": "c", "AEP_EXPORT_AUTH__CLIENT_SECRET": "s",
            "AEP_EXPORT_DATASETS": '["5cd9146b31dae914b75f654f"]'}
    s = load_settings(None, environ={**base, "AEP_EXPORT_HOOKS__ON_BATCH_FAILED": "notify --to ops", "AEP_EXPORT_HOOKS__TIMEOUT": "9",
                                     "AEP_EXPORT_HOOKS__PASS_ENV": "AWS_PROFILE, KUBE_NS", "AEP_EXPORT_METRICS__ADDR": ":9090",
                                     "AEP_EXPORT_HOOK_BATCH_ID": "told to a hook, not a setting"})
    assert (s.hooks.on_batch_failed, s.hooks.timeout, s.hooks.pass_env) == ("notify --to ops", 9.0, ["AWS_PROFILE", "KUBE_NS"])
    assert s.metrics.addr == ":9090" and s.metrics.enabled
    with pytest.raises(ConfigError, match="never handed to hooks"):
        load_settings(None, environ={**base, "AEP_EXPORT_HOOKS__PASS_ENV": "AEP_EXPORT_AUTH__CLIENT_SECRET"})
    with pytest.raises(ConfigError, match=r"metrics\.addr"):
        load_settings(None, environ={**base, "AEP_EXPORT_METRICS__ADDR": "nowhere"})
    p = run_cli("run", "--metrics-addr", "nowhere", "--org-id", "X@AdobeOrg", cwd=tmp_path,
                env=clean_env(**{k: v for k, v in base.items() if "ORG_ID" not in k}))
    assert p.returncode == 2 and "--metrics-addr nowhere" in p.stderr, p.stderr


def test_sigterm_while_a_hook_runs_kills_it_and_reports_it_interrupted(tmp_path: Path, threaded_fake) -> None:
    """The run has exported everything and waits for its hook when SIGTERM comes: the hook is
    killed, the report says interrupted (for the hook too), exit 143 (the signal landed while the
    hook ran: the hook had told its pid)."""
    import signal
    import subprocess
    import threading

    fp = threaded_fake(FakeConfig.small(n_datasets=1, files=2, rows=40, seed=2115))
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, tmp_path / "out"))
    told = tmp_path / "told"
    os.mkfifo(told)
    hang = shlex.join(["sh", "-c", 'echo $$ > "$1"; exec sleep 600', "hang", str(told)])
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "-c", str(config), "--json-logs", "--on-batch-complete", hang],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=_unblock_when_it_ends, args=(proc, told), daemon=True).start()
    try:
        with told.open() as f:  # blocks until the hook runs (or the run ended without it)
            text = f.read()
        assert text, f"the run ended (exit {proc.returncode}) before its hook ran"
        hook_pid = int(text.split()[0])
        assert _alive(hook_pid)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    report = read_report(tmp_path / "out")
    [batch] = report["datasets"][0]["batches"]
    assert report["status"] == "interrupted" and batch["status"] == "ok"
    assert batch["hook"]["outcome"] == "interrupted" and report["totals"]["hooks_failed"] == 1
    wait_until(lambda: not _alive(hook_pid), "the hook is killed", within=10)


def _unblock_when_it_ends(proc: Any, fifo: Path) -> None:
    """A run that ends without running its hook: open the FIFO's other end, so the test's read
    returns (empty) instead of waiting for the test's timeout."""
    proc.wait()
    with contextlib.suppress(OSError):  # ENXIO: nobody reads it any more
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
