"""Start-up: from `exec` to the engine's first request, `python -m bench.startup [--reps N] [--json PATH]`.

The harness listens on a loopback port that the config names as the gateway and IMS, spawns
`python -m engine run --config …` and takes the time from just before the spawn to the first bytes
of the engine's first request (the IMS token), then kills the engine: what comes after is not
start-up. Side by side, alternating within each repetition, the same stopwatch on

- `aiohttp`: a bare `python -c 'import aiohttp; connect'`, the floor a run cannot go below
  (aiohttp is needed for the first request);
- `python`: `python -c 'connect'`, the interpreter alone;
- `engine@REF` (`--engine-ref REF`): the engine as of another commit (bench/refs.py).

Prints the medians (wall to the first request, and the child's CPU until then) and the paired
ratios engine / aiohttp (wall and CPU), which is what a shared, noisy machine can compare (tests/test_startup.py holds it).
`--imports`: what the engine imports before its first request that a bare aiohttp does not.
`--ims-delay S`: also the time to the first gateway request, the harness answering the token
request after S seconds: what a user waits for, IMS being an internet round trip away (the token
request overlaps the engine's imports since issue #20: engine/platform/early_token.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATASETS = ("5f0c3a1e2b4d6f8a9c0e1d2f", "6a1b2c3d4e5f6a7b8c9d0e1f")
CONNECT = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).sendall(b'POST / HTTP/1.1\\r\\n')"


@dataclass
class Sample:
    wall_s: float  # spawn -> first bytes of the first request
    cpu_s: float  # the child's user + system CPU until it was killed right after


def engine_config(port: int, out_dir: Path) -> str:
    url = f"http://127.0.0.1:{port}"
    ds = "".join(f'\n[[datasets]]\nid = "{d}"\n' for d in DATASETS)
    return (f'[platform]\nurl = "{url}"\norg_id = "0000@AdobeOrg"\nsandbox = "prod"\n\n'
            f'[auth]\nclient_id = "startup-bench"\nclient_secret = "not-a-secret"\nims_url = "{url}"\n\n'
            f'[export]\nout_dir = "{out_dir}"\nconcurrency = 16\n{ds}')


def commands(port: int, work: Path, refs: dict[str, Path]) -> dict[str, tuple[list[str], Path]]:
    """label -> (argv, cwd). The engine runs as the bench runs it (bench/tools.py: run_engine)."""
    config = work / "engine.toml"
    config.write_text(engine_config(port, work / "out"))
    engine = [sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"]
    out = {"engine": (engine, REPO)}
    out.update({label: (engine, tree) for label, tree in refs.items()})
    out["aiohttp"] = ([sys.executable, "-c", "import aiohttp; " + CONNECT, str(port)], work)
    out["python"] = ([sys.executable, "-c", CONNECT, str(port)], work)
    return out


def time_to_first_request(argv: list[str], cwd: Path, server: socket.socket, timeout: float = 30.0) -> Sample:
    """Spawn argv, wait for its first request's bytes on `server`, kill it; (wall, CPU) until then."""
    server.settimeout(timeout)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            first = conn.recv(1)
            wall = time.perf_counter() - t0
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"no request within {timeout:g} s: {proc.communicate()[1][-800:]!r}") from None
    finally:  # not proc.poll(): it would reap a child that already ended (python -c 'connect') and lose its CPU time
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    _, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by wait4 above: Popen must not wait for it again
    if proc.stderr is not None:
        proc.stderr.close()
    if not first:
        raise RuntimeError(f"{argv[:4]}: connected and sent nothing")
    return Sample(wall, usage.ru_utime + usage.ru_stime)


def time_to_gateway(argv: list[str], cwd: Path, server: socket.socket, ims_delay: float, timeout: float = 30.0) -> float:
    """Spawn argv, answer its token request with a token `ims_delay` seconds after it came (IMS's
    round trip), and time spawn -> the first bytes of the next request (the gateway's first call)."""
    server.settimeout(timeout)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ims, _ = server.accept()
        ims.settimeout(timeout)
        _read_request(ims)
        answer = threading.Timer(ims_delay, _answer_token, (ims,))
        answer.start()
        gateway, _ = server.accept()
        with gateway:
            gateway.settimeout(timeout)
            if not gateway.recv(1):
                raise RuntimeError(f"{argv[:4]}: connected and sent nothing after the token")
            took = time.perf_counter() - t0
        answer.join()
        return took
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536) or b" " * length


def _answer_token(conn: socket.socket) -> None:
    body = json.dumps({"access_token": "startup-bench-token", "token_type": "bearer", "expires_in": 86399}).encode()
    with conn:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def measure_to_gateway(reps: int, refs: dict[str, Path], ims_delay: float, warmup: int = 1) -> dict[str, Any]:
    """`--ims-delay`: each engine's spawn -> first gateway request, IMS answering after ims_delay (medians)."""
    with tempfile.TemporaryDirectory(prefix="aep-startup-") as tmp, socket.create_server(("127.0.0.1", 0)) as server:
        cmds = {k: v for k, v in commands(server.getsockname()[1], Path(tmp), refs).items() if k.startswith("engine")}
        runs: dict[str, list[float]] = {label: [] for label in cmds}
        for rnd in range(warmup + reps):
            for label, (argv, cwd) in cmds.items():
                took = time_to_gateway(argv, cwd, server, ims_delay)
                if rnd >= warmup:
                    runs[label].append(took)
    return {label: {"wall_s": round(statistics.median(r), 4), "runs": [round(x, 4) for x in r]} for label, r in runs.items()}


def imports_before_first_request(argv: list[str], cwd: Path, server: socket.socket, timeout: float = 30.0) -> dict[str, int]:
    """The modules argv has imported by its first request -> their own import time in µs (-X importtime)."""
    server.settimeout(timeout)
    proc = subprocess.Popen([argv[0], "-X", "importtime", *argv[1:]], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            conn.recv(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = proc.communicate()[1]
    modules: dict[str, int] = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            own, _cumulative, name = line.removeprefix("import time:").split("|")
            if own.strip().isdigit():  # not the header line
                modules[name.strip()] = int(own)
    return modules


def extra_imports(refs: dict[str, Path]) -> dict[str, int]:
    """What the engine imports before its first request that a bare aiohttp import does not."""
    with tempfile.TemporaryDirectory(prefix="aep-startup-") as tmp, socket.create_server(("127.0.0.1", 0)) as server:
        cmds = commands(server.getsockname()[1], Path(tmp), refs)
        engine = imports_before_first_request(*cmds["engine"], server)
        bare = imports_before_first_request(*cmds["aiohttp"], server)
    return {name: us for name, us in engine.items() if name not in bare}


def measure(reps: int, refs: dict[str, Path], warmup: int = 1) -> dict[str, list[Sample]]:
    """`reps` alternating rounds over every command (after `warmup` untimed ones: a warm page cache)."""
    with tempfile.TemporaryDirectory(prefix="aep-startup-") as tmp, socket.create_server(("127.0.0.1", 0)) as server:
        cmds = commands(server.getsockname()[1], Path(tmp), refs)
        samples: dict[str, list[Sample]] = {label: [] for label in cmds}
        for rnd in range(warmup + reps):
            for label, (argv, cwd) in cmds.items():
                s = time_to_first_request(argv, cwd, server)
                if rnd >= warmup:
                    samples[label].append(s)
        return samples


def summary(samples: dict[str, list[Sample]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, runs in samples.items():
        out[label] = {"wall_s": round(statistics.median(s.wall_s for s in runs), 4),
                      "cpu_s": round(statistics.median(s.cpu_s for s in runs), 4),
                      "runs": [[round(s.wall_s, 4), round(s.cpu_s, 4)] for s in runs]}
    base = samples["aiohttp"]
    for label in samples:
        if label.startswith("engine"):  # paired by round: each ratio from runs side by side
            pairs = list(zip(samples[label], base, strict=True))
            out[label]["over_aiohttp"] = round(statistics.median(a.wall_s / b.wall_s for a, b in pairs), 3)
            out[label]["cpu_over_aiohttp"] = round(statistics.median(a.cpu_s / b.cpu_s for a, b in pairs), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=10, help="alternating rounds (default 10)")
    p.add_argument("--engine-ref", nargs="+", default=[], metavar="REF", help="also the engine as of these commits")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--ims-delay", type=float, metavar="S",
                   help="also: exec -> the first gateway request, the harness answering the token request after S seconds "
                        "(IMS's round trip over the internet: 0.1-0.3)")
    p.add_argument("--imports", action="store_true",
                   help="instead: what the engine imports before its first request beyond a bare aiohttp, by package")
    args = p.parse_args(argv)
    if args.imports:
        return show_imports()
    refs: dict[str, Path] = {}
    if args.engine_ref:
        from .refs import checkout

        refs = {f"engine@{ref}": checkout(ref) for ref in args.engine_ref}
    result = {"command": "python -m bench.startup " + " ".join(sys.argv[1:] if argv is None else argv),
              "reps": args.reps, "tools": summary(measure(args.reps, refs))}
    print(f"{'tool':<22} {'exec -> first request s':>24} {'CPU s':>8} {'/ aiohttp: wall':>16} {'CPU':>6}")
    for label, t in result["tools"].items():
        wall, cpu = t.get("over_aiohttp"), t.get("cpu_over_aiohttp")
        print(f"{label:<22} {t['wall_s']:>24.3f} {t['cpu_s']:>8.3f} {'' if wall is None else f'{wall:.2f}':>16} "
              f"{'' if cpu is None else f'{cpu:.2f}':>6}")
    if args.ims_delay is not None:
        result["ims_delay_s"] = args.ims_delay
        result["to_gateway"] = measure_to_gateway(args.reps, refs, args.ims_delay)
        print(f"\nexec -> first gateway request, IMS answering after {args.ims_delay:g} s:")
        for label, t in result["to_gateway"].items():
            print(f"{label:<22} {t['wall_s']:>24.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def show_imports() -> int:
    extra = extra_imports({})
    packages: dict[str, list[int]] = {}
    for name, us in extra.items():
        key = ".".join(name.split(".")[:2]) if name.startswith("engine.") else name.split(".")[0]
        packages.setdefault(key, []).append(us)
    print(f"{len(extra)} modules beyond a bare aiohttp import, {sum(extra.values()) / 1000:.1f} ms of their own import time:")
    for key, times in sorted(packages.items(), key=lambda kv: -sum(kv[1]))[:25]:
        print(f"{sum(times) / 1000:8.1f} ms {len(times):4d} modules  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
