"""What a run's first request (the IMS token) needs, read before the settings are validated.

Start-up time (issue #20): validating the settings takes pydantic and pydantic-settings, and the
run's first request waited for them and for the download machinery. The token request needs four
settings; this module reads them from the same sources, with the same precedence (the environment,
then AEP_EXPORT_*_FILE files, then the TOML file; flags set no auth key), and with the same rules
(`http_url`, `comma_list`: config.py validates with these very functions). Anything it does not
read exactly as the full settings would gives None: no early request. The full validation still
decides; a token asked for credentials it does not confirm is never used (platform/auth.py).

Standard library only (the point is to come before pydantic), like the other pieces kept here for
the same reason: the variable names and the `_FILE` convention (config_env.py re-exports them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "AEP_EXPORT_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
FILE_SUFFIX = "_FILE"
# What a completion hook is told (engine/hooks.py): not settings, so a hook may run aep-export itself
HOOK_ENV_PREFIX = ENV_PREFIX + "HOOK_"

DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com"
DEFAULT_SCOPES = ["openid", "AdobeID", "read_organizations", "additional_info.projectedProductContext", "session"]
_AUTH_KEYS = ("client_id", "client_secret", "access_token", "ims_url", "scopes")
_AUTH_ENV = ENV_PREFIX + "AUTH"


def http_url(v: str) -> str:
    """platform.url and auth.ims_url: an http(s) URL, without a trailing slash."""
    if not v.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL such as https://platform.adobe.io")
    return v.rstrip("/")


def comma_list(v: Any) -> Any:
    """auth.scopes: IMS takes them as one comma-separated list; that spelling (or JSON) is accepted too."""
    if isinstance(v, str):
        v = json.loads(v) if v.strip().startswith("[") else [s.strip() for s in v.split(",") if s.strip()]
    return v


def config_path_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    value = (os.environ if environ is None else environ).get(CONFIG_ENV, "").strip()
    return Path(value) if value else None


def read_setting_files(environ: Mapping[str, str]) -> dict[str, str]:
    """{AEP_EXPORT_<SETTING>: content} for each AEP_EXPORT_<SETTING>_FILE that is set."""
    present = {k.upper() for k in environ}
    values = {}
    for name, path in environ.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or not upper.endswith(FILE_SUFFIX):
            continue
        target = upper.removesuffix(FILE_SUFFIX)
        if target in present:
            raise ConfigError(f"both {target} and {name} are set in the environment: keep one of them")
        if not path.strip():
            raise ConfigError(f"environment variable {name} is empty: set it to the path of the file that holds the value")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"environment variable {name} names {path}, which does not exist") from None
        except UnicodeDecodeError:
            raise ConfigError(f"environment variable {name} names {path}, which is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"environment variable {name} names {path}, which cannot be read: "
                              f"{exc.strerror or type(exc).__name__}") from None
        values[target] = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    return values


@dataclass(frozen=True)
class ExchangeAuth:
    """The settings an IMS token exchange sends (the secret kept out of reprs)."""

    ims_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...]


def auth_as_given(config: Path | None, environ: Mapping[str, str]) -> ExchangeAuth | None:
    """The token exchange's settings as the sources give them, or None when they cannot be read
    exactly as the full settings would read them (then there is no early request)."""
    try:
        raw = _auth_values(config, environ)
        return None if raw is None else _exchange_auth(raw)
    except (ConfigError, OSError, ValueError):  # said by the full validation, which comes next
        return None


def _auth_values(config: Path | None, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """[auth]'s keys, each from the first source that sets it: environment, _FILE, TOML."""
    upper = [k.upper() for k in environ]
    if len(set(upper)) != len(upper) or _AUTH_ENV in upper or _AUTH_ENV + FILE_SUFFIX in upper:
        return None  # names told apart by case only, or [auth] as one JSON section: not read here
    values = _toml_auth(config)
    if values is None:
        return None
    files = read_setting_files(environ)
    env = {k.upper(): v for k, v in environ.items()}
    for key in _AUTH_KEYS:
        name = f"{_AUTH_ENV}__{key.upper()}"
        for source in (env, files):
            if name in source:
                values[key] = source[name]
                break
    return values


def _toml_auth(config: Path | None) -> dict[str, Any] | None:
    if config is None:
        return {}
    import tomllib

    with config.open("rb") as fh:
        auth = tomllib.load(fh).get("auth", {})
    return dict(auth) if isinstance(auth, dict) else None


def _exchange_auth(values: Mapping[str, Any]) -> ExchangeAuth | None:
    client_id, secret, token = (values.get(k) for k in ("client_id", "client_secret", "access_token"))
    ims_url, scopes = values.get("ims_url", DEFAULT_IMS_URL), comma_list(values.get("scopes", DEFAULT_SCOPES))
    if token or not (isinstance(client_id, str) and isinstance(secret, str) and secret and isinstance(ims_url, str)):
        return None  # a ready token needs no exchange; a missing or odd credential is the validation's to say
    if not (isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)):
        return None
    return ExchangeAuth(http_url(ims_url), client_id, secret, tuple(scopes))
