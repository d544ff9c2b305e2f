"""Catalog (aep-api.md §3): batches by dataset, by id and by created time; datasets by id and name.

Every answer is an object keyed by id with no paging metadata; pages are asked with `start` and
`limit` (at most 100). Listing every batch of a window walks `created` upwards: each page starts
again at the last page's newest millisecond (`createdAfter` is exclusive), so batches that share
that millisecond across a page edge are neither missed nor doubled (dedupe by key), batches
created meanwhile only add to the end, and a page that is all one millisecond is stepped through
by offset with the exact `created=` filter.
"""

from __future__ import annotations

import difflib
import re
import time
from typing import Any

import structlog

from ..errors import CredentialsRejected, ExportError, NotFound, PlatformError, PlatformUnreachable
from ..model import catalog_created
from ..retry import RetryPolicy
from .client import PlatformClient
from .polling import wait_for_status

log = structlog.get_logger("aep_export.catalog")

CATALOG = "/data/foundation/catalog"
DOWNLOADABLE = frozenset({"success", "active"})  # "Active and Success are used interchangeably"
NEVER_DOWNLOADABLE = frozenset({"failed", "failure", "aborted", "abandoned", "inactive", "deleted"})
CATALOG_MAX_LIMIT = 100  # the Catalog's largest page
MAX_CATALOG_PAGES = 10_000
PROFILE_UNION_SCHEMA = {"id": "https://ns.adobe.com/xdm/context/profile__union",
                        "contentType": "application/vnd.adobe.xed+json;version=1"}

Batch = tuple[str, dict[str, Any]]  # (Catalog key, batch object)


class NoBatch(ExportError):
    """The dataset exists but has no successful batch to export."""

    kind = "no_batch"


class DatasetNameError(ExportError):
    """A dataset name matched no dataset, or several."""

    kind = "dataset_name"


class CatalogApi:
    """Catalog calls through the run's client (Discovery holds one)."""

    def __init__(self, client: PlatformClient, created_client: str | None = None):
        self.client = client
        self.created_client = created_client  # only batches this client wrote (export.created_client)

    # -- the latest successful batch --------------------------------------------------------

    async def latest_successful_batch(self, dataset_id: str, window: tuple[int | None, int | None] = (None, None)) -> Batch:
        """The newest batch whose status is success/active (created inside the window, if any)."""
        params = self._newest_downloadable_query(dataset_id, limit=1) | _window_params(*window)
        found = downloadable(await self.client.get_json(f"{CATALOG}/batches", params))
        if not found:
            # Some servers may not OR a comma list: look at recent batches and filter here.
            params = {k: v for k, v in params.items() if k != "status"} | {"limit": str(CATALOG_MAX_LIMIT)}
            found = downloadable(await self.client.get_json(f"{CATALOG}/batches", params))
        if found:
            return found[0]
        await self.dataset(dataset_id)  # an unknown dataset says so
        in_window = " in the since/until window" if any(w is not None for w in window) else ""
        raise NoBatch(f"dataset {dataset_id} has no successful batch{in_window}")

    async def latest_successful_batches(self, dataset_ids: list[str]) -> dict[str, Batch]:
        """One Catalog query for several datasets: `dataSet=a,b,…` matches any listed value.

        The answer holds the newest 100 downloadable batches of the whole group, so a dataset that
        appears in it has its newest batch there. Datasets that do not appear (older batches, none
        at all, or a server that does not OR the list) are left out: the caller asks for them one
        by one with `latest_successful_batch`.
        """
        params = self._newest_downloadable_query(",".join(dataset_ids), limit=CATALOG_MAX_LIMIT)
        wanted = set(dataset_ids)
        newest: dict[str, Batch] = {}
        for key, obj in downloadable(await self.client.get_json(f"{CATALOG}/batches", params)):
            for ds in related_datasets(obj):
                if ds in wanted and ds not in newest:
                    newest[ds] = (key, obj)
        return newest

    def _newest_downloadable_query(self, datasets: str, limit: int) -> dict[str, str]:
        params = {"dataSet": datasets, "status": "success,active", "orderBy": "desc:created", "limit": str(limit)}
        if self.created_client:
            params["createdClient"] = self.created_client
        return params

    # -- every batch of a window ------------------------------------------------------------

    async def batches_created(self, dataset_id: str, after: int | None = None, before: int | None = None) -> list[Batch]:
        """Every batch of the dataset created after `after` and before `before` (epoch ms, both
        exclusive, None = open), each once, oldest first. Any status: the caller chooses."""
        base = {"dataSet": dataset_id, "orderBy": "asc:created", "limit": str(CATALOG_MAX_LIMIT)}
        if self.created_client:
            base["createdClient"] = self.created_client
        found: dict[str, dict[str, Any]] = {}
        cursor = after
        for _ in range(MAX_CATALOG_PAGES):
            page = entries(await self.client.get_json(f"{CATALOG}/batches", base | _window_params(cursor, before)))
            for key, obj in page:
                found.setdefault(key, obj)
            if len(page) < CATALOG_MAX_LIMIT:
                return _oldest_first(found)
            created = [_created(obj) for _, obj in page]
            newest = None if None in created else max(c for c in created if c is not None)
            if newest is None:
                raise ExportError(f"Catalog batches of {dataset_id} carry no created time: cannot page through them safely")
            if cursor is not None and newest - 1 <= cursor:
                # A whole page inside one millisecond: step through that millisecond by offset.
                await self._drain_millisecond(base, newest, found)
                cursor = newest
            else:
                cursor = newest - 1  # start again at the edge's millisecond: its rest may be cut off
        raise ExportError(f"listing the batches of {dataset_id} did not end after {MAX_CATALOG_PAGES} pages")

    async def _drain_millisecond(self, base: dict[str, str], ms: int, found: dict[str, dict[str, Any]]) -> None:
        limit = int(base["limit"])
        for page_no in range(MAX_CATALOG_PAGES):
            params = base | {"created": str(ms), "start": str(page_no * limit)}
            page = entries(await self.client.get_json(f"{CATALOG}/batches", params))
            for key, obj in page:
                found.setdefault(key, obj)
            if len(page) < limit:
                return
        raise ExportError(f"more than {MAX_CATALOG_PAGES} pages of batches created at {ms}")

    # -- single objects ---------------------------------------------------------------------

    async def batch(self, batch_id: str) -> dict[str, Any]:
        body = await self.client.get_json(f"{CATALOG}/batches/{batch_id}")
        obj = body.get(batch_id) if isinstance(body, dict) else None
        if obj is None and isinstance(body, dict) and len(body) == 1:
            obj = next(iter(body.values()))
        if not isinstance(obj, dict):
            raise NotFound(404, f"batch {batch_id} not found in the Catalog")
        return obj

    async def dataset(self, dataset_id: str) -> dict[str, Any]:
        try:
            body = await self.client.get_json(f"{CATALOG}/dataSets/{dataset_id}")
        except NotFound:
            raise NotFound(404, f"dataset {dataset_id} not found") from None
        obj = body.get(dataset_id) if isinstance(body, dict) else None
        return obj if isinstance(obj, dict) else {}

    async def dataset_id_by_name(self, name: str) -> str:
        """The one dataset with exactly this name (`property=name==…`, filter-data.md)."""
        params = {"property": f"name=={name}", "properties": "name,created", "limit": "20"}
        body = await self.client.get_json(f"{CATALOG}/dataSets", params)
        # Checked here too: the match must be exact whatever the server made of the filter.
        matches = [(key, obj) for key, obj in entries(body) if obj.get("name") == name]
        if len(matches) == 1:
            return matches[0][0]
        if not matches:
            hint = await did_you_mean(self, name)  # the whole sandbox's names: read only on this error
            raise DatasetNameError(f"no dataset is named {name!r} in this sandbox (names match exactly, case included){hint}; "
                                   "`aep-export list` shows every name, or use its id "
                                   "(from the Datasets page of the Experience Platform UI)")
        listed = ", ".join(f"{key} (created {_iso(_created(obj))})" for key, obj in matches[:10])
        raise DatasetNameError(f"{len(matches)}{'+' if len(matches) >= 20 else ''} datasets are named {name!r}: {listed}; "
                               "use the id of the one to export")

    async def create_profile_dataset(self, name: str) -> str:
        """POST /dataSets with the Profile union schema (§6.1): 201 and ["@/dataSets/<id>"]."""
        body = {"name": name, "schemaRef": PROFILE_UNION_SCHEMA,
                "fileDescription": {"persisted": True, "containerFormat": "parquet", "format": "parquet"}}
        return created_dataset_id(await self.client.post_json(f"{CATALOG}/dataSets", body))

    async def wait_until_downloadable(self, batch_id: str, deadline: float, policy: RetryPolicy) -> dict[str, Any]:
        """Poll the batch until it is success/active; a terminal failure or the deadline ends it."""
        async def look() -> tuple[dict[str, Any], str, str]:
            try:
                obj = await self.batch(batch_id)
            except NotFound:
                return {}, f"batch {batch_id}", "not yet in the Catalog"
            return obj, f"batch {batch_id}", str(obj.get("status", "")).lower()

        return await wait_for_status(policy, look, done=DOWNLOADABLE, failed=NEVER_DOWNLOADABLE, why=batch_errors,
                                     fails=ExportError, what=f"batch {batch_id}", deadline=deadline,
                                     limit="the audience's wait_timeout")


# -- parsing (every shape of §3) ----------------------------------------------------------


def entries(body: Any) -> list[Batch]:
    """The (key, object) pairs of an object-keyed Catalog answer; `{}` is an empty one."""
    if not isinstance(body, dict):
        return []
    return [(str(key), obj) for key, obj in body.items() if isinstance(obj, dict)]


def downloadable(body: Any) -> list[Batch]:
    found = [(key, obj) for key, obj in entries(body) if status_of(obj) in DOWNLOADABLE]
    # Newest first even if the server ignored orderBy.
    return sorted(found, key=lambda kv: _created(kv[1]) or 0, reverse=True)


def status_of(obj: dict[str, Any]) -> str:
    return str(obj.get("status", "")).lower()


def related_datasets(obj: dict[str, Any]) -> list[str]:
    return [str(r["id"]) for r in obj.get("relatedObjects") or []
            if isinstance(r, dict) and r.get("type") == "dataSet" and r.get("id")]


def related_batches(obj: dict[str, Any]) -> list[str]:
    return [str(r["id"]) for r in obj.get("relatedObjects") or []
            if isinstance(r, dict) and r.get("type") == "batch" and r.get("id")]


def predecessors(obj: dict[str, Any]) -> list[str]:
    """Batch ids (or external ids) this batch replaces (`replay`, §3.4)."""
    replay = _section(obj, "replay")
    ids = list(replay.get("predecessors") or []) + list(replay.get("predecessorsByExternalId") or [])
    return [str(i) for i in ids if i]


def replay_reason(obj: dict[str, Any]) -> str:
    replay = _section(obj, "replay")
    return str(replay.get("reason") or "")


def stated_file_count(obj: dict[str, Any]) -> int | None:
    """The files the Catalog says the batch wrote (`metrics.outputFileCount`, new form only);
    None when unknown: no metrics, the old form, or -1 (which `inputFileCount` is documented to be)."""
    metrics = _section(obj, "metrics")
    value = metrics.get("outputFileCount")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def batch_errors(obj: dict[str, Any]) -> str:
    errors = [e for e in obj.get("errors") or [] if isinstance(e, dict)]
    return "".join(f"; {e.get('code', '')} {e.get('description', '')}".rstrip() for e in errors[:3])


def created_dataset_id(body: Any) -> str:
    """The id in POST /dataSets' answer: ["@/dataSets/<id>"] (the docs also write @/datasets/)."""
    refs = body if isinstance(body, list) else []
    for ref in refs:
        if isinstance(ref, str) and ref.lower().startswith("@/datasets/") and ref.split("/", 2)[2]:
            return ref.split("/", 2)[2]
    raise PlatformError(201, "creating the dataset answered without a @/dataSets/<id> reference")


def _window_params(after: int | None, before: int | None) -> dict[str, str]:
    params = {}
    if after is not None:
        params["createdAfter"] = str(after)
    if before is not None:
        params["createdBefore"] = str(before)
    return params


def _section(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object of a Catalog answer, or {} when it is missing or not an object."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _created(obj: dict[str, Any]) -> int | None:
    return catalog_created(obj)


def _oldest_first(found: dict[str, dict[str, Any]]) -> list[Batch]:
    return sorted(found.items(), key=lambda kv: (_created(kv[1]) or 0, kv[0]))


def _iso(ms: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "?"


# -- the sandbox's datasets: `list`, the names a run shows, "did you mean" ----------------------

SUGGESTIONS = 3  # names offered for a name that matches no dataset
CLOSE_ENOUGH = 0.6  # difflib's own default cutoff
CLOSE_MARGIN = 0.05  # a suggestion this much less like the name than the best one is noise


async def sandbox_datasets(catalog: Any, properties: str) -> list[tuple[str, dict[str, Any]]]:
    """Every dataset of the sandbox, once each, with the given top-level properties."""
    found: dict[str, dict[str, Any]] = {}
    for page_no in range(MAX_CATALOG_PAGES):
        params = {"properties": properties, "orderBy": "asc:created", "limit": str(CATALOG_MAX_LIMIT),
                  "start": str(page_no * CATALOG_MAX_LIMIT)}
        page = entries(await catalog.client.get_json(f"{CATALOG}/dataSets", params))
        for key, obj in page:
            found.setdefault(key, obj)
        if len(page) < CATALOG_MAX_LIMIT:
            return list(found.items())
    raise ExportError(f"listing the sandbox's datasets did not end after {MAX_CATALOG_PAGES} pages")


async def did_you_mean(catalog: Any, name: str) -> str:
    """'; did you mean …?' naming the sandbox's closest dataset names, or '' (also when they cannot be listed)."""
    try:
        names = [obj["name"] for _, obj in await sandbox_datasets(catalog, "name") if isinstance(obj.get("name"), str)]
    except (CredentialsRejected, PlatformUnreachable):
        raise
    except ExportError:
        return ""
    close = close_names(name, names)
    return f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else ""


def close_names(name: str, names: list[str], n: int = SUGGESTIONS) -> list[str]:
    """The names most like `name`, ignoring case: those that contain it, then the closest by difflib
    (whole names and word by word: names often share a long prefix, "Customer AI Scores - …", that
    makes every one of them look close), within CLOSE_MARGIN of the closest."""
    wanted = name.casefold()
    containing = [c for c in names if wanted and wanted in c.casefold()]
    scored = sorted(((_likeness(wanted, c.casefold()), c) for c in names), key=lambda sc: -sc[0])
    best = scored[0][0] if scored else 0.0
    close = [c for score, c in scored if score >= CLOSE_ENOUGH and score >= best - CLOSE_MARGIN]
    return list(dict.fromkeys(containing + close))[:n]


def _likeness(a: str, b: str) -> float:
    """Half the whole names' difflib ratio, half the mean over a's words of the best ratio in b's."""
    words_a, words_b = re.findall(r"\w+", a), re.findall(r"\w+", b)
    by_word = sum(max((_ratio(w, v) for v in words_b), default=0.0) for w in words_a) / max(1, len(words_a))
    return 0.5 * _ratio(a, b) + 0.5 * by_word


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()
