"""Configuration: TOML file < environment (AEP_EXPORT_..., nested with __) < CLI flags.

The key names are a contract shared with other tools; add keys, never rename them.
Secrets are SecretStr so they never print in reprs, logs or error messages.
"""

from __future__ import annotations

import contextvars
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from .errors import ConfigError

ENV_PREFIX = "AEP_EXPORT_"
DEFAULT_SCOPES = ["openid", "AdobeID", "read_organizations", "additional_info.projectedProductContext", "session"]

_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml_file", default=None)


def _http_url(v: str) -> str:
    if not v.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL such as https://platform.adobe.io")
    return v.rstrip("/")


HttpUrlText = Annotated[str, AfterValidator(_http_url)]


class StoreURL(str):
    """`s3://bucket/prefix` as out_dir: kept a string (pathlib would collapse `//`); `/` joins keys."""

    SCHEMES = ("s3",)

    @classmethod
    def parse(cls, value: str) -> StoreURL:
        scheme, _, rest = value.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme.lower() not in cls.SCHEMES:
            raise ValueError(f"{scheme}:// is not supported (only s3://; see README, Object storage)")
        if not bucket:
            raise ValueError("an object storage URL needs a bucket: s3://bucket/prefix")
        prefix = "/".join(p for p in prefix.split("/") if p)
        return cls(f"{scheme.lower()}://{bucket}" + (f"/{prefix}" if prefix else ""))

    @property
    def bucket(self) -> str:
        return self.split("://", 1)[1].partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix, without slashes at either end ("" for the bucket's root)."""
        return self.split("://", 1)[1].partition("/")[2]

    def __truediv__(self, rel: str) -> StoreURL:
        return StoreURL(f"{self.rstrip('/')}/{rel}")


def _out_dir(value: Any) -> Path | StoreURL:
    if isinstance(value, StoreURL):
        return value
    if isinstance(value, str) and "://" in value:
        return StoreURL.parse(value)
    if isinstance(value, str | Path):
        return Path(value)
    raise ValueError("must be a folder or an s3://bucket/prefix URL")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    scopes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCOPES))

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
    max_attempts: int = Field(8, ge=1, le=100, description="tries per request")
    max_file_attempts: int = Field(12, ge=1, le=1000, description="failed requests a file may cost in all")
    backoff_base: float = Field(0.5, ge=0)
    backoff_cap: float = Field(30.0, gt=0)
    write_buffer: int = Field(2 << 20, ge=64 << 10, le=64 << 20, description="bytes coalesced per disk write")
    write_strategy: Literal["coalesced", "aiofiles"] = Field(
        "coalesced", description="coalesced: batched pwritev off the loop (measured faster); aiofiles: one call per chunk"
    )
    fsync: bool = Field(True, description="fsync each file before its rename (durable across power loss)")
    event_loop: Literal["asyncio", "uvloop"] = Field("asyncio", description="uvloop if installed (pip install uvloop)")
    verify_parquet: bool = True
    deep_verify: bool = Field(False, description="also read every parquet page (checks page CRCs)")


class StoreSettings(_Section):
    """[store]: output to object storage (export.out_dir = "s3://bucket/prefix"). Credentials,
    region and endpoint come from the store's own standard environment (AWS_*), never from here."""

    part_size: int = Field(8 << 20, ge=5 << 20, le=5 << 30,
                           description="multipart part size; raised for a file that would need more than 10,000 parts")
    spool_dir: Path | None = Field(None, description="local folder for the parts in flight (default: the system temp folder)")
    spool_limit: int = Field(256 << 20, ge=16 << 20,
                             description="bytes of parts kept on local disk at once (at least one part per stream)")
    uploads: int = Field(8, ge=1, le=64, description="parts uploaded at once")


class DatasetSettings(_Section):
    id: str
    batch: str | None = Field(None, description="export this batch instead of the latest successful one")

    @field_validator("id")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("dataset id must not be empty")
        return v.strip()


class AudienceSettings(_Section):
    export_job_id: str = Field(description="segmentation export job whose batch(es) to export")
    wait_timeout: float = Field(3600.0, gt=0, description="how long to wait for the job to succeed")

    @field_validator("export_job_id", mode="before")
    @classmethod
    def _as_str(cls, v: Any) -> str:
        return str(v)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    platform: PlatformSettings
    auth: AuthSettings
    export: ExportSettings = Field(default_factory=ExportSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    datasets: list[DatasetSettings] = Field(default_factory=list)
    audiences: list[AudienceSettings] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_file.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _something_to_export(self) -> Settings:
        if not self.datasets and not self.audiences:
            raise ValueError("nothing to export: add at least one [[datasets]] id (or an [[audiences]] export_job_id)")
        return self


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build Settings from a TOML file, the environment and CLI overrides (highest first).

    Every failure becomes a ConfigError with one readable paragraph naming the settings.
    """
    if path is not None:
        _check_toml(path)
    token = _toml_file.set(path)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    finally:
        _toml_file.reset(token)


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
        elif err["type"] == "missing":
            env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"] if not isinstance(p, int))
            msg = f"required but not set (in the config file, or as {env})"
        problems.append(f"{loc}: {msg}")
    where = f" in {path}" if path else ""
    return f"invalid configuration{where}: " + "; ".join(problems) + "."
