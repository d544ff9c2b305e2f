"""Rejected credentials: exit 3, a message without the secret, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import files_under, read_report, run_cli, run_export, settings_for, toml_config

from engine.fake import FakeConfig
from engine.outcome import EXIT_CREDENTIALS

WRONG_SECRET = "wrong-Secret-7f3a9c2e51"
BAD_TOKEN = "bad-static-token-4c1d8e77a0"


def _no_parquet(out: Path) -> None:
    downloaded = [p for p in files_under(out) if p.name.endswith((".parquet", ".part"))] if out.exists() else []
    assert downloaded == []


@pytest.mark.parametrize("kind", ["wrong_secret", "bad_static_token"])
def test_cli_rejected_credentials_exit_3(tmp_path: Path, threaded_fake, kind: str) -> None:
    fp = threaded_fake(FakeConfig.small(n_datasets=2, files=2, rows=20, seed=31))
    out = tmp_path / "out"
    if kind == "wrong_secret":
        text, secret = toml_config(fp, out, client_secret=WRONG_SECRET), WRONG_SECRET
    else:
        text = toml_config(fp, out, client_secret="").replace('client_secret = ""\n', f'access_token = "{BAD_TOKEN}"\n')
        secret = BAD_TOKEN
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)

    p = run_cli("run", "--config", str(cfg), "--json-logs", cwd=tmp_path)

    assert p.returncode == EXIT_CREDENTIALS, p.stdout + p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert secret not in p.stderr + p.stdout
    assert fp.client_secret not in p.stderr + p.stdout
    assert fp.stats.requests["export.download"] == 0 and fp.stats.bytes_sent == 0
    _no_parquet(out)
    report = read_report(out)
    assert report["exit_code"] == EXIT_CREDENTIALS and report["status"] == "credentials_rejected"
    assert any("reject" in e.lower() for e in report["errors"]), report["errors"]
    assert secret not in (out / "_report.json").read_text()
    assert "reject" in (p.stderr + p.stdout).lower()  # the reason is visible to the user


async def test_rejected_secret_in_process_nothing_attempted(tmp_path: Path, make_fake) -> None:
    async with make_fake(FakeConfig.small(n_datasets=1, files=2, rows=20, seed=31)) as fp:
        s = settings_for(fp, tmp_path / "out")
        s.auth.client_secret = type(s.auth.client_secret)(WRONG_SECRET)
        run = await run_export(s)
        assert run.exit_code == EXIT_CREDENTIALS
        assert fp.stats.tokens_issued == 0
        # rejected before any Catalog / Data Access call
        assert sum(n for k, n in fp.stats.requests.items() if k != "ims.token") == 0
        assert WRONG_SECRET not in (tmp_path / "out" / "_report.json").read_text()
