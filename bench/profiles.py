"""Benchmark profiles: fake-platform arguments (data + faults), limits and engine settings.

Sizes: (quick, full). Data is generated once by the fake into its cache directory
($TMPDIR/aep-fake-cache/<hash of the data spec>) and reused by later runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MiB = 1 << 20
PROFILES = ("lan", "wan", "small", "chaos", "big", "skew", "resume", "small-listed", "small-far", "big-listed")

WAN_DELAY_S = 0.05  # first-byte latency on every request
WAN_CAP_BPS = 4e6  # per-connection (per-response) bandwidth cap, bytes/s
BIG_LIMIT_S = (1.0, 2.0)  # gateway response-time limit in the big profile (quick, full)


@dataclass
class Profile:
    name: str
    description: str
    fake_args: list[str]
    limit_kind: str  # "disk" (dd), "network" (connections x cap) or "none"
    figure: str = "mb_s"  # the figure that matters for this profile's ratios
    cap_bps: float | None = None
    export_overrides: dict[str, object] = field(default_factory=dict)
    fresh_fake_per_run: bool = False  # restart the fake before each run (fresh fault counters)
    naive_files: int | None = None  # measure the sequential naive client on this many files only
    quick_reps: int | None = None  # repetitions under --quick when the default (2) would not fit two minutes
    timeout_s: float = 300.0  # per tool run
    start_timeout_s: float = 900.0  # fake start, including first-time data generation
    resume: bool = False  # every run is killed (kill -9) at half the bytes, then run again
    skip_tools: dict[str, str] = field(default_factory=dict)  # tool -> why it is not measured here
    # the peers are handed the list of files the engine exports (their discovery is done untimed
    # before each run and not counted), so the ratios compare the downloads alone with the whole run
    peers_listed: bool = False
    concurrency: int | None = None  # connections for every tool when --concurrency is not given (default 16)
    # time ratios the issue sets (issue #20), "wall engine/aria2c" -> at most; reported with the figure
    targets: dict[str, float] = field(default_factory=dict)


# skew: one export whose part sizes spread unevenly, as Spark output of a skewed key does: a few large
# parts among many small ones. The fake gives every part of a dataset one size, so the spread is
# composed of datasets (DatasetSpec fields), the large ones between the small ones in listing order.
# (parts, MiB per part) per dataset: quick / full
SKEW = (
    [(24, 0.25), (2, 24), (6, 4), (24, 0.25)],  # 56 parts, 84 MiB; the 2 largest are 57% of it
    [(48, 1), (4, 96), (12, 16), (48, 1)],  # 112 parts, 672 MiB; the 4 largest are 57% of it
)
# resume: every part in flight at once, so the kill lands mid-file for every tool
RESUME = ((16, 8), (16, 32))  # 128 MiB / 512 MiB


# The listed profiles (issue #20): the per-file and per-run cost against aria2c handed the list.
# small-listed: 300 datasets, 1,260 parts of 40-60 KiB (60 datasets of 5 parts, 240 of 4, sizes
# spread over the datasets); quick: a fifth of it. big-listed: 24 parts of ~39 MiB; quick: 12 of 16.
LISTED_SMALL = (60, 300)  # datasets (quick, full)
LISTED_BIG = ((12, 16.0), (24, 39.0))  # (parts, MiB per part)
LISTED_TOOLS = {"curl": "not one of the listed profiles' peers (issue #20: aria2c plain and checking SHA-256)",
                "naive": "not one of the listed profiles' peers (issue #20: aria2c plain and checking SHA-256)"}


def listed_small_specs(datasets: int) -> list[dict[str, object]]:
    """One DatasetSpec per dataset: every fifth has 5 parts, the others 4; 40-60 KiB a part."""
    return [{"files_per_dataset_file": 5 if i % 5 == 0 else 4, "file_mb": round((40 + (i * 13) % 21) / 1024, 5)}
            for i in range(datasets)]


def skew_args(layout: list[tuple[int, float]]) -> list[str]:
    specs = [{"files_per_dataset_file": n, "file_mb": mb} for n, mb in layout]
    return ["--preset", "lan", "--datasets-json", json.dumps(specs, separators=(",", ":"))]


def one_connection_bound(layout: list[tuple[int, float]], concurrency: int, cap_bps: float) -> float:
    """MB/s bound for a tool that fetches each part on one connection: the largest part at the cap,
    or all bytes over every connection, whichever takes longer."""
    total = sum(n * mb * MiB for n, mb in layout)
    largest = max(mb for _, mb in layout) * MiB
    return total / max(total / (concurrency * cap_bps), largest / cap_bps) / 1e6


def build(name: str, quick: bool) -> Profile:
    q = quick
    wan = ["--first-byte-delay", str(WAN_DELAY_S), "--bandwidth", str(WAN_CAP_BPS)]
    if name == "lan":
        files, mb = (16, 24) if q else (32, 64)  # 384 MiB / 2 GiB
        return Profile(name, f"no throttling, {files} x {mb} MiB: CPU and disk bound",
                       ["--preset", "lan", "--files-per-batch", str(files), "--file-mb", str(mb)],
                       limit_kind="disk", timeout_s=120 if q else 600)
    # wan and chaos share one workload (so chaos time compares with wan time directly). It is sized
    # so a run lasts several seconds at the limit: the engine's ~0.6 s interpreter start-up must not
    # be what the profile measures. naive (sequential) is measured on the first files only.
    wan_files, wan_mb = (64, 7) if q else (128, 8)  # 448 MiB / 1 GiB
    if name == "wan":
        return Profile(name, f"{WAN_DELAY_S * 1000:.0f} ms first byte, {WAN_CAP_BPS / 1e6:g} MB/s per connection, "
                       f"{wan_files} x {wan_mb} MiB", ["--preset", "lan", "--files-per-batch", str(wan_files),
                                                       "--file-mb", str(wan_mb), *wan],
                       limit_kind="network", cap_bps=WAN_CAP_BPS, naive_files=2 if q else 8, quick_reps=1,
                       timeout_s=120 if q else 600)
    if name == "small":
        n = 100 if q else 500
        return Profile(name, f"{n} datasets x 2 parts of ~20 KiB: request bound",
                       ["--preset", "small", "--datasets", str(n), "--files-per-batch", "2", "--file-mb", "0.02"],
                       limit_kind="none", figure="files_s", timeout_s=120 if q else 600)
    if name == "chaos":
        faults = ["--fault-429", "0.05", "--retry-after", "1", "--fault-5xx", "0.05", "--fault-error-body", "0.03",
                  "--fault-reset", "0.05", "--short-ranges", "0.2", "--ignore-range", "0.1", "--fault-corrupt", "0.03",
                  "--send-digest",
                  # no per-key cap on failing faults: every run sees the same fault rates whatever ran before
                  "--max-faults-per-key", "1000"]
        # full: exactly the wan workload; quick: half its files (compare MB/s with wan's)
        files = wan_files // 2 if q else wan_files
        return Profile(name, f"the wan profile plus 429/5xx/error bodies/resets/short ranges/ignored ranges/corruption, "
                       f"{files} x {wan_mb} MiB",
                       ["--preset", "lan", "--files-per-batch", str(files), "--file-mb", str(wan_mb), *wan, *faults],
                       limit_kind="network", cap_bps=WAN_CAP_BPS, naive_files=2 if q else 8, quick_reps=1,
                       # full runs restart the fake before each run, so every tool meets the identical
                       # seeded fault sequence; quick runs share one fake (same rates, other draws)
                       fresh_fake_per_run=not q,
                       timeout_s=120 if q else 600)
    if name == "big":
        files, mb = (4, 16) if q else (4, 64)  # 64 MiB / 256 MiB
        limit_s = BIG_LIMIT_S[0] if q else BIG_LIMIT_S[1]  # one response carries <= 4 / 8 MB
        return Profile(name, f"{files} x {mb} MiB, {limit_s:g} s response limit at {WAN_CAP_BPS / 1e6:g} MB/s "
                       "per connection: ranges required",
                       ["--preset", "lan", "--files-per-batch", str(files), "--file-mb", str(mb),
                        "--bandwidth", str(WAN_CAP_BPS), "--response-limit", str(limit_s)],
                       limit_kind="network", cap_bps=WAN_CAP_BPS, naive_files=1, quick_reps=1,
                       export_overrides={"response_time_limit": limit_s}, timeout_s=120 if q else 900)
    no_naive = "sequential by design: one connection at the cap, so its rate is known (wan) and its time here is sum(size)/cap"
    if name == "skew":
        layout = SKEW[0] if q else SKEW[1]
        total = sum(n * mb for n, mb in layout)
        return Profile(name, f"{sum(n for n, _ in layout)} parts, {total:g} MiB, sizes "
                       + " + ".join(f"{n}x{mb:g}" for n, mb in layout)
                       + f" MiB, {WAN_DELAY_S * 1000:.0f} ms first byte, {WAN_CAP_BPS / 1e6:g} MB/s per connection",
                       [*skew_args(layout), *wan], limit_kind="network", cap_bps=WAN_CAP_BPS, quick_reps=1,
                       skip_tools={"naive": no_naive}, timeout_s=120 if q else 600)
    if name == "resume":
        files, mb = RESUME[0] if q else RESUME[1]
        return Profile(name, f"{files} x {mb} MiB, {WAN_DELAY_S * 1000:.0f} ms first byte, {WAN_CAP_BPS / 1e6:g} MB/s "
                       "per connection, killed (kill -9) "
                       "at half the bytes, then the same command again",
                       ["--preset", "lan", "--files-per-batch", str(files), "--file-mb", str(mb), *wan],
                       limit_kind="network", cap_bps=WAN_CAP_BPS, quick_reps=1, resume=True,
                       skip_tools={"naive": "no resume: a rerun fetches everything again"},
                       timeout_s=120 if q else 600)
    if name in ("small-listed", "small-far"):
        specs = listed_small_specs(LISTED_SMALL[0] if q else LISTED_SMALL[1])
        parts = sum(int(str(s["files_per_dataset_file"])) for s in specs)
        far = name == "small-far"
        delay = ["--first-byte-delay", str(WAN_DELAY_S)] if far else []
        targets = ({"wall engine/aria2c": 0.9, "cpu engine/aria2c": 2.0} if far
                   else {"wall engine/aria2c": 1.0, "cpu engine/aria2c": 2.0})
        return Profile(name, f"{len(specs)} datasets, {parts} parts of 40-60 KiB, 16 connections, "
                       + (f"{WAN_DELAY_S * 1000:.0f} ms before every response's headers" if far else "loopback")
                       + "; peers handed the list",
                       ["--preset", "lan", "--datasets-json", json.dumps(specs, separators=(",", ":")), *delay],
                       limit_kind="none", figure="files_s", peers_listed=True, concurrency=16, targets=targets,
                       skip_tools=LISTED_TOOLS, quick_reps=1, timeout_s=120 if q else 600)
    if name == "big-listed":
        files, mb = LISTED_BIG[0] if q else LISTED_BIG[1]
        return Profile(name, f"{files} parts of ~{mb:g} MiB, 8 connections, loopback; peers handed the list",
                       ["--preset", "lan", "--files-per-batch", str(files), "--file-mb", str(mb)],
                       limit_kind="none", peers_listed=True, concurrency=8, skip_tools=LISTED_TOOLS, quick_reps=1,
                       targets={"wall engine/aria2c": 1.0, "cpu engine/aria2c": 1.5, "wall engine/aria2c-sha": 0.6},
                       timeout_s=120 if q else 600)
    raise ValueError(f"unknown profile {name!r}; choose from {PROFILES}")
