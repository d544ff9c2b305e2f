"""Opening the object store an out_dir URL names: the one place that knows every kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..config import StoreSettings, StoreURL
from ..retry import MAX_ATTEMPTS
from .store import Store


@asynccontextmanager
async def connect_store(url: StoreURL, store: StoreSettings | None = None, *, connections: int = 32,
                        attempts: int = MAX_ATTEMPTS) -> AsyncIterator[Store]:
    """The bucket or container, checked before anything is attempted (it exists, the credentials work)."""
    if url.is_azure:
        from .azure import Container

        async with Container.connect(url, store, connections=connections, attempts=attempts) as container:
            yield container
    else:
        from .bucket import Bucket

        async with Bucket.connect(url, connections=connections, attempts=attempts) as bucket:
            yield bucket
