"""Turning server-sent names into paths that can never leave the output directory."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath

from ..errors import UnsafeNameError
from .layout import STATE_DIR, is_own_name

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


def folder_id(value: str, what: str) -> str:
    """A dataset, batch or dataSetFile id as the folder it names: one safe component, and none of
    the names of our own files (`_SUCCESS`, `_manifest.json`, `.aep-export`, …), which it would
    otherwise take the place of, or share a folder with."""
    safe_component(value, what)
    if is_own_name(value):
        raise UnsafeNameError(f"{what} {value!r} is the name of one of aep-export's own files")
    return value


def listed_name(name: str) -> str:
    """A file name from a listing as a path below its dataSetFile's folder: safe, and never into the
    hidden folder where our temporary files are (output/layout.py)."""
    rel = safe_relative(name)
    if any(part.casefold() == STATE_DIR for part in rel.split("/")):
        raise UnsafeNameError(f"file name {name!r} leads into aep-export's own folder {STATE_DIR}")
    return rel


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
    """The real path of root/folder, built from its parent's (cached): a folder costs one lstat,
    not a full realpath (thousands of batch and dataSetFile folders share a few parents)."""
    root_real = os.path.realpath(root)
    if not folder:
        return root_real
    parent, _, name = folder.rpartition("/")
    if name in ("", ".", "..") or os.path.isabs(folder):  # not a plain relative folder: resolve it whole
        target = os.path.realpath(os.path.join(root_real, folder))
    else:
        target = os.path.join(_resolved_folder(root, parent), name)
        if os.path.islink(target):  # only a link can lead elsewhere: resolve it
            target = os.path.realpath(target)
    if target != root_real and not target.startswith(root_real.rstrip(os.sep) + os.sep):
        raise UnsafeNameError(f"{folder!r} resolves outside the output directory")
    return target


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output directory and prove it writable before anything is attempted.

    Any failure (read-only file system, no permission, a file in the way, no space) is one
    ConfigError line (exit 2), and the folders this call created are removed again: nothing is
    left half-written.
    """
    from ..errors import ConfigError

    created = [p for p in (out_dir, *out_dir.parents) if not os.path.lexists(p)]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aep-export-probe-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ConfigError(f"output directory {out_dir} cannot be used: {_why(exc, out_dir)}") from None


def _why(exc: OSError, out_dir: Path) -> str:
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system (mount a writable volume there, or pass --out)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied for uid {os.getuid()} (make it writable, or pass --out)"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{exc.filename or out_dir} is a file, not a directory"
    return exc.strerror or str(exc)
