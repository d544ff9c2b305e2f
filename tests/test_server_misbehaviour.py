"""Ranged answers that do not fit the request: refused, never written (fetcher._accept).

The fake platform always answers a Range correctly, so these checks were never exercised: a 206 that
starts past the offset asked for, and a 206 whose total says the file is no longer the one listed
(it changed on the server: the download starts over). Without them the wrong bytes would be written
at the asked offset and the file committed (no digest header here, and the footer is intact).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from conftest import assert_files_match, expected_path, read_report, run_export, settings_for

from engine.fake import FakeConfig
from engine.outcome import EXIT_OK

GARBAGE = 64 << 10


def _misbehave_once(fp, victim, kind: str) -> list[str]:
    """The first ranged request for `victim` gets a wrong 206; everything else is served normally."""
    original = fp.h_files
    served: list[str] = []

    async def h_files(request: web.Request) -> web.StreamResponse:
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        mine = request.match_info["id"] == victim.dataset_file_id and request.query.get("path") == victim.name
        if not (mine and m and int(m.group(1)) > 0 and not served):
            return await original(request)
        src = victim.source_path.read_bytes()  # generated when the fake starts
        start, size = int(m.group(1)), len(src)
        if kind == "starts_later":  # valid bytes, but not from the offset asked for
            first = start + 4096
            body, content_range = src[first:], f"bytes {first}-{size - 1}/{size}"
        else:  # "changed": another total, and bytes that are not the listed file's
            body, content_range = b"\xa5" * GARBAGE, f"bytes {start}-{start + GARBAGE - 1}/{size + 10}"
        served.append(content_range)
        return web.Response(status=206, body=body, headers={"Content-Range": content_range},
                            content_type="application/octet-stream")

    fp.h_files = h_files  # routes are bound when the server starts
    return served


@pytest.mark.parametrize("kind", ["starts_later", "changed"])
async def test_a_206_that_does_not_fit_the_request_is_never_written(kind: str, tmp_path: Path, make_fake) -> None:
    # Two files: while the changed one starts over, the other keeps streaming (and lending): the
    # race of tests/test_transfer_races.py in its natural setting.
    fp = make_fake(FakeConfig.small(n_datasets=1, files=2, rows=30000, seed=55))
    victim = max(fp.expected_files(), key=lambda e: e.size)
    served = _misbehave_once(fp, victim, kind)
    async with fp:
        out = tmp_path / "out"
        final = expected_path(out, victim)
        final.parent.mkdir(parents=True)
        src = victim.source_path.read_bytes()
        final.with_name(final.name + ".part").write_bytes(src[: len(src) // 2])  # resumed: a ranged request

        run = await run_export(settings_for(fp, out))

    assert len(served) == 1, "the misbehaving answer was never served"
    assert run.exit_code == EXIT_OK, read_report(out)
    assert_files_match(out, fp.expected_files())  # nothing of that answer reached the file
    if kind == "changed":
        assert run.totals["restarts"] >= 1  # the file started over instead of mixing two versions
