"""The control file of a `.part`: which byte ranges it holds (aria2's `.aria2`, in JSON).

Where both live is engine/layout.py (`part_path`, `control_path`: in the hidden folder beside the
final name). The control file is rewritten atomically (temp + rename), so a cut write leaves the previous
state readable. A .part without one is a contiguous prefix: one stream appending to it in order
needs no control file (small files never get one), and one is written before a second stream may
write past the prefix. A `.part.split` marker (versions before the control file) records the
prefix of a .part that was split. Whatever a control file says is checked against the .part
before a byte of it is trusted.

Two lists: `done`, every range written (a process killed at any point keeps them: the kernel
still holds the bytes), and `synced`, the ranges as of the last fdatasync. A control file written
before the machine last booted (another `boot` id: a node crash, or a pod moved to another node)
keeps only `synced`, since bytes written but never synced may not have survived.

`etag` and `last_modified`, when the server sent them, identify the version of the file the held
bytes belong to (engine/validators.py): the resume asks with If-Range. A `.part` whose server
sends a validator always has a control file, written when the first response arrives; one
without these fields (an older run, a server that sends none) is confirmed by bytes instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..checks.integrity import PARQUET_MAGIC
from ..layout import control_path, part_path, split_marker
from ..model import FileTask
from ..ranges import RangeSet
from ..validators import Validator
from .diskio import atomic_write

CONTROL_VERSION = 1


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None  # not Linux: only synced ranges are ever trusted


BOOT_ID = _boot_id()


def held_ranges(fd: int, final: Path, task: FileTask) -> tuple[RangeSet, Validator | None]:
    """What an earlier run left in the .part, after sanity checks (nothing if they fail), and the
    validator of the version it came from, if the server sent one."""
    length = os.fstat(fd).st_size
    held, validator = _read_control(final, task.size)
    if held is None:  # a .part from an older version: a contiguous prefix
        held = RangeSet([(0, _split_prefix(final, length))])
        split_marker(final).unlink(missing_ok=True)
    if not _fits(held, task.size, length):
        held = RangeSet()
    if held.covers(0, 4) and task.is_parquet and os.pread(fd, 4, 0) != PARQUET_MAGIC:
        held = RangeSet()  # not the start of a parquet file: do not build on it
    if not held.total:
        os.ftruncate(fd, 0)
        control_path(final).unlink(missing_ok=True)  # an empty .part needs none (see above)
        validator = None
    return held, validator


def held_bytes(final: Path, size: int | None) -> int:
    """How many bytes of the .part a rerun would keep, by the rules of `held_ranges` but read only
    (`check` and `run --dry-run`): the parquet magic is not read, nothing is repaired."""
    try:
        length = os.lstat(part_path(final)).st_size
    except (FileNotFoundError, NotADirectoryError):
        return 0
    held, _ = _read_control(final, size)
    if held is None:
        held = RangeSet([(0, _split_prefix(final, length))])
    return held.total if _fits(held, size, length) else 0


def _split_prefix(final: Path, length: int) -> int:
    """The prefix a .part without a control file holds: all of it, or what its split marker says."""
    marker = split_marker(final)
    if not marker.exists():
        return length
    try:
        return min(length, int(marker.read_text() or 0))
    except ValueError:
        return 0


def _fits(held: RangeSet, size: int | None, length: int) -> bool:
    """Held ranges that stay within the listed size and the .part's length (else none is trusted)."""
    return not ((size is not None and held.last_end > size) or held.last_end > length)


def _read_control(final: Path, size: int | None) -> tuple[RangeSet | None, Validator | None]:
    try:
        state = json.loads(control_path(final).read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return RangeSet(), None  # unreadable: trust nothing
    if not isinstance(state, dict) or state.get("v") != CONTROL_VERSION:
        return RangeSet(), None
    if state.get("size") is not None and size is not None and state["size"] != size:
        return RangeSet(), None  # listed with another size: another file
    same_boot = BOOT_ID is not None and state.get("boot") == BOOT_ID
    try:
        held = RangeSet((int(a), int(b)) for a, b in state.get("done" if same_boot else "synced", []))
    except (TypeError, ValueError):
        return RangeSet(), None
    return held, Validator.from_values(state.get("etag"), state.get("last_modified"))


def write_control(final: Path, size: int | None, done: list[list[int]], synced: list[list[int]],
                  durable: bool = False, validator: Validator | None = None) -> None:
    """Atomically (temp + rename). `durable`: fsynced with its folder, so that after a crash it can
    be old but not missing (a missing one would make a .part with holes pass for a prefix)."""
    path = control_path(final)
    state = {"v": CONTROL_VERSION, "size": size, "done": done, "synced": synced, "boot": BOOT_ID,
             **(validator.state() if validator is not None else {})}
    atomic_write(path, json.dumps(state, separators=(",", ":")), durable=durable, sync_folder=durable)
