"""`python -m bench [--quick] [--profiles ...] [--json PATH] [--reps N] [--tools ...] [--profile-engine]`

Per profile: start the fake platform process, let every tool download the same files, alternating
tools within each repetition, and report medians plus engine/peer and engine/limit ratios.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from . import profiling, refs, report
from .profiles import PROFILES, SKEW, Profile, build, one_connection_bound
from .runner import Variant, log, run_profile, summarize
from .tools import TOOLS

DEFAULT_CONCURRENCY = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small data, 2 repetitions (under two minutes warm)")
    p.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES), metavar="P",
                   help=f"profiles to run (default: all of {' '.join(PROFILES)})")
    p.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS), metavar="T",
                   help=f"tools to compare (default: {' '.join(TOOLS)})")
    p.add_argument("--reps", type=int, help="repetitions per tool (default: quick 2, full 5)")
    p.add_argument("--concurrency", "-C", type=int,
                   help="connections for the engine and every peer (default: the profile's, else 16)")
    p.add_argument("--json", type=Path, default=report.DEFAULT_JSON, help="results file (a PNG chart goes next to it)")
    p.add_argument("--engine-ref", nargs="+", default=[], metavar="REF",
                   help="also run the engine as of these git commits (e.g. HEAD~3), as tools named engine@REF, "
                        "alternating with the others: a before/after in one run")
    p.add_argument("--engine-with", nargs="+", default=[], metavar="KEY=VALUE",
                   help="also run the engine with this [export] setting (e.g. event_loop=uvloop), as a tool "
                        "named engine+KEY=VALUE, alternating with the others: a settings A/B in one run")
    p.add_argument("--engine-metrics", nargs="?", const="", metavar="PUSHGATEWAY_URL",
                   help="also run the engine with its Prometheus metrics on, as a tool named engine+metrics: served on "
                        "a loopback port and, given a Pushgateway's URL, pushed to it every second (issue #21: their cost)")
    p.add_argument("--profile-engine", action="store_true",
                   help="after the measured runs of each profile, one more engine run under py-spy: a speedscope "
                        "profile beside the JSON (<json stem>.<profile>.speedscope.json) and its top costs per "
                        "file and per GiB")
    return p.parse_args(argv)


def _export_setting(kv: str) -> dict[str, object]:
    key, sep, value = kv.partition("=")
    if not sep:
        raise SystemExit(f"--engine-with {kv!r}: expected KEY=VALUE")
    parsed: object = {"true": True, "false": False}.get(value.lower(), value)
    if isinstance(parsed, str) and parsed.lstrip("-").replace(".", "", 1).isdigit():
        parsed = float(parsed) if "." in parsed else int(parsed)
    return {key: parsed}


def metrics_settings(push_url: str) -> dict[str, object]:
    """[metrics] for the engine+metrics variant: served on a free loopback port (nobody scrapes it:
    the HTTP trace and the server thread are what it costs), and pushed every second when a
    Pushgateway is given (the collector then reads every figure once a second)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings: dict[str, object] = {"metrics.addr": f"127.0.0.1:{port}"}
    if push_url:
        settings |= {"metrics.push": push_url, "metrics.push_interval": 1.0}
    return settings


def limit_for(profile: Profile, samples: dict[str, list[dict[str, Any]]], concurrency: int) -> tuple[float | None, str]:
    if profile.limit_kind == "disk":
        runs = samples.get("dd") or []
        if not runs:
            return None, "dd not measured"
        mbs = sorted(r["mb_s"] for r in runs)[len(runs) // 2]
        return round(mbs, 1), "raw disk write of the same bytes: dd bs=1M conv=fdatasync (median)"
    if profile.limit_kind == "network" and profile.cap_bps:
        return round(concurrency * profile.cap_bps / 1e6, 1), f"{concurrency} connections x {profile.cap_bps / 1e6:g} MB/s cap"
    return None, "request bound: no byte-rate limit; compare files/s"


def discovery_figures(tools: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    """The peers' discovery as a figure of its own: median of every full listing the harness timed."""
    runs = [d for t in tools.values() for s in t.get("runs", []) for d in s.get("discoveries_s") or []]
    requests = [s["discovery_requests"] / len(s["discoveries_s"]) for t in tools.values()
                for s in t.get("runs", []) if s.get("discoveries_s")]
    if not runs:
        return None
    return {"median_s": round(statistics.median(runs), 3), "min_s": round(min(runs), 3), "n": len(runs),
            "requests": round(statistics.median(requests)), "concurrency": concurrency,
            "note": "added to every peer's wall time (and its CPU to theirs); the engine's own is inside its run"}


def ratios(tools: dict[str, Any], limit: float | None, figure: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    eng = tools.get("engine")
    if not eng or eng.get("skipped"):
        return out
    for name, t in tools.items():
        if name == "engine" or t.get("skipped"):
            continue
        # a ratio against a peer that did not produce correct files is not a comparison
        out[f"engine/{name}"] = round(eng[figure] / t[figure], 3) if t["ok"] and t[figure] else None
    if limit:
        out["engine/limit"] = round(eng["mb_s"] / limit, 3)
    return out


def time_ratios(tools: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """engine / peer in wall time and in CPU time (above 1: the engine took longer), per correct peer."""
    out: dict[str, dict[str, float | None]] = {"wall": {}, "cpu": {}}
    eng = tools.get("engine")
    if not eng or eng.get("skipped"):
        return out
    for name, t in tools.items():
        if name == "engine" or t.get("skipped"):
            continue
        for kind, key in (("wall", "wall_s"), ("cpu", "cpu_s")):
            out[kind][f"engine/{name}"] = round(eng[key] / t[key], 3) if t["ok"] and t.get(key) else None
    return out


def target_figures(targets: dict[str, float], ratios: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Each target ("wall engine/aria2c": at most 1.0) beside the ratio measured, and whether it holds."""
    out: dict[str, Any] = {}
    for key, at_most in targets.items():
        kind, pair = key.split(" ", 1)
        value = ratios.get(kind, {}).get(pair)
        out[key] = {"at_most": at_most, "value": value, "met": None if value is None else value <= at_most}
    return out


def profile_entry(profile: Profile, raw: dict[str, Any], tool_names: list[str], concurrency: int,
                  quick: bool) -> dict[str, Any]:
    """A profile's results: medians per tool (peers with their discovery), limit, ratios, discovery."""
    tools: dict[str, Any] = {}
    for t in tool_names:
        if t in raw["notes"]:
            tools[t] = {"mb_s": None, "files_s": None, "cpu_s_per_gib": None, "peak_rss_mib": None,
                        "ok": None, "skipped": raw["notes"][t]}
        else:
            tools[t] = summarize(raw["samples"][t], raw["bytes"], raw["files"])
    limit, note = limit_for(profile, raw["samples"], concurrency)
    entry: dict[str, Any] = {
        "limit_mb_s": limit, "limit_note": note, "tools": tools,
        "ratios": ratios(tools, limit, profile.figure), "figure": profile.figure,
        "description": profile.description, "fake_args": profile.fake_args,
        "bytes": raw["bytes"], "files": raw["files"],
        "discovery": discovery_figures(tools, concurrency),
        "concurrency": concurrency, "peers_listed": profile.peers_listed,
        "time_ratios": time_ratios(tools),
    }
    if profile.targets:
        entry["targets"] = target_figures(profile.targets, entry["time_ratios"])
    if profile.name == "skew" and profile.cap_bps:
        entry["one_connection_per_file_mb_s"] = round(one_connection_bound(
            SKEW[0] if quick else SKEW[1], concurrency, profile.cap_bps), 1)
    if "dd" in raw["samples"]:
        entry["dd_runs"] = raw["samples"]["dd"]
    for key in ("engine_profile", "engine_profiles"):  # the engine's; other engine variants' by label
        if raw.get(key):
            entry[key] = raw[key]
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t_start = time.perf_counter()
    results: dict[str, Any] = {"profiles": {}, "machine": report.machine(), "command": command.strip(),
                               "quick": args.quick, "reps": reps, "concurrency": args.concurrency or DEFAULT_CONCURRENCY}
    previous = report.load_json(args.json) or {}
    if "memory" in previous:  # measured by `python -m bench.memory`; kept until re-measured
        results["memory"] = previous["memory"]
    for name in args.profiles:
        profile = build(name, args.quick)
        log(f"[{name}] {profile.description}")
        concurrency = args.concurrency or profile.concurrency or DEFAULT_CONCURRENCY
        variants = [Variant(t, t) for t in args.tools]
        variants += [Variant(f"engine@{ref}", "engine", repo=refs.checkout(ref)) for ref in args.engine_ref]
        variants += [Variant(f"engine+{kv}", "engine", _export_setting(kv)) for kv in args.engine_with]
        if args.engine_metrics is not None:
            variants.append(Variant("engine+metrics", "engine", metrics_settings(args.engine_metrics)))
        if profile.limit_kind == "disk":
            variants.append(Variant("dd", "dd"))
        t0 = time.perf_counter()
        speedscope = args.json.with_name(f"{args.json.stem}.{name}.speedscope.json") if args.profile_engine else None
        try:
            profile_reps = args.reps or (profile.quick_reps or reps if args.quick else reps)
            raw = run_profile(profile, variants, reps=profile_reps, concurrency=concurrency,
                              profile_out=speedscope)
        except Exception as exc:  # noqa: BLE001 - one broken profile must not lose the others
            log(f"[{name}] FAILED: {exc!r}")
            results["profiles"][name] = {"limit_mb_s": None, "tools": {}, "ratios": {}, "error": repr(exc),
                                         "description": profile.description}
            continue
        labels = [v.label for v in variants if v.tool != "dd"]
        entry = profile_entry(profile, raw, labels, concurrency, args.quick)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        results["profiles"][name] = entry
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    print(report.table(results))
    for name, p in results["profiles"].items():
        for label, prof in {"engine": p.get("engine_profile"), **p.get("engine_profiles", {})}.items():
            if prof:
                title = name if label == "engine" else f"{name} {label}"
                print(f"\n== {title}: engine profile FAILED: {prof['error']}" if "error" in prof else profiling.table(title, prof))
    report.write_json(results, args.json)
    png = report.chart(results, args.json.with_suffix(".png"))
    print(f"\nresults: {args.json}" + (f"; chart: {png}" if png else "") + f"; {results['seconds']:.0f}s in all")
    ok = all(p.get("tools", {}).get("engine", {}).get("ok") is not False and "error" not in p
             and "error" not in (p.get("engine_profile") or {}) for p in results["profiles"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
