"""The `endpoint` label of aep_export_requests_total (platform/traffic.py): bounded names, Flow
Service by its paths on the gateway, the Data Landing Zone's container by its origin."""

from __future__ import annotations

from pathlib import Path

from conftest import settings_for
from dlz_support import with_via
from prom import free_port
from test_metrics import _by_endpoint
from yarl import URL

from engine.exporter import Exporter
from engine.fake import FakeConfig
from engine.outcome import EXIT_OK
from engine.platform.dlz import CREDENTIALS
from engine.platform.flowservice import ADHOC
from engine.platform.origin import origin_of
from engine.platform.traffic import ENDPOINTS, endpoint_of


def test_exchanges_are_counted_by_bounded_endpoint_names() -> None:
    """Flow Service (and the DLZ credentials and ad hoc run beside it) by path on the gateway; the
    DLZ container by its origin, once the DLZ source has told it; any other origin "redirected"."""
    gateway, ims = URL("https://platform.adobe.io"), URL("https://ims-na1.adobelogin.com")
    dlz = frozenset({origin_of("https://sndbxdtlndg.blob.core.windows.net/dlz-user-container")})
    cases = {
        "https://platform.adobe.io/data/foundation/flowservice/flows?property=flowSpec.id==x": "flowservice",
        "https://platform.adobe.io:443/data/foundation/flowservice/runs/a0d7fbe3": "flowservice",
        f"https://platform.adobe.io{CREDENTIALS}?type=dlz_destination": "flowservice",
        f"https://platform.adobe.io{ADHOC}": "flowservice",
        "https://sndbxdtlndg.blob.core.windows.net/dlz-user-container?restype=container&comp=list": "blob",
        "https://SNDBXDTLNDG.blob.core.windows.net:443/dlz-user-container/a/exportTime=1/part-0.parquet": "blob",
        "https://another.blob.core.windows.net/dlz-user-container/part-0.parquet": "redirected",
        "https://platform.adobe.io/data/foundation/catalog/batches": "catalog",
        "https://platform.adobe.io/data/foundation/connectors/connectionSpecs": "other",
    }
    for url, endpoint in cases.items():
        assert endpoint_of(URL(url), gateway, ims, dlz) == endpoint, url
    assert endpoint_of(URL(str(next(iter(dlz)))), gateway, ims) == "redirected"  # not told: not the DLZ's
    # a container on the gateway's own origin: the gateway's paths still decide
    assert endpoint_of(URL("https://platform.adobe.io/data/foundation/catalog/x"), gateway, ims,
                       frozenset({origin_of(gateway)})) == "catalog"
    assert set(cases.values()) <= set(ENDPOINTS)


async def test_a_dlz_export_counts_flowservice_and_blob_exchanges(tmp_path: Path, make_fake) -> None:
    """Against the fake's own Blob origin: every Flow Service and Blob exchange, as the fake counted it."""
    cfg = FakeConfig.small(n_datasets=2, files=3, rows=200, seed=2104)
    async with make_fake(cfg) as fp:
        settings = with_via(settings_for(fp, tmp_path / "out"), {fp.dataset_ids[1]: "dlz"})
        metrics = settings.metrics.model_copy(update={"addr": f"127.0.0.1:{free_port()}"})
        exporter = Exporter(settings.model_copy(update={"metrics": metrics}), handle_signals=False)
        run = await exporter.execute()
    assert run.exit_code == EXIT_OK, run.errors
    assert exporter.metrics is not None
    seen: dict[str, int] = {}
    for (endpoint, _), n in exporter.metrics.exchanges.items():
        seen[endpoint] = seen.get(endpoint, 0) + n
    routes = fp.stats.requests
    flows = sum(n for r, n in routes.items() if r.startswith(("fs.", "dlz.")))
    assert seen == {**_by_endpoint(fp), "flowservice": flows, "blob": fp.blobs.requests}, (seen, dict(routes))
    assert flows >= 6 and fp.blobs.requests == 1 + len(fp.dlz_expected_files())  # the listing, then each file
