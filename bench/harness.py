"""Process running and measuring: the fake platform process, timed tool runs, output checks.

Every child runs in its own session (process group) so a timeout or the end of a profile
can kill exactly what we started and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
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


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_measured(argv: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None,
                 log_dir: Path | None = None) -> RunResult:
    """Run argv to completion (or kill it after `timeout`), measured with wait4 by bench/measure.py."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="aep-bench-log-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path, res_path = log_dir / "stdout.log", log_dir / "stderr.log", log_dir / "rusage.json"
    launcher = [PYTHON, "-I", "-S", str(Path(__file__).with_name("measure.py")), str(res_path), str(timeout), "--"]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*launcher, *argv], cwd=cwd or REPO, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=timeout + 30)  # the launcher enforces `timeout` itself; this is the backstop
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
                     timed_out=res["timed_out"], stderr_tail=tail)


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

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc.pid)
                self.proc.wait(timeout=10)
        _kill_group(self.proc.pid)


def start_fake(fake_args: list[str], *, timeout: float = 900.0, log_dir: Path) -> Fake:
    """Start the fake as a separate process and read its JSON line (generation may take a while)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "fake.stderr.log"
    argv = [PYTHON, "-m", "engine", "fake-platform", "--port", "0", *fake_args]
    err = open(log, "wb")
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
    from engine.fake import cli as fake_cli
    from engine.fake.data import Model

    p = argparse.ArgumentParser()
    fake_cli.configure(p)
    cfg = fake_cli.config_from_args(p.parse_args(["--port", "0", *fake_args]))
    model = Model(cfg.seed, cfg.datasets, data_dir)
    model.materialize()
    return [ExpectedFile(e.dataset_id, e.batch_id, e.dataset_file_id, e.name, e.size, e.sha256)
            for e in model.expected_files()]


# ----------------------------------------------------------------------------- discovery for the peers


def _http(req: urllib.request.Request, tries: int = 8) -> bytes:
    """A small retrying fetch (the chaos profile throttles and fails listings too)."""
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 500, 502, 503, 504) or attempt == tries - 1:
                raise
            wait = float(exc.headers.get("Retry-After", "0") or 0) if (exc.headers.get("Retry-After") or "").isdigit() else 0.3
            time.sleep(min(max(wait, 0.2), 5))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == tries - 1:
                raise
            time.sleep(0.3)
    raise AssertionError("unreachable")


def get_token(fake: Fake) -> str:
    body = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": fake.info["client_id"],
                                   "client_secret": fake.info["client_secret"], "scope": "openid,AdobeID"}).encode()
    req = urllib.request.Request(fake.info["ims_url"] + "/ims/token/v3", data=body, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    return json.loads(_http(req))["access_token"]


def gateway_headers(fake: Fake, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "x-api-key": fake.info["client_id"],
            "x-gw-ims-org-id": fake.info["org_id"], "x-sandbox-name": fake.info["sandbox"]}


def discover(fake: Fake, headers: dict[str, str]) -> list[RemoteFile]:
    """Part URLs of every expected file, from the fake's listing endpoint (paged), as peers would get them.

    Which batch is the latest successful one comes from the data model (peers get that for free).
    """
    by_dsf: dict[str, dict[str, ExpectedFile]] = {}
    for e in fake.expected:
        by_dsf.setdefault(e.dataset_file_id, {})[e.name] = e

    def list_dsf(dsf_id: str) -> list[RemoteFile]:
        url: str | None = f"{fake.url}{EXPORT}/files/{urllib.parse.quote(dsf_id)}"
        out: list[RemoteFile] = []
        while url:
            body = json.loads(_http(urllib.request.Request(url, headers=headers)))
            items = body if isinstance(body, list) else body.get("data", [])
            for it in items:
                e = by_dsf[dsf_id].get(it.get("name", ""))
                if e is not None:
                    out.append(RemoteFile(it["_links"]["self"]["href"], e.rel_path, e.size))
            url = None if isinstance(body, list) else (body.get("_links", {}).get("next") or {}).get("href")
            if url and url.startswith("/"):
                url = fake.url + url
        return out

    with ThreadPoolExecutor(8) as pool:
        files = [f for chunk in pool.map(list_dsf, list(by_dsf)) for f in chunk]
    if len(files) != len(fake.expected):
        raise RuntimeError(f"discovery found {len(files)} of {len(fake.expected)} expected files")
    return files


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
        problems = [p for p in pool.map(check, zip(paths, expected)) if p]
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
