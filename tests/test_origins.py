"""Credentials go to the gateway's origin and nowhere else, however the platform spells its links.

The gateway writes `https://platform.adobe.io:443/...` hrefs and `next` links without the port
(aep-api.md §4.1) while a config says `https://platform.adobe.io`: one origin. Tested with a fake
really listening on port 80, the same situation over http."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import assert_files_match, read_report, run_export, settings_for, with_data_dir

from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.platform.origin import origin_of, same_origin


@pytest.mark.parametrize("a, b, same", [
    ("https://platform.adobe.io", "https://platform.adobe.io:443/data/foundation/export/files/x", True),
    ("https://platform.adobe.io:443", "https://platform.adobe.io/data", True),
    ("https://PLATFORM.Adobe.IO", "https://platform.adobe.io./data", True),  # case, one trailing dot
    ("http://127.0.0.1", "http://127.0.0.1:80/data", True),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080/data", True),
    ("https://platform.adobe.io", "http://platform.adobe.io/data", False),  # scheme
    ("https://platform.adobe.io", "https://platform.adobe.io:8443/data", False),  # port
    ("http://127.0.0.1", "http://127.0.0.1:443/data", False),  # https's default port is not http's
    ("https://platform.adobe.io", "https://platform-stage.adobe.io/data", False),
    ("https://platform.adobe.io", "https://platform.adobe.io.evil.example/data", False),
    ("https://platform.adobe.io", "https://platform.adobe.io../data", False),  # only one trailing dot is the same name
    ("http://localhost:8080", "http://127.0.0.1:8080/data", False),  # another host name, even for the same address
])
def test_same_origin(a: str, b: str, same: bool) -> None:
    assert same_origin(a, b) is same
    assert same_origin(b, a) is same


def test_origin_is_printed_without_a_default_port() -> None:
    assert str(origin_of("https://platform.adobe.io:443/x?y=1")) == "https://platform.adobe.io"
    assert str(origin_of("http://127.0.0.1:8080/x")) == "http://127.0.0.1:8080"


# ----------------------------------------------------------------------------- a fake on port 80


def _port_80_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("listening on port 80 needs root (these tests run as root in CI)")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 80))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                pytest.skip("something else already listens on 127.0.0.1:80")
            raise


async def _first_links(fp: FakePlatform) -> tuple[str, str]:
    """A dataSetFile's self href and a listing's next href, as the fake writes them."""
    batch = fp.latest_batch(fp.dataset_ids[0]).data_id
    h = {"Authorization": f"Bearer {fp.static_token}", "x-api-key": fp.client_id,
         "x-gw-ims-org-id": fp.org_id, "x-sandbox-name": fp.sandbox}
    async with aiohttp.ClientSession() as http, http.get(f"{fp.url}/data/foundation/export/batches/{batch}/files", headers=h) as r:
        body = await r.json()
    return body["data"][0]["_links"]["self"]["href"], body["_links"]["next"]["href"]


SPELLINGS = {  # links style -> (self href prefix, next href prefix)
    "port": ("http://127.0.0.1:80/", "http://127.0.0.1:80/"),
    "no_port": ("http://127.0.0.1/", "http://127.0.0.1/"),
    "documented": ("http://127.0.0.1:80/", "http://127.0.0.1/"),  # as aep-api.md §4.1 shows them
}


@pytest.mark.parametrize("links", sorted(SPELLINGS))
async def test_fake_on_port_80_links_spelled_any_way_export_exactly(links: str, tmp_path: Path, fake_data_root: Path) -> None:
    _port_80_or_skip()
    cfg = FakeConfig(seed=71, page_size=2, links=links, datasets=[
        DatasetSpec(dataset_files=3, files_per_dataset_file=3, rows_per_file=20)])  # next links on both listings
    async with FakePlatform(with_data_dir(cfg, fake_data_root), host="127.0.0.1", port=80) as fp:
        assert fp.url == "http://127.0.0.1:80"
        self_href, next_href = await _first_links(fp)
        assert self_href.startswith(SPELLINGS[links][0]) and next_href.startswith(SPELLINGS[links][1])
        fp.reset_stats()
        out = tmp_path / "out"
        settings = settings_for(fp, out)
        settings.platform.url = settings.auth.ims_url = "http://127.0.0.1"  # what a user writes
        run = await run_export(settings)
        assert run.exit_code == EXIT_OK, read_report(out)
        assert_files_match(out, fp.expected_files())
        assert fp.stats.statuses[403] == fp.stats.statuses[401] == 0  # credentials went with every link
        assert fp.stats.requests["export.listing"] > 3 and fp.stats.requests["export.batchFiles"] == 2


async def test_download_links_to_another_host_get_no_credentials(tmp_path: Path, make_fake) -> None:
    """Part hrefs pointing at a second host (signed, like pre-signed blob URLs): fetched without
    Authorization or x-api-key; that host records every header it was sent."""
    cfg = FakeConfig(seed=72, foreign_download_links=True, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=20)])
    async with make_fake(cfg) as fp:
        assert not same_origin(fp.redirect_url, fp.url)
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))
        assert run.exit_code == EXIT_OK, read_report(out)
        assert_files_match(out, fp.expected_files())
        assert fp.stats.redirect_requests == len(fp.expected_files()) == 3  # every byte came from the other host
        assert fp.stats.requests["export.download"] == 0
        assert not fp.stats.redirect_saw_auth
        for names in fp.stats.redirect_header_names:
            assert not {"authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name"} & set(names)


async def test_links_to_another_host_name_of_the_gateway_get_no_credentials(tmp_path: Path, make_fake) -> None:
    """Config says http://localhost:PORT; the fake writes its links with 127.0.0.1: the same
    address but another origin. No credentials go there (the gateway answers 403010 "Oauth token
    is missing"), and the run says why instead of calling the credentials rejected (exit 3)."""
    cfg = FakeConfig(seed=73, links="port", link_host="127.0.0.1", datasets=[DatasetSpec(files_per_dataset_file=2, rows_per_file=20)])
    async with make_fake(cfg) as fp:
        out = tmp_path / "out"
        settings = settings_for(fp, out)
        settings.platform.url = fp.url.replace("127.0.0.1", "localhost")
        run = await run_export(settings)
        assert run.exit_code == EXIT_FAILED
        (dataset,) = read_report(out)["datasets"]
        assert "not the gateway's origin" in dataset["error"] and "credentials are only ever sent to the gateway" in dataset["error"]
        assert fp.stats.statuses[403] >= 1 and fp.stats.requests["export.download"] == 0


async def test_ims_gets_the_form_and_no_gateway_header(tmp_path: Path, make_fake) -> None:
    fp = make_fake(FakeConfig.small(n_datasets=1, files=1, rows=10, seed=74))
    seen: list[dict[str, Any]] = []
    original = fp.h_token

    async def h_token(request: web.Request) -> web.Response:
        resp = await original(request)  # reads the form; post() below returns what it read
        seen.append({"headers": {k.lower() for k in request.headers}, "query": dict(request.query),
                     "form": set(await request.post())})
        return resp

    fp.h_token = h_token  # routes are bound when the server starts
    async with fp:
        run = await run_export(settings_for(fp, tmp_path / "out"))
    assert run.exit_code == EXIT_OK and len(seen) == 1
    assert not {"authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name"} & seen[0]["headers"]
    assert seen[0]["query"] == {}  # the secret travels in the body, never in a URL that may be logged
    assert seen[0]["form"] == {"grant_type", "client_id", "client_secret", "scope"}


def test_the_fake_platform_command_takes_the_link_spelling() -> None:
    import argparse

    from engine.fake.cli import add_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    assert config_from_args(parser.parse_args(["fake-platform", "--links", "documented"])).links == "documented"
    assert config_from_args(parser.parse_args(["fake-platform"])).links == "request"
