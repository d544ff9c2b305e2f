"""bench/profiling.py: top costs per file and per GiB from a speedscope profile (py-spy's output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import profiling

GiB = 1 << 30
ROOT = "/usr/lib/python3.11/"


def doc() -> dict:
    frames = [
        {"name": "<module>", "file": "/repo/engine/__main__.py", "line": 1},  # 0
        {"name": "Downloader.fetch", "file": "/repo/engine/transfer/download.py", "line": 10},  # 1
        {"name": "_hash_and_write", "file": "/repo/engine/transfer/partfile.py", "line": 85},  # 2
        {"name": "walk", "file": "/repo/engine/output/report.py", "line": 5},  # 3 (recursive)
        {"name": "_find_and_load", "file": "<frozen importlib._bootstrap>", "line": 1},  # 4
        {"name": "Condition.wait", "file": ROOT + "threading.py", "line": 295},  # 5 idle
        {"name": "StreamReader.read", "file": "/venv/lib/python3.11/site-packages/aiohttp/streams.py", "line": 3},  # 6
    ]
    main = {"type": "sampled", "name": 'Thread 1 "MainThread"', "unit": "seconds",
            "samples": [[0, 1, 2], [0, 1, 2], [0, 1, 6], [0, 3, 3, 3], [0, 4]],
            "weights": [0.5, 0.5, 0.25, 1.0, 0.75]}
    worker = {"type": "sampled", "name": 'Thread 2 "AnyIO worker thread"', "unit": "seconds",
              "samples": [[5], [2], []], "weights": [9.0, 1.0, 4.0]}
    return {"shared": {"frames": frames}, "profiles": [main, worker]}


def row(rows: list[dict], fn: str) -> dict:
    return next(r for r in rows if r["function"].startswith(fn + " "))


def test_self_and_total_seconds_per_function_with_per_file_and_per_gib_figures() -> None:
    s = profiling.summarize(doc(), files=10, nbytes=2 * GiB)
    assert s["sampled_s"] == pytest.approx(4.0)  # 3.0 main + 1.0 worker; the 9 s wait is idle
    assert s["idle_s"] == pytest.approx(9.0) and s["imports_s"] == pytest.approx(0.75)
    hw = row(s["top_self"], "_hash_and_write")
    assert hw["self_s"] == pytest.approx(2.0) and hw["total_s"] == pytest.approx(2.0)
    assert hw["ms_per_file"] == pytest.approx(200.0) and hw["s_per_gib"] == pytest.approx(1.0)
    fetch = row(s["top_total_engine"], "Downloader.fetch")
    assert fetch["self_s"] == 0 and fetch["total_s"] == pytest.approx(1.25)
    walk = row(s["top_self"], "walk")  # recursion: once per sample in total, the leaf gets the self time
    assert walk["total_s"] == pytest.approx(1.0) and walk["self_s"] == pytest.approx(1.0)
    assert all(r["function"].count("engine/") for r in s["top_total_engine"])
    assert row(s["top_self"], "StreamReader.read")["function"].endswith("(aiohttp/streams.py:3)")
    assert s["threads"] == {"MainThread": {"threads": 1, "busy_s": 3.0}, "AnyIO worker thread": {"threads": 1, "busy_s": 1.0}}
    assert "Condition.wait" not in {r["function"].split(" ")[0] for r in s["top_self"]}


def test_table_prints_both_lists() -> None:
    text = profiling.table("lan", profiling.summarize(doc(), files=10, nbytes=2 * GiB))
    assert "ms/file" in text and "s/GiB" in text and "_hash_and_write (engine/transfer/partfile.py:85)" in text


def test_py_spy_records_a_profile_the_summary_reads(tmp_path: Path) -> None:
    exe = profiling.py_spy()
    if exe is None:
        pytest.skip("py-spy is not installed (the bench extra installs it)")
    script = tmp_path / "busy.py"
    script.write_text("import time\ndef spin_here():\n    t = time.process_time()\n"
                      "    while time.process_time() - t < 0.6:\n        pass\nspin_here()\n")
    out = tmp_path / "p.speedscope.json"
    subprocess.run([*profiling.py_spy_prefix(exe, out), sys.executable, str(script)], check=True, capture_output=True, timeout=60)
    s = profiling.summarize_file(out, files=1, nbytes=GiB)
    top = s["top_self"][0]
    assert top["function"].startswith("spin_here ") and top["self_s"] > 0.3
