"""Benchmark profiles: fake-platform arguments (data + faults), limits and engine settings.

Sizes: (quick, full). Data is generated once by the fake into its cache directory
($TMPDIR/aep-fake-cache/<hash of the data spec>) and reused by later runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MiB = 1 << 20
PROFILES = ("lan", "wan", "small", "chaos", "big", "skew", "resume")

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
    raise ValueError(f"unknown profile {name!r}; choose from {PROFILES}")
