"""Discovery: what the platform holds for a run, one mixin per API (like the fake in engine/fake).

catalog.py      batches (latest, by id, every batch of a window), datasets by id or name, dataset creation
dataaccess.py   a batch's dataSetFiles and the files inside them, page by page
audiences.py    segmentation export jobs: start, poll, their batches
selection.py    config entries -> the batches a run exports (used by `run` and by `check`)
"""

from __future__ import annotations

from ..retry import RetryPolicy
from .audiences import AudienceJobs
from .catalog import CatalogApi, NoBatch  # noqa: F401 - re-exported
from .client import PlatformClient
from .dataaccess import MAX_LISTING_PAGES, DataAccessApi
from .selection import CATALOG_GROUP, LatestBatches  # noqa: F401 - re-exported


class Discovery(CatalogApi, DataAccessApi, AudienceJobs):
    def __init__(self, client: PlatformClient, created_client: str | None = None, max_listing_pages: int = MAX_LISTING_PAGES):
        self.client = client
        self.created_client = created_client
        self.max_listing_pages = max_listing_pages  # pages of one Data Access listing (export.max_listing_pages)

    @property
    def policy(self) -> RetryPolicy:
        """The run's failure policy; its back-off paces the polls of jobs and batches."""
        return self.client.policy
