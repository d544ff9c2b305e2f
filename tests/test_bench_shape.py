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
