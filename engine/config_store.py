"""Output to object storage: `export.out_dir = "s3://bucket/prefix"` and the `[store]` section."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr

from .config_entries import _Section


class StoreURL(str):
    """An object store as out_dir: `s3://bucket/prefix`, `az://container/prefix` or ADLS Gen2's
    `abfs[s]://container@account.dfs.core.windows.net/prefix`. Kept a string (pathlib would
    collapse `//`); `/` joins keys."""

    SCHEMES = ("s3", "az", "abfs", "abfss")
    AZURE = ("az", "abfs", "abfss")

    @classmethod
    def parse(cls, value: str) -> StoreURL:
        scheme, _, rest = value.partition("://")
        scheme = scheme.lower()
        bucket, _, prefix = rest.partition("/")
        if scheme not in cls.SCHEMES:
            raise ValueError(f"{scheme}:// is not supported (s3://, az:// or abfs://; see README, Object storage)")
        if scheme.startswith("abfs"):
            container, at, host = bucket.partition("@")
            if not (container and at and host.partition(".")[0]):
                raise ValueError(f"an ADLS Gen2 URL names its container and account: {scheme}://container@account.dfs.core.windows.net/prefix")
            bucket = f"{container}@{host.lower()}"
        if not bucket:
            raise ValueError(f"an object storage URL needs a bucket or container: {scheme}://bucket/prefix")
        prefix = "/".join(p for p in prefix.split("/") if p)
        return cls(f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else ""))

    @property
    def scheme(self) -> str:
        return self.partition("://")[0]

    @property
    def is_azure(self) -> bool:
        return self.scheme in self.AZURE

    @property
    def bucket(self) -> str:
        """The S3 bucket or the Azure container."""
        return self.split("://", 1)[1].partition("/")[0].partition("@")[0]

    @property
    def account(self) -> str:
        """The Azure storage account an abfs:// URL names ("" where the URL does not say)."""
        host = self.split("://", 1)[1].partition("/")[0].partition("@")[2]
        return host.partition(".")[0]

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
    raise ValueError("must be a folder or an s3://bucket/prefix, az://container/prefix or abfs:// URL")


class StoreSettings(_Section):
    """[store]: output to object storage (export.out_dir = "s3://bucket/prefix" or "az://container/prefix").
    S3's credentials, region and endpoint come from its own standard environment (AWS_*), never
    from here; Azure's from AZURE_STORAGE_* or the azure_* keys below (which win), else
    DefaultAzureCredential."""

    part_size: int = Field(8 << 20, ge=5 << 20, le=5 << 30,
                           description="multipart part size; raised for a file that would need more than 10,000 parts")
    spool_dir: Path | None = Field(None, description="local folder for the parts in flight (default: the system temp folder)")
    spool_limit: int = Field(256 << 20, ge=16 << 20,
                             description="bytes of parts kept on local disk at once (at least one part per stream)")
    uploads: int = Field(8, ge=1, le=64, description="parts uploaded at once")
    # Azure Blob / ADLS Gen2 (az://, abfs://): the same as AZURE_STORAGE_CONNECTION_STRING, _ACCOUNT_NAME,
    # _KEY and _SAS_TOKEN; secrets, so also from files (AEP_EXPORT_STORE__AZURE_ACCOUNT_KEY_FILE=/run/secrets/…)
    azure_connection_string: SecretStr = Field(SecretStr(""), description="Azure storage connection string")
    azure_account_name: str = Field("", description="Azure storage account (az:// URLs; abfs:// URLs name it)")
    azure_account_key: SecretStr = Field(SecretStr(""), description="Azure storage account key")
    azure_sas_token: SecretStr = Field(SecretStr(""), description="Azure SAS token (read, write, list, delete)")


def store_from_env(environ: Mapping[str, str]) -> StoreSettings:
    """[store] from AEP_EXPORT_STORE__* alone (their _FILE secrets included): for `verify` and
    `status`, which read a bucket or container without a config file."""
    from pydantic import ValidationError

    from .config_env import ENV_PREFIX, FILE_SUFFIX, read_setting_files
    from .errors import ConfigError

    prefix = ENV_PREFIX + "STORE__"
    mine = {k.upper(): v for k, v in environ.items() if k.upper().startswith(prefix)}
    values = {**{k: v for k, v in mine.items() if not k.endswith(FILE_SUFFIX)}, **read_setting_files(mine)}
    try:
        return StoreSettings.model_validate({k.removeprefix(prefix).lower(): v for k, v in values.items()})
    except ValidationError as exc:
        raise ConfigError(f"{prefix}*: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
