"""Flow Service dataset exports (aep-dataset-export.md §1): which datasets may be exported, the
DLZ dataflow of a dataset (found, or created with its connections), its runs, and the on-demand
("ad hoc") run with its documented refusals.

Runs are polled, and refused ad hoc runs retried, through the run's one retry loop
(RetryPolicy.run with a deadline). Where the reference is silent the choice is marked [I].
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from ..errors import ExportError, NotYet, PlatformError
from ..retry import RetryPolicy
from .client import PlatformClient
from .polling import wait_for_status

log = structlog.get_logger("aep_export.flowservice")

FLOWSERVICE = "/data/foundation/flowservice"
ADHOC = "/data/core/activation/disflowprovider/adhocrun"
CREDENTIALS = "/data/foundation/connectors/landingzone/credentials"  # the DLZ's SAS (dlz.py)
ADHOC_ACCEPT = "application/vnd.adobe.adhoc.dataset.activation+json; version=1"
DATASET_SOURCE_SPEC = "23598e46-f560-407b-88d5-ea6207e49db0"  # the "datasets" source of every dataset export
DLZ_CONNECTION_SPEC = "10440537-2a7b-4583-ac39-ed38d4b848e8"
DLZ_FLOW_SPEC = "cd2fc47e-e838-4f38-a581-8fff2f99b63a"
ELIGIBLE_PAGE = 100
MAX_ELIGIBLE_PAGES = 1000
FOLDER = "aep-export"  # the target connection's folder for flows this tool creates
# The documented refusals of an ad hoc run, as message text (§1.6).
NOT_READY = "not ready for dataset export"
NOT_ENABLED = "can not be executed"
ALREADY = "already exist"
DONE = "success"
FAILED = frozenset({"failed", "cancelled"})


class NotEligible(ExportError):
    """The dataset is not offered for dataset export in this org."""

    kind = "not_eligible"


class RunFailed(ExportError):
    """The export run ended failed (its error codes quoted), or did not end in time."""

    kind = "run_failed"


class AdhocRefused(ExportError):
    """The platform refused an on-demand run and waiting cannot change that."""

    kind = "adhoc_refused"


@dataclass
class Flow:
    id: str
    folder: str  # the target connection's path: runs write <folder>/<datasetId>/exportTime=…/


class FlowService:
    """Flow Service calls through the run's client (its retries, its credentials)."""

    def __init__(self, client: PlatformClient):
        self.client = client
        self._eligible: dict[str, str] | None = None  # id -> name, read once per run

    @property
    def policy(self) -> RetryPolicy:
        return self.client.policy

    # -- eligibility ----------------------------------------------------------------------

    async def eligible(self) -> dict[str, str]:
        """The datasets this org may export (§1.1), paged by start/limit while pageInfo.hasNext."""
        if self._eligible is None:
            found: dict[str, str] = {}
            for page in range(MAX_ELIGIBLE_PAGES):
                body = await self.client.get_json(
                    f"{FLOWSERVICE}/connectionSpecs/{DATASET_SOURCE_SPEC}/configs",
                    {"outputType": "activationDatasets", "outputField": "datasets", "start": str(page * ELIGIBLE_PAGE),
                     "limit": str(ELIGIBLE_PAGE), "properties": "name,state"})
                items = _items(body)
                found.update({str(d["id"]): str(d.get("name") or "") for d in items if d.get("id")})
                info = body.get("pageInfo") if isinstance(body, dict) else None
                if not items or not (isinstance(info, dict) and info.get("hasNext") is True):
                    break
            self._eligible = found
        return self._eligible

    async def check_eligible(self, dataset_id: str) -> None:
        eligible = await self.eligible()
        if dataset_id in eligible:
            return
        some = ", ".join(f"{i} ({n})" if n else i for i, n in list(eligible.items())[:5])
        raise NotEligible(
            f"dataset {dataset_id} is not eligible for dataset export (Flow Service lists {len(eligible)} eligible "
            f"dataset{'' if len(eligible) == 1 else 's'}{': ' + some if some else ''}{', …' if len(eligible) > 5 else ''}); "
            "Adobe offers Profile and ExperienceEvent datasets created in the UI (Ultimate adds the Profile snapshot, "
            "Data Distiller its derived datasets): export it with via = \"data-access\" instead")

    # -- the dataset's dataflow -------------------------------------------------------------

    async def find_flow(self, dataset_id: str) -> Flow | None:
        """An existing DLZ dataflow exporting this dataset (no new flow per run). [I]: flows are
        listed by flow spec, then each one's source connection names its datasets."""
        body = await self.client.get_json(f"{FLOWSERVICE}/flows", {"property": f"flowSpec.id=={DLZ_FLOW_SPEC}"})
        for flow in sorted(_items(body), key=lambda f: -_int(f.get("createdAt"))):
            for source_id in flow.get("sourceConnectionIds") or []:
                source = _first(await self.client.get_json(f"{FLOWSERVICE}/sourceConnections/{source_id}"))
                datasets = ((source.get("params") or {}).get("datasets")) or []
                if any(isinstance(d, dict) and d.get("dataSetId") == dataset_id for d in datasets):
                    return Flow(str(flow["id"]), await self._folder(flow))
        return None

    async def _folder(self, flow: dict[str, Any]) -> str:
        target_ids = flow.get("targetConnectionIds") or []
        if not target_ids:
            raise ExportError(f"dataflow {flow.get('id')} names no target connection")
        target = _first(await self.client.get_json(f"{FLOWSERVICE}/targetConnections/{target_ids[0]}"))
        return str((target.get("params") or {}).get("path") or "").strip("/")

    async def create_flow(self, dataset_id: str, name: str | None) -> Flow:
        """Source, DLZ base and target connections and a "once" dataflow (§1.2-1.5; "once" as aepp writes it)."""
        label = f"aep-export {dataset_id}"
        source = await self._create("sourceConnections", {
            "name": label, "connectionSpec": {"id": DATASET_SOURCE_SPEC, "version": "1.0"},
            "params": {"datasets": [{"dataSetId": dataset_id, "name": name or dataset_id}]}})
        base = await self._create("connections", {"name": label, "connectionSpec": {"id": DLZ_CONNECTION_SPEC, "version": "1.0"}})
        target = await self._create("targetConnections", {
            "name": label, "baseConnectionId": base, "connectionSpec": {"id": DLZ_CONNECTION_SPEC, "version": "1.0"},
            "params": {"mode": "Server-to-server", "path": FOLDER, "compression": "GZIP", "datasetFileType": "PARQUET"}})
        flow = await self._create("flows", {
            "name": label, "flowSpec": {"id": DLZ_FLOW_SPEC, "version": "1.0"},
            "sourceConnectionIds": [source], "targetConnectionIds": [target], "transformations": [],
            "scheduleParams": {"interval": 0, "timeUnit": "day", "startTime": int(time.time()),
                               "exportMode": "DAILY_FULL_EXPORT"}})
        log.info("dlz_flow_created", dataset=dataset_id, flow=flow, note="later runs reuse this dataflow")
        return Flow(flow, FOLDER)

    async def _create(self, kind: str, body: dict[str, Any]) -> str:
        answer = await self.client.post_json(f"{FLOWSERVICE}/{kind}", body)
        created = answer.get("id") if isinstance(answer, dict) else None
        if not created:
            raise ExportError(f"creating a Flow Service {kind[:-1]} answered without an id")
        return str(created)

    # -- runs -----------------------------------------------------------------------------

    async def runs(self, flow_id: str) -> list[dict[str, Any]]:
        """The flow's runs, newest first (§1.7); a continuation link is followed when given [I]."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{FLOWSERVICE}/runs"
        params: dict[str, str] | None = {"property": f"flowId=={flow_id}"}
        seen: set[str] = set()
        while url is not None and url not in seen and len(seen) < MAX_ELIGIBLE_PAGES:
            seen.add(url)
            body = await self.client.get_json(url, params)
            found += _items(body)
            nxt = ((body.get("_links") or {}).get("next") or {}).get("href") if isinstance(body, dict) else None
            url, params = (str(nxt), None) if nxt else (None, None)
        return sorted(found, key=lambda r: -_int(r.get("createdAt")))

    async def newest_success(self, flow_id: str, within_s: float) -> dict[str, Any] | None:
        """The flow's newest successful run when it is younger than `within_s`."""
        now_ms = time.time() * 1000
        for run in await self.runs(flow_id):
            if run_status(run) == DONE:
                return run if now_ms - _int(run.get("createdAt")) < within_s * 1000 else None
        return None

    async def run_now(self, flow_id: str, dataset_id: str, deadline: float) -> dict[str, Any]:
        """An ad hoc run, retried while the flow is "not ready", then polled to success."""
        run_id = await self.policy.run(lambda: self._adhoc(flow_id, dataset_id), what=f"ad hoc run of flow {flow_id}",
                                       deadline=deadline)
        return await self.wait_for_run(flow_id, run_id, deadline)

    async def _adhoc(self, flow_id: str, dataset_id: str) -> str | None:
        """The new run's id (None when the answer does not say it: the newest run is waited for)."""
        body = {"activationInfo": {"destinations": [{"flowId": flow_id, "datasets": [{"id": dataset_id}]}]}}
        try:
            answer = await self.client.post_json(ADHOC, body, headers={"Accept": ADHOC_ACCEPT})
        except PlatformError as exc:
            text = f"{exc}".lower()
            if NOT_READY in text:
                raise NotYet(f"the platform says flow {flow_id} is not ready for an ad hoc run yet "
                             "(Adobe: up to 10 minutes after a flow is created)") from None
            if NOT_ENABLED in text:
                raise AdhocRefused(f"the platform refused an ad hoc run of flow {flow_id}: {exc} (on-demand dataset export "
                                   "is not enabled for this org: ask Adobe, or let the flow's schedule run and rerun "
                                   "within reuse_run_within of it)") from None
            if ALREADY in text:
                log.info("dlz_run_already_exists", flow=flow_id, note="waiting for that run")
                return None
            raise
        log.info("dlz_run_started", flow=flow_id, dataset=dataset_id)
        return run_id_of(answer)

    async def wait_for_run(self, flow_id: str, run_id: str | None, deadline: float) -> dict[str, Any]:
        async def look() -> tuple[dict[str, Any], str, str]:
            runs = await self.runs(flow_id)
            run = next((r for r in runs if r.get("id") == run_id), None) if run_id else (runs[0] if runs else None)
            if run is None:
                raise NotYet(f"run {run_id or '(newest)'} of flow {flow_id} is not listed yet")
            return run, f"dataset export run {run.get('id')} of flow {flow_id}", run_status(run)

        return await wait_for_status(self.policy, look, done={DONE}, failed=FAILED, why=run_errors, fails=RunFailed,
                                     what=f"run of flow {flow_id}", deadline=deadline)


def run_status(run: dict[str, Any]) -> str:
    summary = ((run.get("metrics") or {}).get("statusSummary")) or {}
    return str(summary.get("status") or "").lower() if isinstance(summary, dict) else ""


def run_errors(run: dict[str, Any]) -> str:
    """`: CODE message` of a failed run's errors (a 200 carries them, §1.7), wherever it puts them."""
    summary = ((run.get("metrics") or {}).get("statusSummary")) or {}
    errors = [e for e in [*(run.get("errors") or []), *(summary.get("errors") or [])] if isinstance(e, dict)]
    reasons = list(dict.fromkeys(" ".join(str(e[k]) for k in ("code", "message") if e.get(k)) for e in errors))
    return (": " + "; ".join(r for r in reasons[:3] if r)) if any(reasons) else ""


def run_id_of(answer: Any) -> str | None:
    """The run id an ad hoc answer's statusURL ends with (§1.6)."""
    try:
        url = answer["destinations"][0]["datasets"][0]["statusURL"]
    except (KeyError, IndexError, TypeError):
        return None
    return str(url).rstrip("/").rsplit("/", 1)[-1] or None if isinstance(url, str) else None


def run_metric(run: dict[str, Any], summary: str, key: str) -> int | None:
    value = ((run.get("metrics") or {}).get(summary) or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _items(body: Any) -> list[dict[str, Any]]:
    items = body.get("items") if isinstance(body, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _first(body: Any) -> dict[str, Any]:
    """A Flow Service object by id: the object, or items[0] of its answer."""
    items = _items(body)
    return items[0] if items else body if isinstance(body, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
