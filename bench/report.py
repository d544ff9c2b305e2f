"""Table on stdout, JSON results, PNG chart of the ratios; machine description."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .harness import REPO

DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"


def _cmd_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    git = _cmd_version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "engine"], capture_output=True,
                           text=True, timeout=10).stdout.strip() != "" if git else None
    return {
        "hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
        "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu_model,
        "mem_gib": mem_gib, "aria2c": _cmd_version(["aria2c", "--version"]) if shutil.which("aria2c") else None,
        "curl": _cmd_version(["curl", "--version"]) if shutil.which("curl") else None,
        "git_commit": git, "engine_dirty": dirty,
        "time_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return f"{v:.{nd}f}"


def table(results: dict[str, Any]) -> str:
    """Per profile: the limit, one row per tool, the ratios. A peer's figures include its discovery
    (the `disc s` column); the engine's discovery is inside its own run."""
    lines = []
    for name, p in results["profiles"].items():
        lines.append("")
        lim = p.get("limit_mb_s")
        lines.append(f"== {name}: {p.get('description', '')}")
        if p.get("error"):
            lines.append(f"   FAILED: {p['error'][:300]}")
            continue
        lines.append(f"   {p.get('files')} files, {p.get('bytes', 0) / 2**20:.1f} MiB; limit "
                     f"{_f(lim) + ' MB/s' if lim else 'n/a'} ({p.get('limit_note', '')})")
        if p.get("one_connection_per_file_mb_s"):
            lines.append(f"   one connection per file cannot beat {p['one_connection_per_file_mb_s']:.1f} MB/s "
                         "(the largest part at the per-connection cap)")
        disc = p.get("discovery")
        if p.get("peers_listed"):
            lines.append(f"   peers handed the list of files (their discovery not counted); {p.get('concurrency')} connections")
        if disc:
            lines.append(f"   peers' discovery: {disc['median_s']:.2f} s median ({disc['requests']} requests on "
                         f"{disc['concurrency']} threads), added to each peer's time")
        resumed = any("refetched_bytes" in t for t in p["tools"].values())
        hdr = (f"{'profile':<12} {'tool':<10} {'MB/s':>8} {'files/s':>9} {'disc s':>7} {'CPU s/GiB':>10} "
               f"{'RSS MiB':>8} {'ok':>4}" + (f" {'refetched MiB':>14}" if resumed else ""))
        lines.append(hdr)
        for tool, t in p["tools"].items():
            if t.get("skipped"):
                lines.append(f"{name:<12} {tool:<10} {'skipped: ' + t['skipped']}")
                continue
            row = (f"{name:<12} {tool:<10} {_f(t['mb_s']):>8} {_f(t['files_s']):>9} {_f(t.get('discovery_s'), 2):>7} "
                   f"{_f(t['cpu_s_per_gib'], 2):>10} {_f(t['peak_rss_mib']):>8} {_f(t['ok']):>4}")
            if resumed:
                refetched = t.get("refetched_bytes")
                row += f" {_f(None if refetched is None else refetched / 2**20, 2):>14}"
            lines.append(row)
        ratios = ", ".join(f"{k} {_f(v, 2)}" for k, v in p.get("ratios", {}).items())
        lines.append(f"   ratios ({p.get('figure', 'mb_s')}): {ratios}")
        for kind, pairs in (p.get("time_ratios") or {}).items():
            if pairs:
                lines.append(f"   time ratios ({kind}, above 1: the engine took longer): "
                             + ", ".join(f"{k} {_f(v, 2)}" for k, v in pairs.items()))
        for key, t in (p.get("targets") or {}).items():
            verdict = "n/a" if t["met"] is None else "met" if t["met"] else "NOT met"
            lines.append(f"   target {key} <= {t['at_most']:g}: {_f(t['value'], 2)} {verdict}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def chart(results: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars: per profile, engine/peer and engine/limit ratios (1.0 = parity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = [n for n, p in results["profiles"].items() if p.get("ratios")]
    if not profiles:
        return None
    keys = sorted({k for n in profiles for k in results["profiles"][n]["ratios"]},
                  key=lambda k: (k == "engine/limit", k))
    width = 0.8 / max(1, len(keys))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(profiles) + 2), 4.5))
    for i, k in enumerate(keys):
        xs, ys = [], []
        for j, n in enumerate(profiles):
            v = results["profiles"][n]["ratios"].get(k)
            if v is not None:
                xs.append(j + (i - (len(keys) - 1) / 2) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width, label=k)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, rotation=90, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(profiles)), profiles)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 1.8)  # room for the bar labels
    ax.set_ylabel("engine / other (throughput ratio, log)")
    ax.set_title(f"aep-export benchmark ratios ({results.get('command', '')})", fontsize=9)
    ax.legend(fontsize=8, ncols=min(len(keys), 5), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
