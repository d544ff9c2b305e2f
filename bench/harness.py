"""Process running and measuring: the fake platform process, timed tool runs, output checks.

Every child runs in its own session (process group) so a timeout or the end of a profile
can kill exactly what we started and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.checks.integrity import file_digest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EXPORT = "/data/foundation/export"


# ----------------------------------------------------------------------------- runs


@dataclass
class RunResult:
    """One measured process run (the whole tree: wait4 rusage covers reaped descendants)."""

    argv: list[str]
    rc: int | None  # None: killed after the timeout
    wall_s: float
    cpu_s: float  # user + sys
    peak_rss_mib: float
    timed_out: bool = False
    stderr_tail: str = ""
    interrupted: bool = False  # killed with SIGKILL on the caller's request (see run_measured)


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run_measured(argv: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None,
                 log_dir: Path | None = None, interrupt: Callable[[], bool] | None = None) -> RunResult:
    """Run argv to completion (or kill it after `timeout`), measured with wait4 by bench/measure.py.

    `interrupt`, if given, is polled every 10 ms while the tool runs; once it returns true the tool
    is killed with SIGKILL (through the launcher, which still reports its rusage).
    """
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="aep-bench-log-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path, res_path = log_dir / "stdout.log", log_dir / "stderr.log", log_dir / "rusage.json"
    launcher = [PYTHON, "-I", "-S", str(Path(__file__).with_name("measure.py")), str(res_path), str(timeout), "--"]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*launcher, *argv], cwd=cwd or REPO, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait(proc, timeout + 30, interrupt)  # the launcher enforces `timeout` itself; this is the backstop
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
        outer_wall = time.perf_counter() - t0
    _kill_group(proc.pid)  # stray descendants of a finished run, if any
    tail = err_path.read_text(errors="replace")[-2000:]
    if not tail.strip():
        tail = out_path.read_text(errors="replace")[-2000:]
    try:
        res = json.loads(res_path.read_text())
    except (OSError, ValueError):
        return RunResult(argv=argv, rc=None, wall_s=outer_wall, cpu_s=float("nan"), peak_rss_mib=float("nan"),
                         timed_out=True, stderr_tail=tail or f"launcher exit {proc.returncode}")
    return RunResult(argv=argv, rc=None if res["timed_out"] else res["rc"], wall_s=res["wall_s"],
                     cpu_s=res["utime"] + res["stime"], peak_rss_mib=res["maxrss_kib"] / 1024.0,
                     timed_out=res["timed_out"], stderr_tail=tail, interrupted=res.get("interrupted", False))


def _wait(proc: subprocess.Popen, timeout: float, interrupt: Callable[[], bool] | None) -> None:
    if interrupt is None:
        proc.wait(timeout=timeout)
        return
    deadline, sent = time.monotonic() + timeout, False
    while True:
        try:
            proc.wait(timeout=0.01)
            return
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise
        if not sent and interrupt():
            sent = True
            proc.send_signal(signal.SIGUSR1)  # the launcher kills the tool with SIGKILL


# ----------------------------------------------------------------------------- fake platform


@dataclass
class ExpectedFile:
    dataset_id: str
    batch_id: str
    dataset_file_id: str
    name: str
    size: int
    sha256: str

    @property
    def rel_path(self) -> Path:
        return Path(self.dataset_id) / self.batch_id / self.dataset_file_id / self.name


@dataclass
class RemoteFile:
    url: str
    rel_path: Path
    size: int


@dataclass
class Fake:
    """A running `python -m engine fake-platform` process."""

    args: list[str]
    proc: subprocess.Popen
    info: dict[str, Any]
    log: Path
    expected: list[ExpectedFile] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.expected)

    def counters(self) -> dict[str, Any]:
        """The fake's live download counters: {"bytes_sent": N, "bytes_by_file": {"<dsf id>/<name>": N}}."""
        with urllib.request.urlopen(self.info["stats_url"] + "/bytes", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc.pid)
                self.proc.wait(timeout=10)
        _kill_group(self.proc.pid)


def start_fake(fake_args: list[str], *, timeout: float = 900.0, log_dir: Path) -> Fake:
    """Start the fake as a separate process and read its JSON line (generation may take a while).

    The process is `python -m bench.fake_server`: the product's fake platform plus a stats port.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "fake.stderr.log"
    argv = [PYTHON, "-m", "bench.fake_server", "--port", "0", *fake_args]
    err = open(log, "wb")  # noqa: SIM115 - the fake's log stays open for the process's lifetime; closed in Fake.stop
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    err.close()
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    fake = Fake(args=argv, proc=proc, info={}, log=log)
    if not line or not line[0].strip():
        fake.stop()
        raise RuntimeError(f"fake platform did not start ({' '.join(argv)}): {log.read_text(errors='replace')[-1500:]}")
    try:
        fake.info = json.loads(line[0])
        fake.expected = expected_files(fake_args, Path(fake.info["data_dir"]))
    except BaseException:
        fake.stop()
        raise
    return fake


def expected_files(fake_args: list[str], data_dir: Path) -> list[ExpectedFile]:
    """What a correct export contains, from the fake's own (deterministic) data model.

    The model is rebuilt in-process from the same arguments; with the fake's cache already
    generated, materialize() only reads its manifest (sizes and sha256s) and generates nothing.
    """
    sys.path.insert(0, str(REPO))
    from engine.fake.data import Model

    from .fake_server import config_from_argv

    cfg, _ = config_from_argv(["--port", "0", *fake_args])
    model = Model(cfg.seed, cfg.datasets, data_dir)
    model.materialize()
    return [ExpectedFile(e.dataset_id, e.batch_id, e.dataset_file_id, e.name, e.size, e.sha256)
            for e in model.expected_files()]


# ----------------------------------------------------------------------------- checks and disk


def sha256_file(path: Path) -> str:
    return file_digest(path).hex()


def check_outputs(out_dir: Path, expected: list[ExpectedFile]) -> tuple[int, list[str]]:
    """(files identical, problems). Files are looked up at <ds>/<batch>/<dsf>/<name>, else by name."""
    by_name: dict[str, Path] | None = None
    paths: list[Path] = []
    for e in expected:
        path = out_dir / e.rel_path
        if not path.is_file():
            if by_name is None:
                by_name = {p.name: p for p in out_dir.rglob("*") if p.is_file()}
            path = by_name.get(e.name, path)
        paths.append(path)

    def check(pe: tuple[Path, ExpectedFile]) -> str | None:
        path, e = pe
        if not path.is_file():
            return f"missing {e.rel_path}"
        if path.stat().st_size != e.size:
            return f"size {path.stat().st_size} != {e.size}: {e.rel_path}"
        if sha256_file(path) != e.sha256:
            return f"sha256 differs: {e.rel_path}"
        return None

    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:  # sha256 releases the GIL
        problems = [p for p in pool.map(check, zip(paths, expected, strict=False)) if p]
    return len(expected) - len(problems), problems


def drop_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def dd_write(dir_: Path, mib: int, timeout: float) -> RunResult:
    """Raw sequential write of `mib` MiB with fdatasync: the disk limit for the lan profile."""
    target = dir_ / "dd.bin"
    try:
        return run_measured(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mib}", "conv=fdatasync"],
                            timeout=timeout, log_dir=dir_ / "dd-log")
    finally:
        target.unlink(missing_ok=True)
        drop_tree(dir_ / "dd-log")


def bench_tmp_root() -> Path:
    root = Path(os.environ.get("AEP_BENCH_TMP") or tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="aep-bench-", dir=root))
