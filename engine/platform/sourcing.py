"""The run's sources, by the name a `[[datasets]]` entry gives in `via` (the one list of them)."""

from __future__ import annotations

from .discovery import Discovery
from .dlz import DlzSource
from .selection import Selector
from .sources import DataAccessSource, Sources


def run_sources(discovery: Discovery, selector: Selector) -> Sources:
    access = discovery.data_access
    return Sources(DataAccessSource(selector, access), DlzSource(discovery.client, discovery.catalog, access.layout))
