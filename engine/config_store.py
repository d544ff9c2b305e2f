"""Output to object storage: `export.out_dir = "s3://bucket/prefix"` and the `[store]` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from .config_entries import _Section


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


class StoreSettings(_Section):
    """[store]: output to object storage (export.out_dir = "s3://bucket/prefix"). Credentials,
    region and endpoint come from the store's own standard environment (AWS_*), never from here."""

    part_size: int = Field(8 << 20, ge=5 << 20, le=5 << 30,
                           description="multipart part size; raised for a file that would need more than 10,000 parts")
    spool_dir: Path | None = Field(None, description="local folder for the parts in flight (default: the system temp folder)")
    spool_limit: int = Field(256 << 20, ge=16 << 20,
                             description="bytes of parts kept on local disk at once (at least one part per stream)")
    uploads: int = Field(8, ge=1, le=64, description="parts uploaded at once")
