"""`aep-export list`: the sandbox's datasets by name; the names closest to one that matches none; and
the names a run shows beside the ids it was given (DatasetNames).

Catalog `GET /dataSets` (aep-api.md §3.5, §3.6) answers an object keyed by id with no paging
metadata: pages are asked with `start` and `limit` (100) until one comes back short, ordered by
`created` so that a dataset made meanwhile only adds to the end; every key is kept once. A
dataset's last successful batch is the one `run` exports by default (selection.LatestBatches: one
grouped Catalog query per 25 datasets), with the size and record count its metrics state. A
dataset whose `lastSuccessfulBatch` the Catalog gives as empty is not asked about.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from ..checks.integrity import expected_record_count
from ..config import Settings
from ..errors import CredentialsRejected, ExportError, PlatformUnreachable
from ..retry import RetryPolicy, describe, failure
from .auth import TokenProvider
from .catalog import NoBatch, close_names, did_you_mean, entries, sandbox_datasets  # noqa: F401 - re-exported
from .client import PlatformClient, make_session
from .discovery import Discovery
from .selection import LatestBatches

log = structlog.get_logger("aep_export.listing")



@dataclass
class DatasetRow:
    id: str
    name: str | None
    created: int | None  # epoch ms, as the Catalog gives it
    batch_id: str | None = None  # the last successful batch: what `run` exports by default
    batch_created: int | None = None
    bytes: int | None = None  # as the batch's metrics state it
    records: int | None = None
    error: str | None = None  # the batch could not be looked up (the dataset is still listed)


async def list_datasets(settings: Settings, name_filter: str | None = None) -> list[DatasetRow]:
    """The sandbox's datasets whose name contains `name_filter` (any case), by name, with their last
    successful batch. Credentials or an unreachable platform raise."""
    ex = settings.export
    policy = RetryPolicy(max_attempts=ex.max_attempts, base=ex.backoff_base, cap=ex.backoff_cap)
    async with make_session(settings) as session:
        tokens = TokenProvider(settings.auth, session, policy)
        discovery = Discovery(PlatformClient(settings, session, tokens, policy), ex.created_client, ex.max_listing_pages)
        await tokens.token()
        found = await sandbox_datasets(discovery, "name,created,lastSuccessfulBatch")
        rows = [(_row(key, obj), obj) for key, obj in found if _matches(obj.get("name"), name_filter)]
        latest = LatestBatches(discovery, [row.id for row, obj in rows if _may_have_batch(obj)])
        limiter = anyio.CapacityLimiter(ex.discovery_concurrency)
        async with anyio.create_task_group() as tg:
            for row, obj in rows:
                if _may_have_batch(obj):
                    tg.start_soon(_add_latest_batch, latest, row, limiter)
    return sorted((row for row, _ in rows), key=lambda r: ((r.name or "").casefold(), r.id))


class DatasetNames:
    """The Catalog names of the datasets a run was given by id, for its summary, report and manifests.

    Read once per run from the sandbox's listing (one Catalog call per 100 datasets of the sandbox,
    whatever the number of datasets exported), never one call per dataset: hundreds of datasets
    would cost hundreds of calls against the gateway's rate limit (as LatestBatches avoids for
    batches). A dataset the listing lacks (created since: an audience's) is asked for alone. A
    name is never worth failing anything for: when the Catalog does not say, it is None.
    """

    def __init__(self, discovery: Discovery):
        self.discovery = discovery
        self._lock = asyncio.Lock()
        self._names: dict[str, str] | None = None

    async def name_of(self, dataset_id: str) -> str | None:
        names = await self._sandbox_names()
        if dataset_id in names or not names:
            return names.get(dataset_id)
        return await self._one(dataset_id)

    async def _sandbox_names(self) -> dict[str, str]:
        async with self._lock:
            if self._names is None:
                try:
                    found = await sandbox_datasets(self.discovery, "name")
                except (CredentialsRejected, PlatformUnreachable):
                    raise
                except Exception as exc:  # noqa: BLE001 - names only decorate the outcome
                    log.warning("dataset_names_unknown", error=describe(exc))
                    found = []
                self._names = {key: obj["name"] for key, obj in found if isinstance(obj.get("name"), str)}
            return self._names

    async def _one(self, dataset_id: str) -> str | None:
        try:
            name = (await self.discovery.catalog.dataset(dataset_id)).get("name")
        except (CredentialsRejected, PlatformUnreachable):
            raise
        except Exception as exc:  # noqa: BLE001
            log.debug("dataset_name_unknown", dataset=dataset_id, error=describe(exc))
            return None
        return name if isinstance(name, str) else None


def stated_bytes(batch: dict[str, Any]) -> int | None:
    """The batch's size as its metrics state it: `outputByteSize` (new form), the top-level `size`,
    or the old form's `inputSizeInKb` (in KiB); None when none is given."""
    found = batch.get("metrics")
    metrics: dict[str, Any] = found if isinstance(found, dict) else {}
    for value, unit in ((metrics.get("outputByteSize"), 1), (batch.get("size"), 1), (metrics.get("inputSizeInKb"), 1024)):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value * unit
    return None


async def _add_latest_batch(latest: LatestBatches, row: DatasetRow, limiter: anyio.CapacityLimiter) -> None:
    async with limiter:
        try:
            key, obj = await latest.latest(row.id)
        except (CredentialsRejected, PlatformUnreachable):
            raise
        except NoBatch:
            return
        except ExportError as exc:
            row.error = failure(exc)
            return
    row.batch_id, row.batch_created = key, _int(obj.get("created"))
    row.bytes, row.records = stated_bytes(obj), expected_record_count(obj)


def _row(key: str, obj: dict[str, Any]) -> DatasetRow:
    name = obj.get("name")
    return DatasetRow(key, name if isinstance(name, str) else None, _int(obj.get("created")))


def _matches(name: Any, name_filter: str | None) -> bool:
    return not name_filter or (isinstance(name, str) and name_filter.casefold() in name.casefold())


def _may_have_batch(obj: dict[str, Any]) -> bool:
    """False only when the Catalog says outright that there is no successful batch."""
    return "lastSuccessfulBatch" not in obj or bool(obj["lastSuccessfulBatch"])


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
