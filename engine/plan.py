"""`aep-export check` and `run --dry-run`: what a run would export, creating and writing nothing.

Gets a token, calls the gateway, resolves every dataset and audience entry to its batches the
way a run does (selection.py), and lists each batch's files for their count and size. Nothing
is downloaded, no file or folder is written, no dataset or export job is created: what a run
would create is said instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from . import sizing
from .config import AudienceSettings, DatasetSettings, Settings, StoreSettings, StoreURL
from .errors import ConfigError, Failure, RunFatal
from .model import FileTask
from .output.buckettree import BucketTree
from .output.held import FETCH, PARTIAL, REPLACED, FileHeld, HeldTree, Tally, holding
from .output.localfiles import LocalTree
from .output.report import layout_switch
from .output.stores import connect_store
from .platform.auth import TokenProvider
from .platform.client import PlatformClient, make_session
from .platform.discovery import Discovery
from .platform.selection import Replaced, Selector
from .platform.sources import Source, Sources
from .platform.sourcing import run_sources
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
    listed: list[tuple[str, str, int | None]] = field(default_factory=list)  # (path from out_dir, in the batch, size)
    held: list[FileHeld] = field(default_factory=list)  # per listed file, what the destination holds of it

    @property
    def tally(self) -> Tally:
        return Tally().add(self.held)


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


async def make_plan(settings: Settings, shard: str | None = None) -> list[EntryPlan]:
    """Every entry resolved, in config order. Credentials or an unreachable platform raise, and so
    does an out_dir a run (of `shard`) would refuse for its layout, first, as the run does."""
    ex = settings.export
    await _refuse_layout_switch(ex.out_dir, ex.layout, settings.store, shard)
    policy = RetryPolicy.for_export(ex)
    async with make_session(settings) as session:
        tokens = TokenProvider(settings.auth, session, policy)
        discovery = Discovery(PlatformClient(settings, session, tokens, policy), ex.created_client, ex.max_listing_pages, ex.layout)
        await tokens.token()
        sources = run_sources(discovery, Selector(discovery, settings.datasets))
        plans = [EntryPlan(ds.label) for ds in settings.datasets] + [EntryPlan(aud.label) for aud in settings.audiences]
        limiter = anyio.CapacityLimiter(sizing.discovery_slots(ex))
        entries: list[DatasetSettings | AudienceSettings] = [*settings.datasets, *settings.audiences]
        fatal: list[Exception] = []  # credentials or reachability: the whole check stops on the first
        async with anyio.create_task_group() as tg:
            for entry, plan in zip(entries, plans, strict=True):
                tg.start_soon(_plan_entry, discovery, sources, entry, plan, limiter, fatal, tg.cancel_scope)
        if fatal:
            raise fatal[0]
    await _compare_with_destination(ex.out_dir, settings.store, [b for p in plans for b in p.batches if b.error is None])
    return plans


async def _refuse_layout_switch(out_dir: Path | StoreURL, layout: str, store: StoreSettings, shard: str | None) -> None:
    """What a run refuses before it writes anything (an export of the other layout there: exit 2),
    `check` and `run --dry-run` refuse with the same message, before the platform is asked."""
    if isinstance(out_dir, StoreURL):
        async with connect_store(out_dir, store) as bucket:
            refused = await anyio.to_thread.run_sync(layout_switch, BucketTree(bucket), layout, shard)
    else:
        refused = await anyio.to_thread.run_sync(layout_switch, out_dir, layout, shard)
    if refused is not None:
        raise ConfigError(refused)


async def _compare_with_destination(out_dir: Path | StoreURL, store: StoreSettings, batches: list[PlannedBatch]) -> None:
    """What the destination already holds of each listed file (output/held.py); nothing is written."""
    def compare(tree: HeldTree | None) -> None:
        for b in batches:
            b.held = [holding(tree, rel, path, size) if tree else FileHeld(path, size, FETCH) for rel, path, size in b.listed]

    def in_folder(folder: Path) -> None:  # a folder not made yet holds nothing
        compare(LocalTree(folder.resolve()) if folder.is_dir() else None)

    if isinstance(out_dir, StoreURL):
        async with connect_store(out_dir, store) as bucket:
            tree = BucketTree(bucket)
            await tree.load()
            await anyio.to_thread.run_sync(compare, tree)
    else:
        await anyio.to_thread.run_sync(in_folder, out_dir)


async def _plan_entry(discovery: Discovery, sources: Sources, entry: Any, plan: EntryPlan, limiter: anyio.CapacityLimiter,
                      fatal: list[Exception], scope: anyio.CancelScope) -> None:
    async with limiter:
        try:
            src = sources.of(entry if isinstance(entry, DatasetSettings) else None)
            if isinstance(entry, DatasetSettings):
                preview = await src.preview(entry)
                plan.actions, selection, found = preview.actions, preview.selection, []
                if selection is not None:
                    plan.dataset_id, plan.replaced, plan.left_out = selection.dataset_id, selection.replaced, selection.left_out
                    found = [(selection.dataset_id, key, obj) for key, obj in selection.batches]
            else:
                audience = await discovery.audiences.audience_plan(entry)
                plan.actions, found = audience.actions, audience.batches
                plan.dataset_id = entry.dataset_id or (found[0][0] if found else None)
            for dataset_id, key, obj in found:
                plan.batches.append(await _count_files(src, dataset_id, key, obj))
        except RunFatal as exc:
            fatal.append(exc)
            scope.cancel()
        except Exception as exc:  # noqa: BLE001 - a batch's failure is shown in the plan, not fatal
            plan.error = failure(exc)


async def _count_files(src: Source, dataset_id: str, key: str, obj: dict[str, Any]) -> PlannedBatch:
    try:
        resolved = await src.resolve(dataset_id, key, obj)
    except RunFatal:
        raise
    except Exception as exc:  # noqa: BLE001 - a batch's failure is shown in the plan, not fatal
        return PlannedBatch(dataset_id, key, error=failure(exc))
    planned = PlannedBatch(dataset_id, resolved.batch.batch_id)

    async def count(task: FileTask) -> None:
        planned.unsized += task.size is None
        planned.listed.append((task.rel_path, task.rel_in_batch, task.size))

    listing = await src.list_files(resolved, count)
    planned.files, planned.bytes = listing.files, listing.bytes
    if listing.refused:
        planned.error = Failure("unsafe_name", f"{len(listing.refused)} file name(s) would be refused: {listing.refused[0][0]!r}")
    if listing.untrusted:
        planned.error = Failure("listing_untrusted", f"listing not trusted: {listing.untrusted}")
    return planned


def format_plan(plans: list[EntryPlan], where: object = "the destination") -> list[str]:
    """The plan as plain lines: per entry its dataset, then one line per batch (with what `where`,
    the destination, already holds of it), then the files a run would resume or replace."""
    lines = []
    for plan in plans:
        head = plan.label if plan.dataset_id in (None, plan.label) else f"{plan.label} -> dataset {plan.dataset_id}"
        lines.append(head + (f": ERROR {plan.error}" if plan.error else ""))
        lines += [f"  would {action}" for action in plan.actions]
        for b in plan.batches:
            lines += _batch_lines(b)
        lines += [f"  batch {r.key}: not exported, {r.note}" for r in plan.replaced]
        if plan.left_out:
            lines.append("  left out (not successful): " + ", ".join(f"{n} {s}" for s, n in sorted(plan.left_out.items())))
    batches = [b for p in plans for b in p.batches if b.error is None]
    problems = sum(not p.ok for p in plans)
    listed = f"{len(batches)} batch{'' if len(batches) == 1 else 'es'}, {_files(sum(b.files for b in batches))}, " \
             f"{human_bytes(sum(b.bytes for b in batches))}"
    lines.append(listed + _verdict(Tally().add(f for b in batches for f in b.held), where)
                 + (f"; {problems} entr{'y' if problems == 1 else 'ies'} with errors" if problems else ""))
    return lines


FILES_SHOWN = 5  # per batch, of the files a run would resume or replace (--json lists every file)


def _batch_lines(b: PlannedBatch) -> list[str]:
    if b.error:
        return [f"  batch {b.batch_id}: ERROR {b.error}"]
    size = f"{b.bytes} bytes ({human_bytes(b.bytes)})" + (f", {b.unsized} files of unlisted size" if b.unsized else "")
    t = b.tally
    there = ""
    if t.holds_anything and not t.fetch_files:
        there = "; all verified in the destination: nothing to fetch"
    elif t.holds_anything:
        there = f"; to fetch: {_files(t.fetch_files)}, {human_bytes(t.fetch_bytes)} ({_held(t)})"
    lines = [f"  batch {b.batch_id}: {_files(b.files)}, {size}{there}"]
    odd = [f for f in b.held if f.state in (PARTIAL, REPLACED)]
    for f in odd[:FILES_SHOWN]:
        if f.state == PARTIAL:
            lines.append(f"    would resume {f.path}: {human_bytes(f.held)} of {human_bytes(f.size or 0)} held")
        else:
            lines.append(f"    would replace {f.path}: {f.note}")
    if len(odd) > FILES_SHOWN:
        lines.append(f"    … and {len(odd) - FILES_SHOWN} more (--json lists every file)")
    return lines


def _held(t: Tally, *, verified: bool = True) -> str:
    """What a destination holds of a batch or a plan, e.g. '3 verified there; 1 resumes, 2.0 MiB held; 1 replaced'."""
    said = []
    if t.verified_files and verified:
        said.append(f"{t.verified_files} verified there")
    if t.partial_files:
        said.append(f"{t.partial_files} resume{'s' if t.partial_files == 1 else ''}, {human_bytes(t.held_bytes)} held")
    if t.replaced_files:
        said.append(f"{t.replaced_files} replaced")
    return "; ".join(said)


def _verdict(t: Tally, where: object) -> str:
    """The closing line's end: what a run would fetch, given what the destination holds."""
    if not t.holds_anything:
        return " would be exported"
    if not t.fetch_files:
        return f" listed: all verified in {where}, nothing would be fetched"
    unfinished = _held(t, verified=False)
    return (f" listed: {_files(t.fetch_files)}, {human_bytes(t.fetch_bytes)} would be fetched"
            + (f" ({unfinished})" if unfinished else "")
            + (f"; {_files(t.verified_files)}, {human_bytes(t.verified_bytes)} already verified in {where}" if t.verified_files else ""))


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"
