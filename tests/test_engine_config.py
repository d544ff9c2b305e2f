"""Configuration: TOML < env (AEP_EXPORT_*) < overrides/flags, and readable ConfigErrors without secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import clean_env, run_cli

from engine.config import load_settings
from engine.errors import ConfigError

SECRET = "s3cr3t-Value-0xDEADBEEF"

BASE_TOML = f"""
[platform]
url = "http://127.0.0.1:9/"
org_id = "ABC123@AdobeOrg"
sandbox = "Prod"

[auth]
client_id = "my-client"
client_secret = "{SECRET}"

[export]
out_dir = "toml-out"
concurrency = 3

[[datasets]]
id = "ds-1"
"""


@pytest.fixture
def no_aep_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.startswith("AEP_EXPORT_"):
            monkeypatch.delenv(k)
    return monkeypatch


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_toml_values_are_loaded_and_normalised(tmp_path: Path, no_aep_env) -> None:
    s = load_settings(write(tmp_path, BASE_TOML))
    assert s.platform.url == "http://127.0.0.1:9"  # trailing slash dropped
    assert s.platform.sandbox == "prod"  # gateway wants lowercase
    assert s.auth.client_secret.get_secret_value() == SECRET
    assert s.export.concurrency == 3
    assert s.export.out_dir == Path("toml-out")
    assert [d.id for d in s.datasets] == ["ds-1"]
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


def test_env_overrides_toml_and_flags_override_env(tmp_path: Path, no_aep_env) -> None:
    path = write(tmp_path, BASE_TOML)
    no_aep_env.setenv("AEP_EXPORT_AUTH__CLIENT_SECRET", "from-env-secret")
    no_aep_env.setenv("AEP_EXPORT_EXPORT__CONCURRENCY", "7")

    s = load_settings(path)
    assert s.auth.client_secret.get_secret_value() == "from-env-secret"
    assert s.auth.client_id == "my-client"  # the rest of [auth] still comes from the file
    assert s.export.concurrency == 7
    assert s.export.out_dir == Path("toml-out")  # the rest of [export] still comes from the file

    s = load_settings(path, {"export": {"concurrency": 9, "out_dir": tmp_path / "flag-out"}})
    assert s.export.concurrency == 9  # flags win over env
    assert s.export.out_dir == tmp_path / "flag-out"
    assert s.auth.client_secret.get_secret_value() == "from-env-secret"
    assert s.platform.org_id == "ABC123@AdobeOrg"


def test_env_alone_is_a_complete_configuration(no_aep_env) -> None:
    for k, v in {"PLATFORM__ORG_ID": "X@AdobeOrg", "AUTH__CLIENT_ID": "cid", "AUTH__CLIENT_SECRET": SECRET,
                 "DATASETS": '[{"id": "ds-9"}]'}.items():
        no_aep_env.setenv("AEP_EXPORT_" + k, v)
    s = load_settings(None)
    assert s.platform.org_id == "X@AdobeOrg" and [d.id for d in s.datasets] == ["ds-9"]


def _config_error(path: Path | None, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, overrides)
    msg = str(info.value)
    assert SECRET not in msg
    assert "\n" not in msg.strip()  # one paragraph
    return msg


def test_unknown_key_is_named(tmp_path: Path, no_aep_env) -> None:
    msg = _config_error(write(tmp_path, BASE_TOML.replace("concurrency = 3", "concurrencyy = 3")))
    assert "export.concurrencyy" in msg and "unknown setting" in msg


def test_unknown_key_holding_a_secret_does_not_echo_it(tmp_path: Path, no_aep_env) -> None:
    text = BASE_TOML.replace(f'client_secret = "{SECRET}"', f'client_secrett = "{SECRET}"')
    msg = _config_error(write(tmp_path, text))
    assert "auth.client_secrett" in msg


def test_secret_of_wrong_type_is_named_not_echoed(tmp_path: Path, no_aep_env) -> None:
    text = BASE_TOML.replace(f'client_secret = "{SECRET}"', "client_secret = 987654321987")
    msg = _config_error(write(tmp_path, text))
    assert "auth.client_secret" in msg and "987654321987" not in msg


def test_missing_org_id_names_setting_and_env_var(tmp_path: Path, no_aep_env) -> None:
    msg = _config_error(write(tmp_path, BASE_TOML.replace('org_id = "ABC123@AdobeOrg"\n', "")))
    assert "platform.org_id" in msg and "AEP_EXPORT_PLATFORM__ORG_ID" in msg


def test_missing_file(tmp_path: Path, no_aep_env) -> None:
    msg = _config_error(tmp_path / "nope.toml")
    assert "nope.toml" in msg and "does not exist" in msg


def test_unreadable_file(tmp_path: Path, no_aep_env) -> None:
    (tmp_path / "adir.toml").mkdir()  # a directory: unreadable even for root
    msg = _config_error(tmp_path / "adir.toml")
    assert "adir.toml" in msg and "cannot be read" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_unreadable_file_permissions(tmp_path: Path, no_aep_env) -> None:
    p = write(tmp_path, BASE_TOML)
    p.chmod(0)
    msg = _config_error(p)
    assert "cannot be read" in msg


def test_invalid_toml_does_not_echo_the_secret_line(tmp_path: Path, no_aep_env) -> None:
    text = BASE_TOML.replace(f'client_secret = "{SECRET}"', f"client_secret = {SECRET}")  # unquoted
    msg = _config_error(write(tmp_path, text))
    assert "not valid TOML" in msg and "config.toml" in msg


def test_bad_env_value_is_named(tmp_path: Path, no_aep_env) -> None:
    no_aep_env.setenv("AEP_EXPORT_EXPORT__CONCURRENCY", "lots")
    msg = _config_error(write(tmp_path, BASE_TOML))
    assert "export.concurrency" in msg and "lots" not in msg


def test_no_credentials_at_all(tmp_path: Path, no_aep_env) -> None:
    msg = _config_error(write(tmp_path, BASE_TOML.replace(f'client_secret = "{SECRET}"\n', "")))
    assert "auth" in msg and "client_secret" in msg


# ----------------------------------------------------------------------------- CLI: exit 2


CLI_CASES = {
    "unknown_key": (lambda p: BASE_TOML.replace("concurrency = 3", "concurrencyy = 3"), "export.concurrencyy"),
    "missing_org": (lambda p: BASE_TOML.replace('org_id = "ABC123@AdobeOrg"\n', ""), "platform.org_id"),
    "invalid_toml": (lambda p: BASE_TOML.replace(f'client_secret = "{SECRET}"', f"client_secret = {SECRET}"), "not valid TOML"),
    "missing_file": (None, "does not exist"),
    "directory": ("dir", "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_config_errors_exit_2_without_traceback(tmp_path: Path, case: str) -> None:
    make, needle = CLI_CASES[case]
    path = tmp_path / "config.toml"
    if make == "dir":
        path.mkdir()
    elif make is not None:
        path.write_text(make(path))
    p = run_cli("run", "--config", str(path), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    assert SECRET not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr  # one paragraph
    assert lines[0].startswith("aep-export: configuration error:") and needle in lines[0]
    assert not (tmp_path / "out").exists()  # nothing attempted


def test_cli_without_any_configuration_exits_2(tmp_path: Path) -> None:
    p = run_cli("run", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--config" in p.stderr


def test_cli_env_secret_is_never_printed_on_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(BASE_TOML.replace('org_id = "ABC123@AdobeOrg"\n', "").replace(f'client_secret = "{SECRET}"\n', ""))
    env = clean_env(AEP_EXPORT_AUTH__CLIENT_SECRET=SECRET, AEP_EXPORT_EXPORT__CONCURRENCY="0")
    p = run_cli("run", "--config", str(path), cwd=tmp_path, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "platform.org_id" in p.stderr and "export.concurrency" in p.stderr
    assert SECRET not in p.stderr + p.stdout
