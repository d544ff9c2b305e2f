"""Catalog: batches, dataSets and lastBatches, with the documented filters and paging (aep-api.md §3)."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .data import Batch, Dataset
from .http import int_param, json_body, problem

if TYPE_CHECKING:
    from .config import FakeConfig
    from .data import Model

PAGING = {"limit", "start", "offset", "orderBy", "sort", "properties", "property"}


@dataclass
class CreatedDataset:
    """A dataset made with POST /dataSets (aep-api.md §3.5, §6.1): no batches until a job writes one."""

    id: str
    name: str
    schema_ref: dict[str, Any]
    created: int
    file_description: dict[str, Any] | None


class CatalogApi:
    """Catalog routes (a mixin of FakePlatform, which sets what it uses, declared here)."""

    cfg: FakeConfig
    model: Model
    hidden_batches: set[str]  # Catalog keys not yet visible (tests: created while paging)
    _attached: dict[str, str]
    _batch_polls: Counter[str]
    _created: dict[str, CreatedDataset]
    _objs_by_dataset: dict[str, list[dict[str, Any]]] | None

    def _batch_obj(self, b: Batch) -> dict[str, Any]:
        ds = b.dataset
        obj: dict[str, Any] = {
            "id": b.key, "externalId": b.key, "status": b.status,
            "tags": {"acp_enableErrorDiagnostics": ["false"]},
            "relatedObjects": [{"type": "dataSet", "id": self._attached.get(b.key, ds.id)}],
            "inputFormat": {"format": "parquet"},
            "imsOrg": self.cfg.org_id, "sandboxId": self._sandbox_id(),
            "created": b.created, "updated": b.created + 10_000,
            "createdClient": ds.spec.created_client,
            "createdUser": "sensei_exp_customerai@AdobeID",
            "updatedUser": "acp_foundation_dataTracker@AdobeID", "version": "1.0.5",
        }
        if b.key != b.data_id:
            obj["relatedObjects"].append({"type": "batch", "id": b.data_id})
        if b.status in ("success", "active"):
            obj.update(started=b.created + 300, completed=b.created + 9_000, metrics=self._metrics(b))
            if b.replaces:
                day = time.strftime("%Y-%m-%d", time.gmtime(self.model.batches_by_key[b.replaces].created / 1000))
                obj["replay"] = {"predecessors": [b.replaces], "reason": f"Replacing for {day}",
                                 "predecessorListingType": "IMMEDIATE"}
        elif b.status == "failed":
            obj.update(started=b.created + 300, completed=b.created + 5_000,
                       failedBatchLocation=f"adl://fake.azuredatalakestore.net/failed/{b.key}",
                       errors=[{"code": "INGEST-1212-400", "description": "Scoring job failed", "rows": []}])
        return obj

    def _metrics(self, b: Batch) -> dict[str, Any]:
        parts = [p for _, p in b.parts if not p.is_marker]
        rows, size = sum(p.rows for p in parts), sum(p.size for p in parts)
        if b.dataset.spec.metrics_form == "old":
            return {"recordsRead": rows, "recordsWritten": rows, "recordsFailed": 0,
                    "avgNumExecutorsPerTask": 4, "startTime": b.created + 300,
                    "endTime": b.created + 9_000, "inputSizeInKb": math.ceil(size / 1024)}
        return {"partitionCount": len(b.files), "outputByteSize": size, "inputFileCount": -1,
                "inputByteSize": size, "outputRecordCount": rows, "outputFileCount": len(parts),
                "inputRecordCount": rows, "failedRecordCount": 0}

    def _sandbox_id(self) -> str:
        h = hashlib.sha256(f"{self.cfg.org_id}/{self.cfg.sandbox}".encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def _catalog_visible(self, b: Batch) -> bool:
        """A segment's batch appears once an export job wrote it; tests may hold batches back."""
        return b.key not in self.hidden_batches and (not b.dataset.spec.segment_id or b.key in self._attached)

    def _attached_obj(self, b: Batch) -> dict[str, Any]:
        """An exported audience's batch: `loading` for its first batch_polls_to_success GETs."""
        obj = self._batch_obj(b)
        if self._batch_polls[b.key] <= self.cfg.batch_polls_to_success:
            for k in ("metrics", "started", "completed", "replay"):
                obj.pop(k, None)
            obj["status"] = "loading"
        return obj

    async def h_batches(self, request: web.Request) -> web.Response:
        q = request.query
        limit = int_param(request, "limit", 20, 1, 100)
        if limit is None:
            return problem(400, "BadRequestError", "Invalid limit: the limit must be between 1 and 100")
        start = int_param(request, "start", 0, 0, None) if "start" in q else int_param(request, "offset", 0, 0, None)
        if start is None:
            return problem(400, "BadRequestError", "Invalid start: must be a non-negative integer")
        objs = self._batch_objs(q.get("dataSet"))
        try:
            objs = [o for o in objs if self._match_batch(o, q)]
        except ValueError as exc:
            return problem(400, "BadRequestError", str(exc))
        objs = self._order(objs, q.get("orderBy") or q.get("sort"))
        page = objs[start:start + limit]
        return self._catalog_json({o["id"]: self._project(o, q.get("properties")) for o in page})

    def _batch_objs(self, dataset_filter: str | None) -> list[dict[str, Any]]:
        """Catalog objects (built once: batches never change), narrowed by a plain dataSet filter."""
        if self._objs_by_dataset is None:
            self._objs_by_dataset = {}
            for b in self.model.batches_by_key.values():
                if not b.dataset.spec.segment_id:
                    self._objs_by_dataset.setdefault(b.dataset.id, []).append(self._batch_obj(b))
        if dataset_filter and not dataset_filter.startswith("!"):
            objs = [o for ds in dataset_filter.split(",") for o in self._objs_by_dataset.get(ds.strip(), [])]
        else:
            objs = [o for objs in self._objs_by_dataset.values() for o in objs]
        objs += [self._attached_obj(self.model.batches_by_key[key]) for key in self._attached]
        return [o for o in objs if o["id"] not in self.hidden_batches] if self.hidden_batches else objs

    @staticmethod
    def _catalog_json(body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status)

    def _match_batch(self, o: dict[str, Any], q: Any) -> bool:
        for k, v in q.items():
            if k == "dataSet":
                vals = [r["id"] for r in o["relatedObjects"] if r["type"] == "dataSet"]
                if not _simple_match(vals, v):
                    return False
            elif k in ("createdAfter", "createdBefore"):
                t = _int_or_raise(k, v)
                if (k == "createdAfter" and not o["created"] > t) or (k == "createdBefore" and not o["created"] < t):
                    return False
        return _match_fields(o, q, skip={"dataSet", "createdAfter", "createdBefore"})

    @staticmethod
    def _order(objs: list[dict[str, Any]], spec: str | None) -> list[dict[str, Any]]:
        direction, fields = "asc", ["created"]
        if spec:
            if ":" in spec:
                direction, _, rest = spec.partition(":")
                fields = rest.split(",")
            else:
                fields = spec.split(",")
        return sorted(objs, key=lambda o: (*tuple(_sort_key(o.get(f)) for f in fields), o["id"]),
                      reverse=direction.strip().lower() == "desc")

    @staticmethod
    def _project(o: dict[str, Any], properties: str | None) -> dict[str, Any]:
        if not properties:
            return o
        keep = {p.strip() for p in properties.split(",")}
        return {k: v for k, v in o.items() if k in keep}

    async def h_batch(self, request: web.Request) -> web.Response:
        b = self.model.batches_by_key.get(request.match_info["id"])
        if b is None or not self._catalog_visible(b):
            return problem(404, "NotFoundError", f"Batch {request.match_info['id']} not found")
        if b.key in self._attached:
            self._batch_polls[b.key] += 1
            obj = self._attached_obj(b)
        else:
            obj = self._batch_obj(b)
        return self._catalog_json({b.key: self._project(obj, request.query.get("properties"))})

    def _dataset_obj(self, ds: Dataset) -> dict[str, Any]:
        return self._dataset_fields(ds.id, ds.name, ds.created, ds.batches, {
            "description": "Fake Customer AI output dataset",
            "schemaRef": {"id": f"https://ns.adobe.com/fake/schemas/{ds.id}",
                          "contentType": "application/vnd.adobe.xed+json;version=1"},
            "tags": {"adobe/pqs/table": [f"customer_ai_scores_{ds.index}"]}, "viewId": ds.view_id,
            "createdClient": ds.spec.created_client,
            "fileDescription": {"persisted": True, "containerFormat": "parquet", "format": "parquet"},
        })

    def _created_obj(self, c: CreatedDataset) -> dict[str, Any]:
        batches = [self.model.batches_by_key[k] for k, ds in self._attached.items() if ds == c.id]
        return self._dataset_fields(c.id, c.name, c.created, batches, {
            "schemaRef": c.schema_ref, "tags": {}, "viewId": _hex24(f"view/{c.id}"),
            "createdClient": self.cfg.client_id, "fileDescription": c.file_description or {},
        })

    def _dataset_fields(self, ds_id: str, name: str, created: int, batches: list[Batch], extra: dict[str, Any]) -> dict[str, Any]:
        last = max(batches, key=lambda b: b.created) if batches else None
        ok = [b for b in batches if b.status in ("success", "active")]
        return {
            "id": ds_id, "name": name, "imsOrg": self.cfg.org_id, "sandboxId": self._sandbox_id(),
            "files": f"@/dataSetFiles?dataSetId={ds_id}",
            "lastBatchId": last.key if last else None, "lastBatchStatus": last.status if last else None,
            "lastSuccessfulBatch": max(ok, key=lambda b: b.created).key if ok else None,
            "created": created, "updated": last.created if last else created, "version": "1.0.0", **extra,
        }

    def _all_dataset_objs(self) -> list[dict[str, Any]]:
        return ([self._dataset_obj(d) for d in self.model.datasets.values() if not d.spec.segment_id]
                + [self._created_obj(c) for c in self._created.values()])

    async def h_dataset(self, request: web.Request) -> web.Response:
        ds_id = request.match_info["id"]
        ds = self.model.datasets.get(ds_id)
        if ds is not None and not ds.spec.segment_id:
            obj = self._dataset_obj(ds)
        elif ds_id in self._created:
            obj = self._created_obj(self._created[ds_id])
        else:
            return problem(404, "NotFoundError", f"Dataset {ds_id} not found")
        return self._catalog_json({ds_id: self._project(obj, request.query.get("properties"))})

    async def h_datasets(self, request: web.Request) -> web.Response:
        """The documented filters work here as on /batches: `name=a,b`, `property=name==…` (filter-data.md)."""
        limit = int_param(request, "limit", 20, 1, 100)
        start = int_param(request, "start", 0, 0, None)
        if limit is None or start is None:
            return problem(400, "BadRequestError", "Invalid limit/start: limit must be between 1 and 100")
        try:
            objs = [o for o in self._all_dataset_objs() if _match_fields(o, request.query)]
        except ValueError as exc:
            return problem(400, "BadRequestError", str(exc))
        objs = self._order(objs, request.query.get("orderBy") or request.query.get("sort"))[start:start + limit]
        return self._catalog_json({o["id"]: self._project(o, request.query.get("properties")) for o in objs})

    async def h_create_dataset(self, request: web.Request) -> web.Response:
        """POST /dataSets: 201 and ["@/dataSets/<id>"] (aep-api.md §3.5, §6.1)."""
        body, refused = await json_body(request)
        if refused is not None:
            return refused
        schema = body.get("schemaRef") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(schema, dict) \
                or not isinstance(schema.get("id"), str):
            return problem(400, "BadRequestError", "name and schemaRef.id are required")
        ds_id = _hex24(f"{self.cfg.seed}/created/{len(self._created)}")
        self._created[ds_id] = CreatedDataset(ds_id, body["name"], schema, int(time.time() * 1000), body.get("fileDescription"))
        return web.json_response([f"@/dataSets/{ds_id}"], status=201)

    async def h_last_batches(self, request: web.Request) -> web.Response:
        out: dict[str, Any] = {}
        for ds_id in filter(None, request.query.get("dataSetId", "").split(",")):
            ds = self.model.datasets.get(ds_id)
            if ds is None or not ds.batches or ds.spec.segment_id:
                continue
            last = max(ds.batches, key=lambda b: b.created)
            failed = [b for b in ds.batches if b.status == "failed"]
            out[ds.id] = {"lastBatchId": last.key, "lastBatchStatus": last.status,
                          "lastSuccessfulBatchId": ds.latest_success.key if ds.latest_success else None,
                          "lastFailedBatchId": failed[-1].key if failed else None,
                          "imsOrg": self.cfg.org_id, "sandboxId": self._sandbox_id(),
                          "created": ds.created, "updated": last.created}
        return self._catalog_json(out)


def _match_fields(o: dict[str, Any], q: Any, skip: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    """Simple filters on top-level scalar fields (`{prop}=v1,v2`, `!v`) and every `property=`."""
    for k, v in q.items():
        if k in PAGING or k in skip:
            continue
        if k in o and not isinstance(o[k], (dict, list)) and not _simple_match([o[k]], v):
            return False
    return all(_property_match(o, expr) for expr in q.getall("property", []))


def _hex24(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:24]


def _simple_match(values: list[Any], spec: str) -> bool:
    """`{prop}=v1,v2` matches any; `{prop}=!v1,v2` matches none."""
    neg = spec.startswith("!")
    wanted = {w.strip() for w in spec.lstrip("!").split(",")}
    hit = any(str(v) in wanted for v in values)
    return not hit if neg else hit


def _int_or_raise(name: str, v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"{name} must be an epoch time in milliseconds") from None


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, (int, float)):
        return (0, v)
    return (1, "" if v is None else str(v))


_PROP_RE = re.compile(r"^(!?)([A-Za-z_][\w]*)\s*(==|!=|>=|<=|>|<|~)?\s*(.*)$")


def _cmp_value(v: Any) -> tuple[Any, ...]:
    s = str(v)
    try:
        return (0, float(s))
    except ValueError:
        pass
    if re.fullmatch(r"\d+(\.\d+)*", s):
        return (1, tuple(int(x) for x in s.split(".")))
    return (2, s)


def _property_match(o: dict[str, Any], expr: str) -> bool:
    """Catalog `property=` syntax (filter-data.md), top-level fields only."""
    m = _PROP_RE.match(expr)
    if not m:
        raise ValueError(f"Invalid property filter: {expr}")
    neg, name, op, val = m.groups()
    if op is None:
        return (name in o) != bool(neg)
    if name not in o:
        return False
    cur = o[name]
    if op == "~":
        return re.search(val, str(cur)) is not None
    if op == "==":
        return str(cur) == val
    if op == "!=":
        return str(cur) != val
    a, b = _cmp_value(cur), _cmp_value(val)
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]

