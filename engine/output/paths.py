"""Turning server-sent names into paths that can never leave the output directory."""

from __future__ import annotations

import functools
import os
import unicodedata
from pathlib import Path, PurePosixPath

from ..errors import UnsafeNameError

_MAX_COMPONENT = 255


def safe_component(value: str, what: str) -> str:
    """A single path component: no separators, no dot-dirs, no control characters."""
    if not value or value in (".", ".."):
        raise UnsafeNameError(f"{what} {value!r} is not a usable file name")
    if "/" in value or "\\" in value:
        raise UnsafeNameError(f"{what} {value!r} contains a path separator")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise UnsafeNameError(f"{what} {value!r} contains control characters")
    if len(value.encode()) > _MAX_COMPONENT:
        raise UnsafeNameError(f"{what} {value[:40]!r}… is longer than {_MAX_COMPONENT} bytes")
    return value


def safe_relative(name: str, what: str = "file name") -> str:
    """A relative POSIX path whose every component is safe ('a/b.parquet' is fine, '../x' is not)."""
    if "\\" in name:
        raise UnsafeNameError(f"{what} {name!r} contains a backslash")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise UnsafeNameError(f"{what} {name!r} is an absolute path")
    parts = name.split("/")
    for part in parts:
        safe_component(part, what)
    return "/".join(parts)


def contained(root: Path, rel: str) -> Path:
    """root/rel, proven (after resolving symlinks) to stay below root.

    The folder part is resolved once per run and cached (thousands of parts share a few
    folders); the last component is opened with O_NOFOLLOW by the writer, so it cannot be a
    symlink either.
    """
    folder, _, name = rel.rpartition("/")
    base = _resolved_folder(str(root), folder)
    if name in ("", ".", ".."):
        raise UnsafeNameError(f"{rel!r} is not a file name")
    return Path(base, name)


@functools.lru_cache(maxsize=4096)
def _resolved_folder(root: str, folder: str) -> str:
    root_real = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root_real, folder)) if folder else root_real
    if target != root_real and not target.startswith(root_real.rstrip(os.sep) + os.sep):
        raise UnsafeNameError(f"{folder!r} resolves outside the output directory")
    return target
