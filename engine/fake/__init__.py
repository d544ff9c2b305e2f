"""Local fake of the Adobe Experience Platform APIs used by aep-export (see /work/shared/aep-api.md)."""

from .config import FakeConfig
from .data import DatasetSpec, ExpectedFile
from .faults import Faults
from .server import FakePlatform, FakeStats, ThreadedFakePlatform

__all__ = ["FakePlatform", "FakeConfig", "DatasetSpec", "Faults", "ExpectedFile", "FakeStats",
           "ThreadedFakePlatform"]
