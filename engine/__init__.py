"""aep-export: bulk export of Adobe Experience Platform datasets, fast, resumable and verified."""

__version__ = "0.1.0"  # the one place the version is written (pyproject reads it from here)
