"""Local fake of the Adobe Experience Platform APIs used by aep-export (see ../shared/aep-api.md).

Exports are resolved lazily so that `aep-export run` does not pay for numpy/pyarrow data
generation code it never uses.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FakeConfig": ".config",
    "DatasetSpec": ".data",
    "ExpectedFile": ".data",
    "Faults": ".faults",
    "FakePlatform": ".server",
    "FakeStats": ".stats",
    "ThreadedFakePlatform": ".server",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
