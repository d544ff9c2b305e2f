"""The IMS token request a run sends before the engine is imported (issue #20, start-up): it is used
only when it asked for exactly the run's settings and got a token; any other outcome is dropped
and the normal exchange runs, with its retries and its documented errors."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.exporter import Exporter
from engine.fake import FakeConfig
from engine.outcome import EXIT_CREDENTIALS, EXIT_OK
from engine.output.runlock import held_by_another, hold_destination
from engine.platform.auth import TokenProvider
from engine.platform.client import make_session
from engine.platform.early_token import EarlyToken, ExchangeAuth, start_early_token
from engine.retry import RetryPolicy
from tests.conftest import clean_env, read_report, run_cli, settings_for, toml_config

SMALL = FakeConfig.small(n_datasets=1, files=2, rows=20, seed=41)


def _seen_by_ims(fp: Any, answer_first: int | None = None) -> list[dict[str, Any]]:
    """Record each token request (headers, form); `answer_first`: the status the first one gets instead."""
    seen: list[dict[str, Any]] = []
    original = fp.h_token

    async def h_token(request: web.Request) -> web.Response:
        fail = answer_first is not None and not seen
        resp = web.json_response({"error": "temporarily_unavailable"}, status=answer_first) if fail else await original(request)
        seen.append({"headers": {k.lower() for k in request.headers}, "query": dict(request.query),
                     "form": dict(await request.post())})  # read by the original handler already: the same form
        return resp

    fp.h_token = h_token  # routes are bound when the server starts
    return seen


async def _early_export(settings: Any, early: EarlyToken | None) -> Any:
    assert early is not None
    await asyncio.wrap_future(early.answer)  # the early answer is in before the run asks (deterministic)
    return await Exporter(settings, handle_signals=False, early_token=early).execute()


async def test_the_early_token_is_the_runs_only_token_and_asked_like_the_normal_one(tmp_path: Path, make_fake) -> None:
    fp = make_fake(SMALL)
    seen = _seen_by_ims(fp)
    async with fp:
        settings = settings_for(fp, tmp_path / "out")
        run = await _early_export(settings, start_early_token(settings.auth))
    assert run.exit_code == EXIT_OK and len(seen) == 1 and fp.stats.tokens_issued == 1
    assert not {"authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name"} & seen[0]["headers"]
    assert seen[0]["query"] == {}  # the secret travels in the body, never in a URL that may be logged
    assert seen[0]["form"] == {"grant_type": "client_credentials", "client_id": fp.client_id,
                               "client_secret": fp.client_secret, "scope": ",".join(settings.auth.scopes)}


async def test_an_early_request_that_failed_is_dropped_and_the_normal_exchange_runs(tmp_path: Path, make_fake) -> None:
    fp = make_fake(SMALL)
    seen = _seen_by_ims(fp, answer_first=503)
    async with fp:
        settings = settings_for(fp, tmp_path / "out")
        run = await _early_export(settings, start_early_token(settings.auth))
    assert run.exit_code == EXIT_OK and len(seen) == 2 and fp.stats.tokens_issued == 1
    assert run.totals["retries"] == 0  # the normal exchange's first attempt: the early 503 is not one of its attempts


async def test_an_early_request_that_hangs_is_given_up_after_a_read_timeout(tmp_path: Path, make_fake, monkeypatch) -> None:
    fp = make_fake(SMALL)
    original, hold, calls = fp.h_token, asyncio.Event(), []

    async def h_token(request: web.Request) -> web.Response:
        calls.append(request)
        if len(calls) == 1:
            await hold.wait()  # the early request gets no answer while the run waits for it
        return await original(request)

    fp.h_token = h_token
    thread_errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    async with fp:
        settings = settings_for(fp, tmp_path / "out", read_timeout=0.5)
        early = start_early_token(settings.auth)
        run = await Exporter(settings, handle_signals=False, early_token=early).execute()
        assert run.exit_code == EXIT_OK and len(calls) == 2 and fp.stats.tokens_issued == 1  # the normal exchange's
        hold.set()
        assert early is not None and await asyncio.wrap_future(early.answer) is not None  # answered late: dropped
    assert not thread_errors  # the early request's thread ended quietly, though nobody waited for it any more


async def test_rejected_credentials_are_said_by_the_normal_exchange(tmp_path: Path, make_fake) -> None:
    async with make_fake(SMALL) as fp:
        settings = settings_for(fp, tmp_path / "out")
        settings.auth.client_secret = type(settings.auth.client_secret)("wrong-secret-77cc")
        run = await _early_export(settings, start_early_token(settings.auth))
        assert fp.stats.requests["ims.token"] == 2 and fp.stats.tokens_issued == 0  # the early one, then the normal one
    assert run.exit_code == EXIT_CREDENTIALS and run.status == "credentials_rejected"
    assert any("IMS rejected the client credentials (HTTP 401" in str(e) for e in run.errors), run.errors
    assert "wrong-secret-77cc" not in (tmp_path / "out" / "_report.json").read_text()


async def test_a_token_asked_for_other_settings_is_never_used(make_fake) -> None:
    async with make_fake(SMALL) as fp:
        settings = settings_for(fp, "unused")
        other = EarlyToken(ExchangeAuth(fp.ims_url, fp.client_id, fp.client_secret, ("openid",)))  # another scope
        answer = await asyncio.wrap_future(other.answer)
        assert answer is not None and answer.status == 200
        async with make_session(settings) as session:
            token = await TokenProvider(settings.auth, session, RetryPolicy(), early=other).token()
    assert token != json.loads(answer.body)["access_token"] and fp.stats.tokens_issued == 2


def test_no_early_request_for_a_ready_token_or_an_ims_url_with_more_than_an_origin_and_path(tmp_path: Path) -> None:
    s = settings_for(_Nowhere(), tmp_path)
    s.auth.access_token = type(s.auth.access_token)("a-ready-token")
    assert start_early_token(s.auth) is None
    s = settings_for(_Nowhere(), tmp_path)
    for url in ("http://user:pw@127.0.0.1:9", "http://127.0.0.1:9/x?y=1", "http://127.0.0.1:9#f", "http://127.0.0.1:port"):
        s.auth.ims_url = url
        assert start_early_token(s.auth) is None, url


def test_no_early_request_before_a_run_the_exporter_refuses_or_into_a_bucket(tmp_path: Path) -> None:
    from engine.cli import _early_token

    assert _early_token(settings_for(_Nowhere(), "s3://bucket/prefix"), None) is None  # checked only once open
    out = tmp_path / "out"
    out.mkdir()
    (out / "_report.json").write_text(json.dumps({"layout": "hive"}))
    assert _early_token(settings_for(_Nowhere(), out), None) is None  # the layout switch is refused: exit 2
    with hold_destination(out, None, "now"):
        assert _early_token(settings_for(_Nowhere(), out, layout="hive"), None) is None  # busy: exit 5
    early = _early_token(settings_for(_Nowhere(), out, layout="hive"), None)
    assert early is not None and early.answer.result(timeout=60) is None  # nothing listens there: dropped


def test_the_busy_probe_sees_what_hold_destination_would_refuse_and_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not held_by_another(out, None) and not held_by_another(out, "0/2") and not out.exists()
    with hold_destination(out, None, "now"):
        assert held_by_another(out, None) and held_by_another(out, "0/2")
    assert not held_by_another(out, None)
    with hold_destination(out, "0/2", "now"):
        assert held_by_another(out, "0/2") and held_by_another(out, None) and not held_by_another(out, "1/2")


def test_a_run_through_the_cli_takes_the_early_token(tmp_path: Path, threaded_fake) -> None:
    fp = threaded_fake(SMALL)
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, tmp_path / "out"))
    p = run_cli("run", "--config", str(config), "--json-logs", "--no-progress", cwd=tmp_path, env=clean_env())
    assert p.returncode == EXIT_OK, p.stderr
    (obtained,) = [e for e in map(json.loads, p.stderr.splitlines()) if e.get("event") == "token_obtained"]
    assert obtained.get("early") is True and fp.stats.tokens_issued == 1
    assert read_report(tmp_path / "out")["status"] == "ok"
    assert fp.client_secret not in p.stderr + p.stdout


class _Nowhere:
    url = ims_url = "http://127.0.0.1:9"
    org_id, sandbox, client_id, client_secret = "o@AdobeOrg", "prod", "c", "a-secret"
    dataset_ids = ("5cd9146b31dae914b75f654f",)
