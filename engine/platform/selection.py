"""Which batches a run exports: each config entry resolved the same way for `run` and `check`.

An entry names a dataset (by id, or by name looked up in Catalog) and chooses its batches:
"latest" (the newest successful one, the default), "all", or pinned ids; since/until narrow
"latest" and "all" to a window on the batch's created time. Only successful batches (success or
active) are chosen unless ids are pinned. A chosen batch that another chosen batch replaces
(`replay.predecessors`, §3.4: Customer AI re-scoring a day) is reported as replaced, not
exported twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..config import DatasetSettings
from ..errors import ExportError, NotFound, RunFatal
from ..model import catalog_created
from .catalog import DOWNLOADABLE, Batch, NoBatch, predecessors, related_datasets, replay_reason, status_of
from .discovery import Discovery

log = structlog.get_logger("aep_export.selection")

CATALOG_GROUP = 25  # datasets per grouped Catalog query: 25 ids keep the URL near 1 KB


@dataclass
class Replaced:
    key: str
    obj: dict[str, Any]
    by: str  # the chosen batch that replaces it
    reason: str

    @property
    def note(self) -> str:
        return f"replaced by {self.by}" + (f" ({self.reason})" if self.reason else "")


@dataclass
class Selection:
    entry: str  # the config entry as the user wrote it (id, or name:…)
    dataset_id: str
    batches: list[Batch] = field(default_factory=list)  # to export, oldest first
    replaced: list[Replaced] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)  # statuses not exported ("all", windows)


class Selector:
    """Resolves dataset entries; "latest" entries given by id share grouped Catalog queries."""

    def __init__(self, discovery: Discovery, datasets: Iterable[DatasetSettings]):
        self.discovery = discovery
        grouped = [d.id for d in datasets if d.id and d.batches == "latest" and not d.pinned and d.window_ms() == (None, None)]
        self.latest = LatestBatches(discovery, grouped)

    async def select(self, ds: DatasetSettings) -> Selection:
        if ds.id:
            dataset_id = ds.id
        elif ds.name is not None:
            dataset_id = await self.discovery.catalog.dataset_id_by_name(ds.name)
        else:  # the config's validation names one of them
            raise ExportError(f"dataset {ds.label}: neither id nor name is set")
        if ds.name is not None:
            log.info("dataset_name_resolved", name=ds.name, dataset=dataset_id)
        if ds.pinned:
            return Selection(ds.label, dataset_id, await self._pinned(dataset_id, ds.pinned))
        window = ds.window_ms()
        if ds.batches == "latest":
            if window == (None, None):
                chosen = await self.latest.latest(dataset_id)
            else:
                chosen = await self.discovery.catalog.latest_successful_batch(dataset_id, window)
            return Selection(ds.label, dataset_id, [chosen])
        every = await self.discovery.catalog.batches_created(dataset_id, *window)
        if not every:
            await self.discovery.catalog.dataset(dataset_id)  # an unknown dataset says so
        ok = [(key, obj) for key, obj in every if status_of(obj) in DOWNLOADABLE]
        kept, replaced = drop_replaced(ok)
        selection = Selection(ds.label, dataset_id, kept, replaced,
                              Counter(status_of(obj) or "unknown" for _, obj in every if status_of(obj) not in DOWNLOADABLE))
        if not kept:
            where = " in the since/until window" if window != (None, None) else ""
            left = ", ".join(f"{n} {status}" for status, n in sorted(selection.left_out.items()))
            raise NoBatch(f"dataset {dataset_id} has no successful batch{where}" + (f" ({left})" if left else ""))
        return selection

    async def _pinned(self, dataset_id: str, ids: list[str]) -> list[Batch]:
        """Pinned ids are exported whatever their status; one of another dataset is an error."""
        chosen = []
        for batch_id in ids:
            try:
                obj = await self.discovery.catalog.batch(batch_id)
            except NotFound:
                # Perhaps the data batch id of an old-form Customer AI batch (the id its files are
                # listed under, and the folder name of an earlier export): Data Access decides.
                log.info("pinned_batch_not_in_catalog", dataset=dataset_id, batch=batch_id)
                obj = {}
            owners = related_datasets(obj)
            if owners and dataset_id not in owners:
                raise ExportError(f"batch {batch_id} belongs to dataset {owners[0]}, not to {dataset_id}")
            if obj and status_of(obj) not in DOWNLOADABLE:
                log.warning("pinned_batch_not_successful", dataset=dataset_id, batch=batch_id, status=status_of(obj))
            chosen.append((batch_id, obj))
        return chosen


def drop_replaced(batches: list[Batch]) -> tuple[list[Batch], list[Replaced]]:
    """Split chosen batches into those to export and those a newer chosen batch replaces.

    Only a batch created later can replace another: a malformed replay cycle drops nothing.
    """
    by_key = {key: obj for key, obj in batches}
    by_external = {str(obj["externalId"]): key for key, obj in batches if obj.get("externalId")}
    replaced_by: dict[str, str] = {}
    for key, obj in batches:
        for pred in predecessors(obj):
            target = pred if pred in by_key else by_external.get(pred)
            if target and target != key and _created(by_key[target]) <= _created(obj):
                replaced_by[target] = key
    kept = [(key, obj) for key, obj in batches if key not in replaced_by]
    replaced = [Replaced(key, obj, replaced_by[key], replay_reason(by_key[replaced_by[key]]))
                for key, obj in batches if key in replaced_by]
    return kept, replaced


def _created(obj: dict[str, Any]) -> int:
    return catalog_created(obj) or 0


class LatestBatches:
    """The latest successful batch of each configured dataset, with one Catalog query per group.

    Hundreds of datasets would otherwise cost hundreds of Catalog calls against the gateway's rate
    limit before the first byte. The first producer of a group asks for the whole group; the others
    wait for that answer. Whatever the group query leaves out (or if it fails) is asked one by one,
    so the outcome is the same as with per-dataset queries.
    """

    def __init__(self, discovery: Discovery, dataset_ids: Iterable[str], group: int = CATALOG_GROUP):
        ids = list(dict.fromkeys(dataset_ids))
        self.discovery = discovery
        self._groups = [ids[i:i + group] for i in range(0, len(ids), group)]
        self._group_of = {ds: n for n, members in enumerate(self._groups) for ds in members}
        self._locks = [asyncio.Lock() for _ in self._groups]
        self._answers: dict[int, dict[str, Batch]] = {}

    async def latest(self, dataset_id: str) -> Batch:
        n = self._group_of.get(dataset_id)
        if n is not None and len(self._groups[n]) > 1:
            # Taken, not kept: a run over thousands of datasets holds no Catalog object it is done
            # with (a second ask for the same dataset is answered by its own query, the same answer).
            found = (await self._group_answer(n)).pop(dataset_id, None)
            if found is not None:
                return found
        return await self.discovery.catalog.latest_successful_batch(dataset_id)

    async def _group_answer(self, n: int) -> dict[str, Batch]:
        async with self._locks[n]:
            if n not in self._answers:
                try:
                    self._answers[n] = await self.discovery.catalog.latest_successful_batches(self._groups[n])
                except RunFatal:
                    raise  # the run stops: no point in asking again one by one
                except ExportError as exc:  # each dataset's own query will meet (and report) it
                    log.warning("grouped_catalog_query_failed", datasets=len(self._groups[n]), error=str(exc))
                    self._answers[n] = {}
            return self._answers[n]
