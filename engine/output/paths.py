"""Paths below the output directory, proven to stay there (the names are checked in engine/layout.py)."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError, UnsafeNameError


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


@functools.lru_cache(maxsize=1024)  # the folders of the files in flight and around them (not one per batch of the run)
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
