"""bench/: the results JSON keeps its contract shape, and peers' figures include their discovery."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import profile_entry
from bench.discovery import PeerDiscovery
from bench.harness import RunResult
from bench.profiles import PROFILES, build
from bench.runner import run_figures
from bench.tools import TOOLS

MB = 1_000_000
CONTRACT = {"mb_s", "files_s", "cpu_s_per_gib", "peak_rss_mib", "ok"}


def rr(wall: float, cpu: float = 1.0, rss: float = 50.0, rc: int = 0) -> RunResult:
    return RunResult(argv=["x"], rc=rc, wall_s=wall, cpu_s=cpu, peak_rss_mib=rss)


def disc(wall: float, cpu: float = 0.1, requests: int = 4) -> PeerDiscovery:
    return PeerDiscovery(files=[], headers={}, wall_s=wall, cpu_s=cpu, requests=requests)


def sample(runs: list[RunResult], found: list[PeerDiscovery], nbytes: int, files: int, **extra: object) -> dict:
    s = run_figures(runs, found)
    s.update(ok=s["rc"] == 0, bytes=nbytes, files=files, **extra)
    return s


def test_peer_time_and_cpu_include_discovery_the_engines_do_not_need_it() -> None:
    peer = run_figures([rr(2.0, cpu=1.0)], [disc(0.5, cpu=0.2)])
    assert peer["wall_s"] == pytest.approx(2.5) and peer["cpu_s"] == pytest.approx(1.2)
    assert peer["download_s"] == pytest.approx(2.0) and peer["discovery_s"] == pytest.approx(0.5)
    engine = run_figures([rr(2.0)], [])
    assert engine["wall_s"] == pytest.approx(2.0) and engine["discovery_s"] is None


def test_a_resumed_peer_pays_both_runs_and_both_discoveries() -> None:
    s = run_figures([rr(1.0, rss=30), rr(1.5, rss=40, rc=0)], [disc(0.25), disc(0.25)])
    assert s["wall_s"] == pytest.approx(3.0) and s["peak_rss_mib"] == 40 and s["discovery_requests"] == 8


def test_a_subset_run_pays_its_share_of_the_discovery() -> None:
    assert run_figures([rr(1.0)], [disc(0.8)], share=0.25)["wall_s"] == pytest.approx(1.2)


def raw_for(name: str, tools: list[str]) -> dict:
    nbytes, files = 100 * MB, 10
    samples = {"engine": [sample([rr(2.0)], [], nbytes, files)]}
    for t in tools[1:]:
        samples[t] = [sample([rr(1.5)], [disc(0.5)], nbytes, files)]
    if name == "resume":
        for t, refetched in zip(tools, (3 * MB, 1 * MB, 2 * MB), strict=False):
            samples[t][0]["refetched_bytes"] = refetched
    if name == "lan":
        samples["dd"] = [{"wall_s": 0.5, "mb_s": 200.0, "ok": True, "rc": 0, "cpu_s": 0.1, "peak_rss_mib": 1}]
    return {"samples": samples, "notes": {"naive": "skipped here"}, "bytes": nbytes, "files": files}


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_keeps_the_contract_shape(name: str) -> None:
    tools = ["engine", "aria2c-sha", "aria2c", "naive"]
    entry = json.loads(json.dumps(profile_entry(build(name, quick=True), raw_for(name, tools), tools, 16, True)))
    assert "limit_mb_s" in entry and set(entry["tools"]) == set(tools)
    for t in tools:
        assert set(entry["tools"][t]) >= CONTRACT
    peer, engine = entry["tools"]["aria2c-sha"], entry["tools"]["engine"]
    assert peer["mb_s"] == pytest.approx(100 / (1.5 + 0.5)) and peer["discovery_s"] == pytest.approx(0.5)
    assert engine["mb_s"] == pytest.approx(100 / 2.0) and engine["discovery_s"] is None
    assert entry["ratios"]["engine/aria2c-sha"] == pytest.approx(1.0)
    assert entry["discovery"]["median_s"] == pytest.approx(0.5) and entry["discovery"]["concurrency"] == 16
    if entry["limit_mb_s"]:
        assert entry["ratios"]["engine/limit"] == pytest.approx(50 / entry["limit_mb_s"], rel=1e-2)
    if name == "resume":
        assert [entry["tools"][t]["refetched_bytes"] for t in tools[:3]] == [3 * MB, 1 * MB, 2 * MB]
    if name == "skew":
        assert 0 < entry["one_connection_per_file_mb_s"] < entry["limit_mb_s"]


def test_the_new_tool_and_profiles_are_named_as_the_issue_says() -> None:
    assert "aria2c-sha" in TOOLS and "aria2c" in TOOLS
    assert {"skew", "resume"} <= set(PROFILES)
    assert build("resume", True).resume and not build("wan", True).resume
    for name in PROFILES:  # each profile states its limit (or why it has none)
        p = build(name, True)
        assert p.limit_kind in ("disk", "network", "none") and (p.limit_kind != "network" or p.cap_bps)


def test_the_listed_profiles_are_the_workloads_of_issue_20() -> None:
    small, far, big = (build(n, quick=False) for n in ("small-listed", "small-far", "big-listed"))
    specs = json.loads(small.fake_args[small.fake_args.index("--datasets-json") + 1])
    assert len(specs) == 300 and sum(s["files_per_dataset_file"] for s in specs) == 1260
    assert all(39.99 <= s["file_mb"] * 1024 <= 60.01 for s in specs) and len({s["file_mb"] for s in specs}) > 10
    assert far.fake_args[:-2] == small.fake_args and far.fake_args[-2:] == ["--first-byte-delay", "0.05"]
    assert big.fake_args[big.fake_args.index("--files-per-batch") + 1] == "24"
    assert big.fake_args[big.fake_args.index("--file-mb") + 1] == "39.0"
    assert (small.concurrency, far.concurrency, big.concurrency) == (16, 16, 8)
    for p in (small, far, big):
        assert p.peers_listed and {"aria2c", "aria2c-sha"}.isdisjoint(p.skip_tools)
    assert not any(build(n, quick=False).peers_listed for n in ("lan", "wan", "small", "chaos", "big", "skew", "resume"))
    assert big.targets == {"wall engine/aria2c": 1.0, "cpu engine/aria2c": 1.5, "wall engine/aria2c-sha": 0.6}


def test_a_listed_profile_reports_wall_and_cpu_ratios_against_both_aria2c_and_its_targets() -> None:
    tools = ["engine", "aria2c-sha", "aria2c"]
    nbytes, files = 100 * MB, 10
    samples = {"engine": [sample([rr(2.0, cpu=3.0)], [], nbytes, files)],
               "aria2c-sha": [sample([rr(4.0, cpu=2.0)], [], nbytes, files)],  # handed the list: no discovery
               "aria2c": [sample([rr(1.6, cpu=1.0)], [], nbytes, files)]}
    raw = {"samples": samples, "notes": {}, "bytes": nbytes, "files": files}
    entry = json.loads(json.dumps(profile_entry(build("big-listed", quick=True), raw, tools, 8, True)))
    assert entry["peers_listed"] is True and entry["concurrency"] == 8 and entry["discovery"] is None
    assert entry["tools"]["aria2c"]["discovery_s"] is None and entry["tools"]["aria2c"]["wall_s"] == pytest.approx(1.6)
    assert entry["time_ratios"]["wall"] == {"engine/aria2c-sha": 0.5, "engine/aria2c": 1.25}
    assert entry["time_ratios"]["cpu"] == {"engine/aria2c-sha": 1.5, "engine/aria2c": 3.0}
    assert entry["ratios"]["engine/aria2c"] == pytest.approx(0.8)  # the throughput ratio stays as it was
    assert entry["targets"] == {"wall engine/aria2c": {"at_most": 1.0, "value": 1.25, "met": False},
                                "cpu engine/aria2c": {"at_most": 1.5, "value": 3.0, "met": False},
                                "wall engine/aria2c-sha": {"at_most": 0.6, "value": 0.5, "met": True}}
