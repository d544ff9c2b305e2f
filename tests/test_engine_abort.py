"""A run stopped part-way (credentials revoked mid-run) must not mark unfinished batches as complete."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from conftest import read_manifest, read_report, run_export, settings_for

from engine.fake import FakeConfig
from engine.fake.server import gw_error
from engine.layout import SUCCESS
from engine.outcome import EXIT_CREDENTIALS
from engine.output.verify import verify_export


def _revoke_on_first_download(fp, listings_needed: int):
    """On the first download: wait until every listing was served, then revoke the API key (403003)."""
    original = fp.h_files
    state = {"revoked": False}

    async def h_files(request: web.Request) -> web.StreamResponse:
        if "path" not in request.query or state["revoked"]:
            return await original(request)
        for _ in range(500):
            if fp.stats.requests["export.listing"] >= listings_needed:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # let the engine record the finished listings
        state["revoked"] = True
        fp.cfg.client_id = "revoked-" + fp.cfg.client_id  # every later request: 403003 Api Key is invalid
        return gw_error(403, "403003", "Api Key is invalid")

    fp.h_files = h_files


async def test_aborted_run_leaves_no_success_marker_on_unfinished_batches(tmp_path: Path, make_fake) -> None:
    fp = make_fake(FakeConfig.small(n_datasets=2, files=2, rows=20, seed=71))
    _revoke_on_first_download(fp, listings_needed=2)
    async with fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, concurrency=1))

        assert run.exit_code == EXIT_CREDENTIALS
        assert read_report(out)["status"] == "credentials_rejected"
        problems = verify_export(out).problems or []
        incomplete = 0
        for ds in fp.dataset_ids:
            folder = out / ds / fp.latest_batch(ds).data_id
            wanted = [e for e in fp.expected_files() if e.dataset_id == ds]
            if all((folder / e.dataset_file_id / e.name).is_file() for e in wanted):
                continue
            incomplete += 1
            if (folder / "_manifest.json").exists():
                assert read_manifest(folder)["status"] != "ok", f"{ds}: manifest says ok with files missing"
            assert not (folder / SUCCESS).exists(), f"{ds}: _SUCCESS without all files"
            rel = f"{ds}/{folder.name}"
            assert any(p.path.startswith(rel) for p in problems), f"verify accepts the unfinished batch {rel}"
        assert incomplete == 2  # the revocation came before any file finished
