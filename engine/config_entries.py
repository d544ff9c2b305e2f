"""The entries of a configuration: `[[datasets]]` (which batches of which dataset) and
`[[audiences]]` (a segment export). Key names are a contract, like the rest of the config."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSettings(_Section):
    """One dataset and the batches of it to export. A plain string in `datasets = [...]` is an id."""

    id: str | None = None
    name: str | None = Field(None, description="looked up in Catalog: exactly one dataset must have it")
    batch: str | None = Field(None, description="kept from the first version: the same as batches = [batch]")
    batches: str | list[str] = Field("latest", description='"latest", "all" or a list of batch ids')
    since: datetime | None = Field(None, description="only batches created at or after this time")
    until: datetime | None = Field(None, description="only batches created before this time")
    via: Literal["data-access", "dlz"] = Field("data-access", description="the source: the Data Access API, or a "
                                               "dataset export run into the Data Landing Zone")
    reuse_run_within: float = Field(86400.0, gt=0, description='via = "dlz": export the flow\'s newest successful run '
                                    'when younger than this ("24h", "90m", "3600s" or seconds), else start a run')
    wait_timeout: float = Field(3600.0, gt=0, description='via = "dlz": seconds for an on-demand run to be accepted '
                                "and to finish")

    @field_validator("reuse_run_within", "wait_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _plain_id(cls, v: Any) -> Any:
        return {"id": v} if isinstance(v, str) else v

    @field_validator("id", "name", "batch")
    @classmethod
    def _non_empty(cls, v: str | None, info: Any) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(f"dataset {info.field_name} must not be empty")
        return v.strip() if v is not None and info.field_name != "name" else v

    @field_validator("batches", mode="before")
    @classmethod
    def _batch_choice(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("latest", "all"):
            raise ValueError('must be "latest", "all" or a list of batch ids')
        if isinstance(v, list):
            ids = [str(b).strip() for b in v]
            if not ids or not all(ids):
                raise ValueError("a list of batch ids must hold at least one id and no empty one")
            return list(dict.fromkeys(ids))
        return v

    @field_validator("since", "until", mode="before")
    @classmethod
    def _date_is_midnight(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime(v.year, v.month, v.day, tzinfo=UTC)
        return v

    @field_validator("since", "until")
    @classmethod
    def _utc_when_naive(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSettings:
        if (self.id is None) == (self.name is None):
            raise ValueError("set either id or name (a dataset name is looked up in Catalog)")
        if self.batch is not None and self.batches != "latest":
            raise ValueError("set batch or batches, not both (batch = \"x\" is the same as batches = [\"x\"])")
        if (self.since or self.until) and self.pinned:
            raise ValueError("since/until choose among the dataset's batches: they do not apply to pinned batch ids")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        if self.via == "dlz" and (self.pinned or self.batches != "latest" or self.since or self.until):
            raise ValueError('via = "dlz" exports one dataset export run: batches, batch, since and until do not apply')
        return self

    @property
    def pinned(self) -> list[str] | None:
        """Batch ids the user named, exported whatever their status."""
        if self.batch is not None:
            return [self.batch]
        return list(self.batches) if isinstance(self.batches, list) else None

    @property
    def label(self) -> str:
        return self.id if self.id is not None else f"name:{self.name}"

    def window_ms(self) -> tuple[int | None, int | None]:
        """(createdAfter, createdBefore) for Catalog, both exclusive: since is inclusive, until is not."""
        after = _epoch_ms(self.since) - 1 if self.since else None
        before = _epoch_ms(self.until) if self.until else None
        return after, before


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """"24h", "90m", "3600s", "2d" or a number of seconds, as seconds."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise ValueError(f'{text!r} is not a duration: a number of seconds, or one with s, m, h or d ("24h")')
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def _epoch_ms(when: datetime) -> int:
    """Exact epoch milliseconds (float timestamps can be off by one at a window's edge)."""
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


class AudienceSettings(_Section):
    """An audience (segment) export: an existing export job, or one this tool starts for a segment."""

    export_job_id: str | None = Field(None, description="segmentation export job whose batch(es) to export")
    segment_id: str | None = Field(None, description="segment to export: a dataset and an export job are created for it")
    dataset_id: str | None = Field(None, description="with segment_id: export into this (profile union) dataset instead of a new one")
    wait_timeout: float = Field(3600.0, gt=0, description="how long to wait for the job and its batch to succeed")

    @field_validator("export_job_id", "segment_id", "dataset_id", mode="before")
    @classmethod
    def _as_str(cls, v: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if not str(v).strip():
            raise ValueError("must not be empty")
        return str(v).strip()

    @model_validator(mode="after")
    def _one_source(self) -> AudienceSettings:
        if (self.export_job_id is None) == (self.segment_id is None):
            raise ValueError("set either export_job_id (a running or finished job) or segment_id (a job is started)")
        if self.dataset_id is not None and self.segment_id is None:
            raise ValueError("dataset_id goes with segment_id (an export job already names its dataset)")
        return self

    @property
    def label(self) -> str:
        return f"audience:{self.export_job_id}" if self.export_job_id else f"audience:segment:{self.segment_id}"
