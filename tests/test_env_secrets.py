"""Settings the way containers hand them over: _FILE secrets, AEP_EXPORT_CONFIG, comma scopes,
and AEP_EXPORT_* variables that name no setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import assert_files_match, clean_env, read_report, run_cli, toml_config

from engine.config import load_settings
from engine.errors import ConfigError
from engine.fake import FakeConfig

SECRET_LOOKALIKE = "Zq9-not-a-number-7731"


@pytest.fixture
def fake(threaded_fake):
    return threaded_fake(FakeConfig.small(n_datasets=1, files=2, rows=20, seed=95))


def _config_without_secret(fp, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    text = toml_config(fp, out, client_secret="").replace('client_secret = ""\n', "")
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_client_secret_from_a_file_with_its_trailing_newline(fake, tmp_path: Path) -> None:
    secret_file = tmp_path / "aep-secret"
    secret_file.write_text(fake.client_secret + "\n")  # as `echo … > file` writes it
    env = clean_env(AEP_EXPORT_AUTH__CLIENT_SECRET_FILE=str(secret_file))
    p = run_cli("run", "--config", str(_config_without_secret(fake, tmp_path)), cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert_files_match(tmp_path / "out", fake.expected_files())
    assert fake.client_secret not in p.stdout + p.stderr


def test_config_path_from_aep_export_config(fake, tmp_path: Path) -> None:
    secret_file = tmp_path / "aep-secret"
    secret_file.write_text(fake.client_secret)
    env = clean_env(AEP_EXPORT_CONFIG=str(_config_without_secret(fake, tmp_path)),
                    AEP_EXPORT_AUTH__CLIENT_SECRET_FILE=str(secret_file))
    p = run_cli("run", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert read_report(tmp_path / "out")["status"] == "ok"


@pytest.mark.parametrize("case", ["missing", "directory", "empty_name", "both_set", "bad_value"])
def test_setting_files_that_cannot_be_used_exit_2_naming_the_variable(fake, tmp_path: Path, case: str) -> None:
    var = "AEP_EXPORT_AUTH__CLIENT_SECRET_FILE"
    env = clean_env()
    if case == "missing":
        env[var] = str(tmp_path / "no-such-file")
        needle = f"{var} names {tmp_path / 'no-such-file'}, which does not exist"
    elif case == "directory":
        env[var] = str(tmp_path)
        needle = f"{var} names {tmp_path}, which cannot be read"
    elif case == "empty_name":
        env[var] = ""
        needle = f"{var} is empty"
    elif case == "both_set":
        (tmp_path / "s").write_text(SECRET_LOOKALIKE)
        env.update({var: str(tmp_path / "s"), "AEP_EXPORT_AUTH__CLIENT_SECRET": SECRET_LOOKALIKE})
        needle = f"both AEP_EXPORT_AUTH__CLIENT_SECRET and {var} are set"
    else:  # the file holds something that is not a valid value: named, never echoed
        var = "AEP_EXPORT_EXPORT__CONCURRENCY_FILE"
        (tmp_path / "c").write_text(SECRET_LOOKALIKE + "\n")
        env[var] = str(tmp_path / "c")
        needle = "export.concurrency"
    p = run_cli("run", "--config", str(_config_without_secret(fake, tmp_path)), cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("aep-export: configuration error:") and needle in lines[0], p.stderr
    assert SECRET_LOOKALIKE not in p.stderr + p.stdout and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists() and fake.stats.tokens_issued == 0  # nothing attempted


@pytest.mark.parametrize("name, hint", [
    ("AEP_EXPORT_EXPORT__CONCURENCY", "did you mean AEP_EXPORT_EXPORT__CONCURRENCY?"),
    ("AEP_EXPORT_AUTH__CLIENT_SECRT_FILE", "did you mean AEP_EXPORT_AUTH__CLIENT_SECRET_FILE?"),
    ("AEP_EXPORT_DATASET", "did you mean AEP_EXPORT_DATASETS?"),
    ("AEP_EXPORT_EXPORT__RETRY__MAX", ""),
])
def test_an_aep_export_variable_that_names_no_setting_exits_2(fake, tmp_path: Path, name: str, hint: str) -> None:
    env = clean_env(**{name: "3"})
    p = run_cli("run", "--config", str(_config_without_secret(fake, tmp_path)), cwd=tmp_path,
                env={**env, "AEP_EXPORT_AUTH__CLIENT_SECRET": fake.client_secret})
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert f"environment variable {name}" in line and "names no setting" in line and "environment" in line
    assert hint in line and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists() and fake.stats.tokens_issued == 0


def test_a_list_variable_that_is_not_json_exits_2(tmp_path: Path) -> None:
    env = clean_env(AEP_EXPORT_PLATFORM__ORG_ID="X@AdobeOrg", AEP_EXPORT_AUTH__CLIENT_ID="c",
                    AEP_EXPORT_AUTH__CLIENT_SECRET="s", AEP_EXPORT_DATASETS="[5cd9146b31dae914b75f654f")
    p = run_cli("run", cwd=tmp_path, env=env)
    assert p.returncode == 2 and "AEP_EXPORT_DATASETS" in p.stderr and "JSON" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture
def no_aep_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.startswith("AEP_EXPORT_"):
            monkeypatch.delenv(k)
    return monkeypatch


BASE = {"AEP_EXPORT_PLATFORM__ORG_ID": "X@AdobeOrg", "AEP_EXPORT_AUTH__CLIENT_ID": "cid",
        "AEP_EXPORT_AUTH__CLIENT_SECRET": "s3cret-value", "AEP_EXPORT_DATASETS": '["5cd9146b31dae914b75f654f"]'}


@pytest.mark.parametrize("value", ["openid,AdobeID, read_organizations", '["openid", "AdobeID", "read_organizations"]'])
def test_scopes_as_a_comma_list_or_json(no_aep_env, value: str) -> None:
    s = load_settings(None, environ={**BASE, "AEP_EXPORT_AUTH__SCOPES": value})
    assert s.auth.scopes == ["openid", "AdobeID", "read_organizations"]


def test_scopes_as_a_comma_string_in_toml(tmp_path: Path, no_aep_env) -> None:
    path = tmp_path / "c.toml"
    path.write_text('datasets = ["5cd9146b31dae914b75f654f"]\n[platform]\norg_id = "X@AdobeOrg"\n'
                    '[auth]\nclient_id = "c"\nclient_secret = "s"\nscopes = "openid,session"\n')
    assert load_settings(path, environ={}).auth.scopes == ["openid", "session"]


def test_a_setting_file_wins_over_toml_and_loses_to_flags(tmp_path: Path, no_aep_env) -> None:
    (tmp_path / "n").write_text("7\n")
    path = tmp_path / "c.toml"
    path.write_text('datasets = ["5cd9146b31dae914b75f654f"]\n[platform]\norg_id = "X@AdobeOrg"\n'
                    '[auth]\nclient_id = "c"\nclient_secret = "s"\n[export]\nconcurrency = 3\n')
    env = {"AEP_EXPORT_EXPORT__CONCURRENCY_FILE": str(tmp_path / "n")}
    assert load_settings(path, environ=env).export.concurrency == 7
    assert load_settings(path, {"export": {"concurrency": 9}}, environ=env).export.concurrency == 9


def test_a_top_level_datasets_list_after_a_table_is_explained(tmp_path: Path, no_aep_env) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[platform]\norg_id = "X@AdobeOrg"\n[auth]\nclient_id = "c"\nclient_secret = "s"\n'
                    'datasets = ["5cd9146b31dae914b75f654f"]\n')  # TOML puts it into [auth]
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "auth.datasets: unknown setting" in str(info.value) and "before the first [section]" in str(info.value)


def test_the_example_config_loads_with_the_secret_from_the_environment(no_aep_env) -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    s = load_settings(example, environ={"AEP_EXPORT_AUTH__CLIENT_SECRET": "from-env"})
    assert [(d.id, d.batches, d.pinned) for d in s.datasets] == [("5cd9146b31dae914b75f654f", "latest", None)]
    assert s.auth.client_secret.get_secret_value() == "from-env" and s.audiences == []


@pytest.mark.parametrize("section", ["platform", "auth", "export", "store"])
def test_every_settings_table_is_reachable_from_the_environment(no_aep_env, section: str) -> None:
    """Each table's keys as AEP_EXPORT_<TABLE>__<KEY> (the README and config.example.toml say so);
    a table the variable check did not know made its variables exit 2."""
    from engine.config import Settings

    table = Settings.model_fields[section].annotation
    key, value, expected = {"platform": ("sandbox", "dev-1", "dev-1"), "auth": ("client_id", "other", "other"),
                            "export": ("concurrency", "5", 5), "store": ("uploads", "3", 3)}[section]
    assert key in table.model_fields
    s = load_settings(None, environ={**BASE, f"AEP_EXPORT_{section.upper()}__{key.upper()}": value})
    assert getattr(getattr(s, section), key) == expected
