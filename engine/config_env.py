"""Settings from the environment the way containers hand them over.

- AEP_EXPORT_<SECTION>__<KEY>=value: one setting (pydantic-settings reads these).
- AEP_EXPORT_<SECTION>__<KEY>_FILE=/run/secrets/x: the same setting read from a file (the `_FILE`
  convention of Docker and Kubernetes secrets); one trailing newline is dropped.
- AEP_EXPORT_CONFIG=/etc/aep-export.toml: the config file when --config is not given.
- Any other AEP_EXPORT_* variable is a typo that would silently do nothing: an error, like an
  unknown TOML key. Errors name the variable (and a path), never a value.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsError

from .errors import ConfigError

ENV_PREFIX = "AEP_EXPORT_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
FILE_SUFFIX = "_FILE"
# What a completion hook is told (engine/hooks.py): not settings, so a hook may run aep-export itself
HOOK_ENV_PREFIX = ENV_PREFIX + "HOOK_"


class PlainEnvSource(EnvSettingsSource):
    """The given environment without the *_FILE variables (SettingFilesSource reads those)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names are matched without case, as pydantic-settings does by default.
        return {k.lower(): v for k, v in self._environ.items() if not k.upper().endswith(FILE_SUFFIX)}


class SettingFilesSource(EnvSettingsSource):
    """Values of AEP_EXPORT_<SETTING>_FILE files, parsed exactly like the variable itself would be."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str]):
        self._values = {k.lower(): v for k, v in values.items()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._values


def config_path_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    value = (os.environ if environ is None else environ).get(CONFIG_ENV, "").strip()
    return Path(value) if value else None


def check_env_names(environ: Mapping[str, str], known: Mapping[str, str]) -> None:
    """Every AEP_EXPORT_* variable (with or without _FILE) must be one of `known` (upper case)."""
    unknown = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV or upper.startswith(HOOK_ENV_PREFIX):
            continue
        setting = upper.removesuffix(FILE_SUFFIX)
        if setting not in known:
            close = difflib.get_close_matches(setting, list(known), n=1)
            hint = f" (did you mean {close[0]}{upper[len(setting):]}?)" if close else ""
            unknown.append(name + hint)
    if unknown:
        many = len(unknown) > 1
        raise ConfigError(f"environment variable{'s' if many else ''} {', '.join(sorted(unknown))} name{'' if many else 's'} "
                          f"no setting: every {ENV_PREFIX}* variable in the environment is read as one (sections nested "
                          f"with __, e.g. {ENV_PREFIX}EXPORT__CONCURRENCY; a file's content with the {FILE_SUFFIX} suffix; "
                          "see config.example.toml)")


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


def field_of(exc: SettingsError) -> str:
    """The variable behind a pydantic-settings parse error (its message names the field only)."""
    m = re.search(r'field "(\w+)"', str(exc))
    return f"{ENV_PREFIX}{m.group(1).upper()}…" if m else "see the variables set"
