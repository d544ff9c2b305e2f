"""Completion hooks (issue #21; aria2's --on-download-complete): a command run for each batch as soon
as it ends, exported and verified (hooks.on_batch_complete) or failed (hooks.on_batch_failed).

- No shell: the command line is split like a shell would (shlex) and run as is. Pipes, `&&` or
  variables in the command need a shell asked for by name: `sh -c '…'`.
- The hook is told about the batch in AEP_EXPORT_HOOK_* variables (HOOK_ENV). It inherits only
  a few harmless variables (BASIC_ENV) and those hooks.pass_env names, never AEP_EXPORT_* settings:
  no credential of the run reaches a hook unless named.
- A hook that fails (exit code, not found) is logged and reported (the batch's `hook` in
  report.json and `run --json`, totals.hooks_failed); it never fails or repeats the batch, nor
  changes the exit code. One that runs longer than hooks.timeout is killed (its process group).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import anyio
import structlog

from .config import HooksSettings, StoreURL
from .config_env import HOOK_ENV_PREFIX
from .layout import batch_folder
from .masking import mask
from .model import BatchRef
from .output.report import BatchOutcome

log = structlog.get_logger("aep_export.hooks")

# What every hook inherits from the run's environment (when set): enough to find programs and read
# text, nothing that authenticates. More with hooks.pass_env.
BASIC_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
HOOK_ENV = HOOK_ENV_PREFIX  # the prefix of what a hook is told (config_env does not take these for settings)
OUTPUT_TAIL = 2048  # bytes of a hook's output (stdout and stderr) kept for the log

COMPLETE, FAILED = "batch_complete", "batch_failed"
# A batch's final status -> the event its hook is run for (cancelled and replaced batches run none)
EVENTS = {"ok": COMPLETE, "failed": FAILED}


@dataclass(frozen=True)
class BatchEnded:
    """What a hook is told of its batch (every field an AEP_EXPORT_HOOK_* variable)."""

    event: str
    dataset_id: str
    dataset_name: str | None
    batch_id: str
    source: str
    status: str
    location: str  # the batch's folder (absolute) or s3://bucket/prefix/dataset/batch (in export.layout)
    out_dir: str
    files: int
    files_reused: int
    bytes: int
    rows: int | None
    error: str | None
    shard: str | None

    def environment(self) -> dict[str, str]:
        values = {"EVENT": self.event, "DATASET_ID": self.dataset_id, "DATASET_NAME": self.dataset_name or "",
                  "BATCH_ID": self.batch_id, "SOURCE": self.source, "STATUS": self.status, "LOCATION": self.location,
                  "OUT_DIR": self.out_dir, "FILES": str(self.files), "FILES_REUSED": str(self.files_reused), "BYTES": str(self.bytes),
                  "ROWS": "" if self.rows is None else str(self.rows), "ERROR": self.error or "", "SHARD": self.shard or ""}
        return {HOOK_ENV + k: v for k, v in values.items()}


def location_of(out_dir: Any, batch: BatchRef) -> str:
    """The batch's folder in the layout it was written in (export.layout: plain or hive)."""
    folder = batch_folder(batch.dataset_id, batch.batch_id, batch.layout)
    return f"{out_dir}/{folder}" if isinstance(out_dir, StoreURL) else os.path.abspath(os.path.join(out_dir, folder))


@dataclass
class HookResult:
    event: str
    outcome: str  # ok | failed | timed_out | not_started | interrupted
    exit_code: int | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def as_json(self) -> dict[str, Any]:
        return {"event": self.event, "outcome": self.outcome, "exit_code": self.exit_code, "seconds": round(self.seconds, 3),
                "error": self.error}


class Hooks:
    def __init__(self, settings: HooksSettings, environ: dict[str, str] | None = None):
        self.settings = settings
        self.commands = {COMPLETE: settings.on_batch_complete, FAILED: settings.on_batch_failed}
        source = os.environ if environ is None else environ
        self.inherited = {k: source[k] for k in (*BASIC_ENV, *settings.pass_env) if k in source}

    @property
    def any(self) -> bool:
        return any(self.commands.values())

    def command_for(self, status: str) -> str | None:
        event = EVENTS.get(status)
        return self.commands[event] if event else None

    async def run_for(self, bo: BatchOutcome, out_dir: Any, shard: str | None) -> None:
        """Run the hook of a batch that ended; its outcome goes into the batch's report (`hook`)."""
        b = bo.batch
        ended = BatchEnded(event=EVENTS[bo.status], dataset_id=b.dataset_id, dataset_name=bo.dataset_name, batch_id=b.batch_id,
                           source=b.source, status=bo.status, location=location_of(out_dir, b),
                           out_dir=str(out_dir), files=bo.tally.ok, bytes=bo.bytes,
                           files_reused=bo.tally.reused,
                           rows=bo.records_found, error=str(bo.errors[0]) if bo.errors else None, shard=shard)
        try:
            bo.hook = (await self.run(ended)).as_json()
        except anyio.get_cancelled_exc_class():  # the run was interrupted: the hook was killed
            bo.hook = HookResult(ended.event, "interrupted", None, 0.0, "the run was interrupted: killed").as_json()
            raise

    async def run(self, ended: BatchEnded) -> HookResult:
        """Run the event's command for one batch; never raises for what the hook does."""
        command = self.commands[ended.event]
        assert command is not None
        started = time.monotonic()
        with tempfile.TemporaryFile() as output:
            result = await self._run(shlex.split(command), {**self.inherited, **ended.environment()}, output, ended.event)
            result.seconds = time.monotonic() - started
            tail = _tail(output)
        event = "hook_done" if result.ok else "hook_failed"
        fields = {"hook": ended.event, "dataset": ended.dataset_id, "batch": ended.batch_id, "outcome": result.outcome,
                  "exit_code": result.exit_code, "seconds": round(result.seconds, 3), "output": mask(tail) or None}
        if result.ok:
            log.info(event, **fields)
        else:
            log.warning(event, **fields, error=result.error, note="the batch is kept as it is; a hook is never run again")
        return result

    async def _run(self, argv: list[str], env: dict[str, str], output: IO[bytes], event: str) -> HookResult:
        try:
            process = await anyio.open_process(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env,
                                               start_new_session=True)  # its own process group: killed whole on timeout
        except OSError as exc:  # not found, not executable
            return HookResult(event, "not_started", None, 0.0, f"{argv[0]}: {exc.strerror or exc}")
        try:
            with anyio.move_on_after(self.settings.timeout) as waiting:
                code = await process.wait()
            if waiting.cancelled_caught:
                await _kill(process)
                return HookResult(event, "timed_out", None, 0.0, f"still running after {self.settings.timeout:g} s (hooks.timeout): killed")
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await _kill(process)
            raise
        if code != 0:
            return HookResult(event, "failed", code, 0.0, f"exit code {code}" if code > 0 else f"killed by signal {-code}")
        return HookResult(event, "ok", 0, 0.0)


async def _kill(process: anyio.abc.Process) -> None:
    """The hook and whatever it started (one process group)."""
    with contextlib.suppress(ProcessLookupError):  # already gone, with its group
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


def _tail(output: IO[bytes]) -> str:
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - OUTPUT_TAIL))
    return output.read().decode("utf-8", "replace").strip()
