"""Configuration: TOML file < environment (AEP_EXPORT_..., nested with __) < CLI flags.

The key names are a contract shared with other tools; add keys, never rename them.
Secrets are SecretStr so they never print in reprs, logs or error messages. Any setting can
also come from a file, the way containers hand secrets over: AEP_EXPORT_<SETTING>_FILE=/path.
An AEP_EXPORT_* variable that names no setting is an error, like an unknown TOML key.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from .config_entries import AudienceSettings as AudienceSettings  # [[datasets]] and [[audiences]]: re-exported
from .config_entries import DatasetSettings as DatasetSettings
from .config_entries import _Section
from .config_env import CONFIG_ENV as CONFIG_ENV  # re-exported for the CLI
from .config_env import ENV_PREFIX as ENV_PREFIX
from .config_env import (
    PlainEnvSource,
    SettingFilesSource,
    check_env_names,
    field_of,
    read_setting_files,
)
from .config_env import config_path_from_env as config_path_from_env
from .config_ops import HooksSettings as HooksSettings  # [metrics] and [hooks] (issue #21): re-exported
from .config_ops import MetricsSettings as MetricsSettings
from .config_store import StoreSettings as StoreSettings  # out_dir = "s3://…" and [store]: re-exported
from .config_store import StoreURL as StoreURL
from .config_store import _out_dir
from .errors import ConfigError
from .retry import MAX_ATTEMPTS
from .units import parse_bytes

DEFAULT_SCOPES = ["openid", "AdobeID", "read_organizations", "additional_info.projectedProductContext", "session"]

_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml_file", default=None)
_file_values: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("file_values", default={})  # noqa: B039 - never mutated: set() replaces the whole dict
_environ: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("environ", default=os.environ)
_entries_required: contextvars.ContextVar[bool] = contextvars.ContextVar("entries_required", default=True)
_DATASET_ID = re.compile(r"[0-9a-fA-F]{24}")


def looks_like_dataset_id(value: str) -> bool:
    """Catalog dataset ids are 24 hex digits (5cd9146b31dae914b75f654f); anything else is a name."""
    return bool(_DATASET_ID.fullmatch(value.strip()))


def _http_url(v: str) -> str:
    if not v.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL such as https://platform.adobe.io")
    return v.rstrip("/")


HttpUrlText = Annotated[str, AfterValidator(_http_url)]


def _bytes_per_second(v: Any) -> Any:
    """export.bwlimit: "20M", "512K", "1.5GiB" (engine/units.py) or a number of bytes; at least 1 KiB/s."""
    if isinstance(v, str):
        v = parse_bytes(v) if v.strip().lower() not in ("", "none", "off") else None
    if isinstance(v, bool) or (isinstance(v, int | float) and v and v < 1024):
        raise ValueError("must be a size of at least 1K (bytes/s), or 0 for no cap")
    return v or None




class PlatformSettings(_Section):
    url: HttpUrlText = "https://platform.adobe.io"
    org_id: str
    sandbox: str = "prod"

    @field_validator("org_id")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty (your IMS org id, e.g. 1234ABCD@AdobeOrg)")
        return v.strip()

    @field_validator("sandbox")
    @classmethod
    def _lowercase(cls, v: str) -> str:
        # The gateway wants the sandbox name all-lowercase.
        return v.strip().lower()


class AuthSettings(_Section):
    client_id: str
    client_secret: SecretStr = SecretStr("")
    access_token: SecretStr = SecretStr("")
    ims_url: HttpUrlText = "https://ims-na1.adobelogin.com"
    scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_SCOPES))

    @field_validator("scopes", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        """IMS takes scopes as one comma-separated list: accept that spelling (or JSON) too."""
        if isinstance(v, str):
            v = json.loads(v) if v.strip().startswith("[") else [s.strip() for s in v.split(",") if s.strip()]
        return v

    @model_validator(mode="after")
    def _some_credential(self) -> AuthSettings:
        if not self.client_secret.get_secret_value() and not self.access_token.get_secret_value():
            raise ValueError("set auth.client_secret (OAuth Server-to-Server) or auth.access_token")
        return self


class ExportSettings(_Section):
    out_dir: Annotated[Path | StoreURL, PlainValidator(_out_dir)] = Path("exports")  # a folder or s3://bucket/prefix
    concurrency: int = Field(16, ge=1, le=256, description="parallel downloads (connections)")
    discovery_concurrency: int = Field(16, ge=1, le=64, description="datasets discovered at once")
    created_client: str | None = Field(None, description="Catalog createdClient filter, e.g. acp_foundation_push")
    connect_timeout: float = Field(30.0, gt=0)
    read_timeout: float = Field(60.0, gt=0, description="idle timeout between body reads")
    response_time_limit: float = Field(60.0, gt=0, description="the gateway cuts any response at this age")
    max_attempts: int = Field(MAX_ATTEMPTS, ge=1, le=100, description="tries per request")
    max_file_attempts: int = Field(12, ge=1, le=1000, description="failed requests a file may cost in all")
    max_listing_pages: int = Field(1000, ge=1, le=1_000_000,
                                   description="pages one Data Access listing may have before it is taken for a paging loop")
    max_file_requests: int = Field(100, ge=1, description="requests a file may cost in all, plus one per 256 KiB of it")
    lowest_speed: int = Field(1024, ge=0, description="bytes/s under which a response is cut and retried (0: never)")
    lowest_speed_time: float = Field(15.0, gt=0, description="seconds a response may stay under lowest_speed")
    backoff_base: float = Field(0.5, ge=0)
    backoff_cap: float = Field(30.0, gt=0)
    bwlimit: Annotated[int | None, BeforeValidator(_bytes_per_second)] = Field(
        None, description="bytes/s over every connection: 20M, 512K, 1.5GiB or a number (none or 0: no cap)")
    tps_limit: float | None = Field(None, ge=0, description="requests/s to the gateway (none or 0: no cap)")
    tps_burst: int = Field(1, ge=1, le=1000, description="requests tps_limit lets through at once after a quiet spell")
    write_buffer: int = Field(2 << 20, ge=64 << 10, le=64 << 20, description="bytes coalesced per disk write")
    write_strategy: Literal["coalesced", "aiofiles"] = Field(
        "coalesced", description="coalesced: batched pwritev off the loop (measured faster); aiofiles: one call per chunk"
    )
    fsync: bool = Field(True, description="fsync each file before its rename (durable across power loss)")
    event_loop: Literal["asyncio", "uvloop"] = Field("asyncio", description="uvloop if installed (pip install uvloop)")
    verify_parquet: bool = True
    deep_verify: bool = Field(False, description="also read every parquet page (checks page CRCs)")
    layout: Literal["plain", "hive"] = Field(
        "plain", description="plain: {dataset}/{batch}/…; hive: dataset={dataset}/batch={batch}/… (readers get both as columns)")


def _no_entries() -> list[Any]:
    """An empty list, from a Python function rather than `list` (start-up time, issue #20): pydantic
    reads each default factory's signature, and a builtin's is parsed from text by `tokenize`, whose
    first use compiles a large regular expression (~20 ms before the first request)."""
    return []


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    platform: PlatformSettings
    auth: AuthSettings
    export: ExportSettings = Field(default_factory=ExportSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    hooks: HooksSettings = Field(default_factory=HooksSettings)
    datasets: list[DatasetSettings] = Field(default_factory=_no_entries)
    audiences: list[AudienceSettings] = Field(default_factory=_no_entries)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings, PlainEnvSource(settings_cls, _environ.get()), SettingFilesSource(settings_cls, _file_values.get())]
        toml_path = _toml_file.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _something_to_export(self) -> Settings:
        if not self.datasets and not self.audiences and _entries_required.get():
            raise ValueError("nothing to export: add at least one dataset (datasets = [\"id\"] or [[datasets]]) or an [[audiences]] entry")
        return self


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                  *, entries_required: bool = True) -> Settings:
    """Build Settings from a TOML file, the environment (and files it names) and CLI overrides.

    Every failure becomes a ConfigError with one readable paragraph naming the settings.
    `entries_required=False` for commands that export nothing (`list`): no dataset needed.
    """
    environ = os.environ if environ is None else environ
    check_env_names(environ, _setting_env_names())
    files = read_setting_files(environ)
    if path is not None:
        _check_toml(path)
    tokens = _toml_file.set(path), _file_values.set(files), _environ.set(environ), _entries_required.set(entries_required)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except SettingsError as exc:  # a list or section variable that is not JSON
        raise ConfigError(f"an {ENV_PREFIX}* variable could not be parsed ({field_of(exc)}): lists and sections "
                          "are JSON there, e.g. AEP_EXPORT_DATASETS='[\"5cd9146b31dae914b75f654f\"]'") from None
    finally:
        _toml_file.reset(tokens[0])
        _file_values.reset(tokens[1])
        _environ.reset(tokens[2])
        _entries_required.reset(tokens[3])


def _setting_env_names() -> dict[str, str]:
    """Every variable that names a setting (upper case) -> the setting's dotted name."""
    names = {}
    for field, info in Settings.model_fields.items():
        names[ENV_PREFIX + field.upper()] = field
        section = info.annotation  # a table of settings ([export], [store], ...), not a list of entries
        for sub in section.model_fields if isinstance(section, type) and issubclass(section, _Section) else ():
            names[f"{ENV_PREFIX}{field.upper()}__{sub.upper()}"] = f"{field}.{sub}"
    return names


def _check_toml(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (PermissionError, IsADirectoryError, OSError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _describe(exc: ValidationError, path: Path | None) -> str:
    """One paragraph: each bad setting, what is wrong, and where it can be set. No input values (secrets)."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling against config.example.toml)"
            if len(err["loc"]) == 2 and err["loc"][1] in ("datasets", "audiences"):
                msg += f"; in TOML a top-level `{err['loc'][1]} = [...]` must come before the first [section]"
        elif err["type"] == "missing":
            env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"] if not isinstance(p, int))
            msg = f"required but not set (in the config file, or as {env})"
        problems.append(f"{loc}: {msg}")
    where = f" in {path}" if path else ""
    return f"invalid configuration{where}: " + "; ".join(problems) + "."
