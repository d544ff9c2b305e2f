"""Where the engine's time goes: one extra engine run under py-spy, and its top costs per file and per GiB.

py-spy samples the engine from outside (no code change, every thread: the event loop and the
threads that hash and write), writes a speedscope profile beside the results JSON and this module
reads it back into a table: for each function the seconds it ran itself (self) and with its callees
(total), divided by the files and by the GiB of the run. Samples of a thread blocked in a wait
(a pool thread waiting for work, the event loop in select) are left out and summed as `idle_s`,
so the seconds here are busy thread-seconds (close to CPU seconds), not wall time.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

GiB = 1 << 30
RATE_HZ = 250  # samples per second (py-spy's default is 100; runs here last a few seconds)
IMPORT_FRAMES = ("_find_and_load", "_call_with_frames_removed")  # importlib: the fixed start-up cost
# innermost frames of a thread that waits rather than works (py-spy samples some of them as active)
IDLE_LEAVES = (("threading.py", ".wait"), ("selectors.py", ".select"), ("queue.py", "Queue.get"))
TOP = 15


def py_spy() -> str | None:
    """The py-spy executable (the `bench` extra installs it next to this interpreter)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def py_spy_prefix(exe: str, out: Path) -> list[str]:
    """argv prefix that runs a command under py-spy, writing a speedscope profile to `out`."""
    return [exe, "record", "--format", "speedscope", "--function", "--rate", str(RATE_HZ),
            "--output", str(out), "--"]


def short_path(file: str) -> str:
    """engine/transfer/download.py, aiohttp/streams.py, asyncio/tasks.py: the part that names the module."""
    if "/site-packages/" in file:
        return file.rsplit("/site-packages/", 1)[1]
    m = re.search(r"/lib/python3[.0-9]*/(.+)$", file)
    if m:
        return m.group(1)
    if "/engine/" in file:
        return "engine/" + file.rsplit("/engine/", 1)[1]
    return file


def frame_label(frame: dict[str, Any]) -> str:
    line = frame.get("line")
    return f"{frame.get('name', '?')} ({short_path(str(frame.get('file') or '?'))}{':' + str(line) if line else ''})"


def is_idle(frame: dict[str, Any]) -> bool:
    file, name = str(frame.get("file") or ""), str(frame.get("name") or "")
    return any(file.endswith(f) and name.endswith(n) for f, n in IDLE_LEAVES)


def thread_name(profile_name: str) -> str:
    """py-spy names a profile `Thread 1234 "AnyIO worker thread"`; the quoted part groups threads."""
    m = re.search(r'"(.*)"', profile_name)
    return (m.group(1) if m else profile_name) or "(unnamed)"


def summarize(doc: dict[str, Any], files: int, nbytes: int, top: int = TOP) -> dict[str, Any]:
    """Self and total seconds per function from a speedscope document (py-spy's sampled profiles).

    Each sample is a stack, root first, weighted in seconds. Self time goes to the innermost frame;
    total time to every distinct function on the stack (once per sample, so recursion is not counted
    twice). Samples under an import are also summed as `imports_s`: a fixed cost per run, neither
    per file nor per GiB.
    """
    frames = doc["shared"]["frames"]
    labels = [frame_label(f) for f in frames]
    is_import = [f.get("name") in IMPORT_FRAMES for f in frames]
    idle_leaf = [is_idle(f) for f in frames]
    self_s: dict[str, float] = defaultdict(float)
    total_s: dict[str, float] = defaultdict(float)
    threads: dict[str, dict[str, float]] = {}
    sampled = imports = idle = 0.0
    for prof in doc.get("profiles", []):
        busy = 0.0
        for stack, weight in zip(prof.get("samples", []), prof.get("weights", []), strict=False):
            if not stack:
                continue
            if idle_leaf[stack[-1]]:
                idle += weight
                continue
            busy += weight
            self_s[labels[stack[-1]]] += weight
            for label in {labels[i] for i in stack}:
                total_s[label] += weight
            if any(is_import[i] for i in stack):
                imports += weight
        group = threads.setdefault(thread_name(prof.get("name", "")), {"threads": 0, "busy_s": 0.0})
        group["threads"] += 1
        group["busy_s"] = round(group["busy_s"] + busy, 3)
        sampled += busy
    per_file = 1000.0 / files if files else None  # ms per file
    per_gib = GiB / nbytes if nbytes else None  # s per GiB

    def rows(table: dict[str, float], only: str = "") -> list[dict[str, Any]]:
        ranked = sorted(((k, v) for k, v in table.items() if only in k), key=lambda kv: kv[1], reverse=True)[:top]
        return [{"function": k, "self_s": round(self_s.get(k, 0.0), 3), "total_s": round(total_s.get(k, 0.0), 3),
                 "ms_per_file": round(table[k] * per_file, 3) if per_file else None,
                 "s_per_gib": round(table[k] * per_gib, 3) if per_gib else None} for k, _ in ranked]

    return {
        "sampled_s": round(sampled, 3), "idle_s": round(idle, 3), "imports_s": round(imports, 3),
        "files": files, "bytes": nbytes,
        "rate_hz": RATE_HZ, "threads": threads,
        "top_self": rows(self_s),  # ms_per_file / s_per_gib computed from self_s
        "top_total_engine": rows(total_s, only="engine/"),  # ... and from total_s here
    }


def summarize_file(path: Path, files: int, nbytes: int) -> dict[str, Any]:
    return summarize(json.loads(path.read_text()), files, nbytes)


def table(name: str, summary: dict[str, Any]) -> str:
    """The summary as text: where a profile's busy thread-seconds went."""
    lines = [f"\n== {name}: engine profile {summary.get('file', '')}",
             f"   {summary['sampled_s']:.2f} busy thread-s sampled at {summary['rate_hz']} Hz over "
             f"{summary['files']} files, {summary['bytes'] / GiB:.3f} GiB; imports {summary['imports_s']:.2f} s "
             f"(fixed per run); threads: " + ", ".join(f"{k} x{v['threads']} {v['busy_s']:.2f}s"
                                                        for k, v in summary["threads"].items())]
    for key, what in (("top_self", "self"), ("top_total_engine", "total, engine/ functions")):
        lines.append(f"   {'function (' + what + ')':<72} {'self s':>7} {'total s':>7} {'ms/file':>8} {'s/GiB':>7}")
        for r in summary[key]:
            lines.append(f"   {r['function'][:72]:<72} {r['self_s']:>7.3f} {r['total_s']:>7.3f} "
                         f"{_num(r['ms_per_file']):>8} {_num(r['s_per_gib']):>7}")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
