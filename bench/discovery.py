"""The peers' discovery, timed: what a script in front of aria2c or curl has to do first.

An IMS token; the newest successful batch of every dataset from the Catalog (one query per 25
datasets, as the engine does, then one per dataset the group answer leaves out); each batch's
dataSetFiles; each dataSetFile's files (paged, nested dataSetFiles walked). The requests run on
`concurrency` threads (the connection count the tools get), each thread on its own keep-alive
connection, retrying throttling and 5xx like any careful script. The engine does all of this
inside its own run, so its time includes it; the harness adds this time to every peer's.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import Fake, RemoteFile

CATALOG = "/data/foundation/catalog"
EXPORT = "/data/foundation/export"
CATALOG_GROUP = 25  # datasets per grouped Catalog query (the engine's figure)
DOWNLOADABLE = ("success", "active")
RETRY_STATUSES = (429, 500, 502, 503, 504)


@dataclass
class PeerDiscovery:
    files: list[RemoteFile]  # in the fake's expected order
    headers: dict[str, str]  # the 4 gateway headers
    wall_s: float
    cpu_s: float  # the harness process's CPU while discovering (it does nothing else meanwhile)
    requests: int


class Client:
    """Keep-alive JSON requests to one origin: one connection per thread, retries on 429/5xx/resets."""

    def __init__(self, base_url: str, tries: int = 8):
        u = urllib.parse.urlsplit(base_url)
        self.base, self.host, self.port = base_url.rstrip("/"), u.hostname or "127.0.0.1", u.port or 80
        self.tries = tries
        self.headers: dict[str, str] = {}
        self.requests = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        target = self.target(url)
        for attempt in range(self.tries):
            with self._lock:
                self.requests += 1
            try:
                conn = self._conn()
                conn.request(method, target, body=body, headers={**self.headers, **(headers or {})})
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, ConnectionError, TimeoutError, OSError):
                self._drop()
                if attempt == self.tries - 1:
                    raise
                time.sleep(0.3)
                continue
            if resp.status in RETRY_STATUSES and attempt < self.tries - 1:
                retry_after = resp.getheader("Retry-After") or ""
                time.sleep(min(max(float(retry_after) if retry_after.isdigit() else 0.3, 0.2), 5))
                continue
            if resp.status >= 400:
                raise LookupError(f"{method} {target}: HTTP {resp.status}")
            return json.loads(data) if data else None
        raise AssertionError("unreachable")

    def target(self, url: str) -> str:
        """Path and query of a same-origin URL (absolute or relative)."""
        full = urllib.parse.urljoin(self.base + "/", url)
        if not full.startswith(self.base + "/"):
            raise ValueError(f"not on the gateway's origin: {url}")
        return full[len(self.base):]

    def pages(self, url: str) -> list[dict[str, Any]]:
        """Items of a Data Access listing, following `_links.next` (bare arrays too)."""
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            body = self.request("GET", next_url)
            page = body if isinstance(body, list) else (body or {}).get("data", [])
            items += [it for it in page if isinstance(it, dict)]
            nxt = ((body.get("_links") or {}).get("next") or {}).get("href") if isinstance(body, dict) else None
            next_url = nxt if nxt and page else None
        return items


def discover(fake: Fake, concurrency: int) -> PeerDiscovery:
    """List the expected files from the fake's APIs with `concurrency` threads, timed."""
    t0, c0 = time.perf_counter(), time.process_time()
    client = Client(fake.url)
    token = client.request("POST", "/ims/token/v3", body=urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": fake.info["client_id"],
        "client_secret": fake.info["client_secret"], "scope": "openid,AdobeID"}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})["access_token"]
    client.headers = gateway_headers(fake.info, token)
    datasets = list(fake.info["datasets"])
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        groups = [datasets[i:i + CATALOG_GROUP] for i in range(0, len(datasets), CATALOG_GROUP)]
        newest: dict[str, tuple[str, dict[str, Any]]] = {}
        for answer in pool.map(lambda g: latest_batches(client, g), groups):
            newest.update(answer)
        missing = [d for d in datasets if d not in newest]
        for ds, found in zip(missing, pool.map(lambda d: latest_batches(client, [d]).get(d), missing), strict=False):
            if found is None:
                raise LookupError(f"dataset {ds}: no successful batch")
            newest[ds] = found
        listed = pool.map(lambda ds: list_batch(client, ds, *newest[ds]), datasets)
        files = [f for chunk in listed for f in chunk]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return PeerDiscovery(in_expected_order(files, fake), dict(client.headers), wall, cpu, client.requests)


def gateway_headers(info: dict[str, Any], token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "x-api-key": info["client_id"],
            "x-gw-ims-org-id": info["org_id"], "x-sandbox-name": info["sandbox"]}


def latest_batches(client: Client, dataset_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """{dataset: (Catalog key, batch object)} of the newest downloadable batch each, from one query."""
    body = client.request("GET", f"{CATALOG}/batches?" + urllib.parse.urlencode({
        "dataSet": ",".join(dataset_ids), "status": ",".join(DOWNLOADABLE), "orderBy": "desc:created",
        "limit": "100" if len(dataset_ids) > 1 else "1"}))
    found = sorted(((k, o) for k, o in (body or {}).items()
                    if isinstance(o, dict) and str(o.get("status", "")).lower() in DOWNLOADABLE),
                   key=lambda ko: ko[1].get("created") or 0, reverse=True)
    newest: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, obj in found:
        for r in obj.get("relatedObjects") or []:
            if r.get("type") == "dataSet" and r.get("id") in dataset_ids and r["id"] not in newest:
                newest[r["id"]] = (key, obj)
    return newest


def list_batch(client: Client, dataset_id: str, key: str, obj: dict[str, Any]) -> list[RemoteFile]:
    """Every part of one batch: its dataSetFiles (under the key or a related batch id), then their files."""
    candidates = [key] + [r["id"] for r in obj.get("relatedObjects") or [] if r.get("type") == "batch" and r.get("id")]
    for batch_id in dict.fromkeys(candidates):
        try:
            dsfs = client.pages(f"{EXPORT}/batches/{batch_id}/files")
        except LookupError:
            continue
        if dsfs:
            out: list[RemoteFile] = []
            for d in dsfs:
                out += _walk(client, Path(dataset_id) / batch_id, str(d["dataSetFileId"]), _href(d))
            return out
    raise LookupError(f"batch {key} of dataset {dataset_id}: no files listed")


def _walk(client: Client, prefix: Path, dsf_id: str, href: str | None) -> list[RemoteFile]:
    out: list[RemoteFile] = []
    for item in client.pages(href or f"{EXPORT}/files/{urllib.parse.quote(dsf_id)}"):
        if "name" in item:
            name = str(item["name"])
            if not name.startswith(("_", ".")):  # Spark markers such as _SUCCESS
                url = urllib.parse.urljoin(client.base + "/", _href(item) or "")
                out.append(RemoteFile(url, prefix / dsf_id / name, int(item.get("length") or 0)))
        elif item.get("dataSetFileId"):  # a directory of further dataSetFiles
            child = str(item["dataSetFileId"])
            out += _walk(client, prefix, child, _href(item))
    return out


def _href(item: dict[str, Any]) -> str | None:
    return ((item.get("_links") or {}).get("self") or {}).get("href")


def in_expected_order(files: list[RemoteFile], fake: Fake) -> list[RemoteFile]:
    """The listed files in the model's order; raises unless they are exactly the expected files."""
    by_path = {f.rel_path: f for f in files}
    expected = [e.rel_path for e in fake.expected]
    if len(by_path) != len(files) or set(by_path) != set(expected):
        raise RuntimeError(f"discovery listed {len(files)} files, {len(set(by_path) & set(expected))} of the "
                           f"{len(expected)} expected")
    sizes = {e.rel_path: e.size for e in fake.expected}
    wrong = [str(p) for p, f in by_path.items() if f.size != sizes[p]]
    if wrong:
        raise RuntimeError(f"discovery: listed length differs from the file for {wrong[:3]}")
    return [by_path[p] for p in expected]
