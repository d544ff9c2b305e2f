"""Other commits of the engine, for before/after runs side by side (`python -m bench --engine-ref REF`)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from .harness import REPO


def checkout(ref: str) -> Path:
    """The committed tree of `ref`, extracted once into a temporary folder (git archive: no
    worktree bookkeeping). The engine runs from it with this checkout's interpreter and packages,
    so compare commits whose dependencies are the same."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"aep-bench-ref-{sha[:12]}"
    if not (tree / "engine" / "__main__.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "engine"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree
