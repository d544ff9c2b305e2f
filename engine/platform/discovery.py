"""Discovery: what the platform holds for a run, one part per API (like the fake in engine/fake),
each given the run's client explicitly.

catalog.py      batches (latest, by id, every batch of a window), datasets by id or name, dataset creation
dataaccess.py   a batch's dataSetFiles and the files inside them, page by page
audiences.py    segmentation export jobs: start, poll, their batches
selection.py    config entries -> the batches a run exports (used by `run` and by `check`)
"""

from __future__ import annotations

from ..layout import PLAIN
from .audiences import AudienceJobs
from .catalog import CatalogApi
from .client import PlatformClient
from .dataaccess import MAX_LISTING_PAGES, DataAccessApi


class Discovery:
    def __init__(self, client: PlatformClient, created_client: str | None = None, max_listing_pages: int = MAX_LISTING_PAGES,
                 layout: str = PLAIN):
        self.client = client
        self.catalog = CatalogApi(client, created_client)
        self.data_access = DataAccessApi(client, max_listing_pages, layout)  # layout: export.layout, where the files go
        self.audiences = AudienceJobs(client, self.catalog)
