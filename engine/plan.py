"""`aep-export check` and `run --dry-run`: what a run would export, creating and writing nothing.

Gets a token, calls the gateway, resolves every dataset and audience entry to its batches the
way a run does (selection.py), and lists each batch's files for their count and size. Nothing
is downloaded, no file or folder is written, no dataset or export job is created: what a run
would create is said instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio

from . import sizing
from .config import AudienceSettings, DatasetSettings, Settings
from .errors import Failure, RunFatal
from .model import FileTask
from .platform.auth import TokenProvider
from .platform.client import PlatformClient, make_session
from .platform.discovery import Discovery
from .platform.selection import Replaced, Selector
from .retry import RetryPolicy, failure
from .units import human_bytes


@dataclass
class PlannedBatch:
    dataset_id: str
    batch_id: str  # the id its files are listed under (the output folder's name)
    files: int = 0
    bytes: int = 0
    unsized: int = 0  # files listed without a length
    error: str | None = None


@dataclass
class EntryPlan:
    label: str
    dataset_id: str | None = None
    batches: list[PlannedBatch] = field(default_factory=list)
    replaced: list[Replaced] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)
    actions: list[str] = field(default_factory=list)  # what a run would do first (audiences)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(b.error is None for b in self.batches)


async def make_plan(settings: Settings) -> list[EntryPlan]:
    """Every entry resolved, in config order. Credentials or an unreachable platform raise."""
    ex = settings.export
    policy = RetryPolicy.for_export(ex)
    async with make_session(settings) as session:
        tokens = TokenProvider(settings.auth, session, policy)
        discovery = Discovery(PlatformClient(settings, session, tokens, policy), ex.created_client, ex.max_listing_pages, ex.layout)
        await tokens.token()
        selector = Selector(discovery, settings.datasets)
        plans = [EntryPlan(ds.label) for ds in settings.datasets] + [EntryPlan(aud.label) for aud in settings.audiences]
        limiter = anyio.CapacityLimiter(sizing.discovery_slots(ex))
        entries: list[DatasetSettings | AudienceSettings] = [*settings.datasets, *settings.audiences]
        fatal: list[Exception] = []  # credentials or reachability: the whole check stops on the first
        async with anyio.create_task_group() as tg:
            for entry, plan in zip(entries, plans, strict=True):
                tg.start_soon(_plan_entry, discovery, selector, entry, plan, limiter, fatal, tg.cancel_scope)
        if fatal:
            raise fatal[0]
    return plans


async def _plan_entry(discovery: Discovery, selector: Selector, entry: Any, plan: EntryPlan, limiter: anyio.CapacityLimiter,
                      fatal: list[Exception], scope: anyio.CancelScope) -> None:
    async with limiter:
        try:
            if isinstance(entry, DatasetSettings):
                selection = await selector.select(entry)
                plan.dataset_id, plan.replaced, plan.left_out = selection.dataset_id, selection.replaced, selection.left_out
                found = [(selection.dataset_id, key, obj) for key, obj in selection.batches]
            else:
                audience = await discovery.audiences.audience_plan(entry)
                plan.actions, found = audience.actions, audience.batches
                plan.dataset_id = entry.dataset_id or (found[0][0] if found else None)
            for dataset_id, key, obj in found:
                plan.batches.append(await _count_files(discovery, dataset_id, key, obj))
        except RunFatal as exc:
            fatal.append(exc)
            scope.cancel()
        except Exception as exc:  # noqa: BLE001 - a batch's failure is shown in the plan, not fatal
            plan.error = failure(exc)


async def _count_files(discovery: Discovery, dataset_id: str, key: str, obj: dict[str, Any]) -> PlannedBatch:
    try:
        batch, dataset_files = await discovery.data_access.resolve_batch(dataset_id, key, obj)
    except RunFatal:
        raise
    except Exception as exc:  # noqa: BLE001 - a batch's failure is shown in the plan, not fatal
        return PlannedBatch(dataset_id, key, error=failure(exc))
    planned = PlannedBatch(dataset_id, batch.batch_id)

    async def count(task: FileTask) -> None:
        planned.unsized += task.size is None

    listing = await discovery.data_access.list_files(batch, dataset_files, count)
    planned.files, planned.bytes = listing.files, listing.bytes
    if listing.refused:
        planned.error = Failure("unsafe_name", f"{len(listing.refused)} file name(s) would be refused: {listing.refused[0][0]!r}")
    if listing.untrusted:
        planned.error = Failure("listing_untrusted", f"listing not trusted: {listing.untrusted}")
    return planned


def format_plan(plans: list[EntryPlan]) -> list[str]:
    """The plan as plain lines: per entry its dataset, then one line per batch."""
    lines = []
    for plan in plans:
        head = plan.label if plan.dataset_id in (None, plan.label) else f"{plan.label} -> dataset {plan.dataset_id}"
        lines.append(head + (f": ERROR {plan.error}" if plan.error else ""))
        lines += [f"  would {action}" for action in plan.actions]
        for b in plan.batches:
            size = f"{b.bytes} bytes ({human_bytes(b.bytes)})" + (f", {b.unsized} files of unlisted size" if b.unsized else "")
            lines.append(f"  batch {b.batch_id}: " + (f"ERROR {b.error}" if b.error else f"{_files(b.files)}, {size}"))
        lines += [f"  batch {r.key}: not exported, {r.note}" for r in plan.replaced]
        if plan.left_out:
            lines.append("  left out (not successful): " + ", ".join(f"{n} {s}" for s, n in sorted(plan.left_out.items())))
    batches = [b for p in plans for b in p.batches if b.error is None]
    problems = sum(not p.ok for p in plans)
    lines.append(f"{len(batches)} batch{'' if len(batches) == 1 else 'es'}, {_files(sum(b.files for b in batches))}, "
                 f"{human_bytes(sum(b.bytes for b in batches))} "
                 f"would be exported" + (f"; {problems} entr{'y' if problems == 1 else 'ies'} with errors" if problems else ""))
    return lines


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"
