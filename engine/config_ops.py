"""Settings for running the export as a batch Job (issue #21): [metrics] (Prometheus, scraped or
pushed) and [hooks] (a command per finished batch). Key names are a contract, like the rest."""

from __future__ import annotations

import json
import re
import shlex
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from .config_entries import _Section

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Never handed to a hook, even when named in hooks.pass_env: the engine's own settings (secrets among them)
_NEVER_PASSED = "AEP_EXPORT_"


def split_host_port(value: str) -> tuple[str, int]:
    """'HOST:PORT' (':PORT' or '[::1]:PORT' too) -> (host, port); ValueError with a readable sentence."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9090, 127.0.0.1:9090 or :9090)")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsSettings(_Section):
    addr: str | None = Field(None, description="HOST:PORT to serve /metrics on while the run lasts (Prometheus scrapes it)")
    push: str | None = Field(None, description="Pushgateway URL: pushed every push_interval and at the end")
    push_interval: float = Field(15.0, ge=1.0, le=3600.0, description="seconds between pushes while the run lasts")
    job: str = Field("aep_export", min_length=1, description="the Pushgateway's job label (grouped by job and shard)")

    @field_validator("addr")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            split_host_port(v)
        return v

    @field_validator("push")
    @classmethod
    def _push_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be the Pushgateway's http(s) URL, e.g. http://pushgateway:9091")
        return v.rstrip("/") if v else v

    @property
    def enabled(self) -> bool:
        return bool(self.addr or self.push)


class HooksSettings(_Section):
    on_batch_complete: str | None = Field(None, description="command run for each batch exported and verified (_SUCCESS)")
    on_batch_failed: str | None = Field(None, description="command run for each batch that failed")
    timeout: float = Field(300.0, gt=0, le=86400.0, description="seconds a hook may run before it is killed")
    pass_env: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                     description="environment variables handed to hooks besides the basic ones")

    @field_validator("on_batch_complete", "on_batch_failed")
    @classmethod
    def _command(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                if not shlex.split(v):
                    raise ValueError("must not be empty")
            except ValueError as exc:  # an unclosed quote
                raise ValueError(f"not a command line: {exc}") from None
        return v

    @field_validator("pass_env", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = json.loads(v) if v.strip().startswith("[") else [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("pass_env")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.upper().startswith(_NEVER_PASSED):
                raise ValueError(f"{name}: the engine's own settings ({_NEVER_PASSED}*, secrets among them) are never handed to hooks")
        return v
