"""One run per destination at a time: a lock in `{out}/.aep-export/`, held for the whole run.

Two runs writing one folder (a cron overlap, a retried Job whose first pod still runs) fetch
every file twice, rename each other's `.part` files away and delete each other's `_SUCCESS`.
The second one refuses at once instead, naming the run that holds the folder.

The locks are `flock`s on open files, so the kernel releases them when the holder ends, however
it ends (`kill -9` included): a lock left by a dead run never blocks the next one, and no pid
file has to be judged stale. Two files:

    .aep-export/lock                     an unsharded run holds it exclusively; every shard shares it
    .aep-export/lock.shard-I-of-N        shard I of N holds it exclusively

so shards of one Job run side by side, two runs of one shard refuse each other, and an
unsharded run refuses to overlap any shard (and the other way round). Runs with another shard
count (0/4 beside 0/2) are not told apart. Each holder writes who it is (pid, host, start time,
shard) into the file it holds exclusively; that is what the refusal quotes.

Only a local folder is locked (on a network volume, when its file system supports `flock`
across machines: NFSv4 does); `s3://` destinations have no lock (README, Object storage).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DestinationBusy
from ..layout import STATE_DIR, lock_name
from .diskio import no_space_is_disk_full


@contextmanager
def hold_destination(out_dir: object, shard: str | None, started_at: str) -> Iterator[None]:
    """Hold the destination's lock for the block; DestinationBusy when another run holds it.
    A bucket (anything but a local Path) is not locked."""
    if not isinstance(out_dir, Path):
        yield
        return
    folder = out_dir / STATE_DIR
    held: list[int] = []
    try:
        with no_space_is_disk_full(folder):  # a first run on a full disk: no room for the lock file
            folder.mkdir(parents=True, exist_ok=True)
            if shard is None:
                held.append(_take(folder / lock_name(None), fcntl.LOCK_EX, folder))
            else:  # our own shard first: a second run of it is named precisely
                held.append(_take(folder / lock_name(shard), fcntl.LOCK_EX, folder))
                held.append(_take(folder / lock_name(None), fcntl.LOCK_SH, folder))
        _sign(held[0], shard, started_at)
        yield
    finally:
        for fd in reversed(held):
            os.close(fd)  # closing releases the lock


def held_by_another(out_dir: object, shard: str | None) -> bool:
    """Whether hold_destination would refuse now: each lock it would take probed in the mode it
    would take it, nothing created or kept. (The CLI sends no early token request for a run about
    to be refused; a run that takes the folder in between is still refused by hold_destination.)"""
    if not isinstance(out_dir, Path):
        return False
    folder = out_dir / STATE_DIR
    wanted = [(lock_name(None), fcntl.LOCK_EX)] if shard is None else [(lock_name(shard), fcntl.LOCK_EX), (lock_name(None), fcntl.LOCK_SH)]
    return any(_refused(folder / name, mode) for name, mode in wanted)


def _refused(path: Path, mode: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: no run holds it
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got one


def _take(path: Path, mode: int, folder: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise DestinationBusy(f"another aep-export run is writing into {folder.parent}: {_holders(folder, path)}; "
                              "nothing was attempted (wait for it to end, or stop it, then rerun)") from None
    return fd


def _sign(fd: int, shard: str | None, started_at: str) -> None:
    """Say who holds the lock, in the file only we hold (best effort: a full disk may refuse)."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started_at, "shard": shard}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    except OSError:
        pass


def _holders(folder: Path, refused: Path) -> str:
    """Who holds what refused us: the exclusive holder of that file, or (the shared lock held by
    shards) every shard lock that is held now."""
    if refused.name == lock_name(None) and not _held_exclusively(refused):
        shards = sorted(p for p in folder.glob(lock_name(None) + ".shard-*") if _held_exclusively(p))
        if shards:
            return "; ".join(_who(p) for p in shards)
    return _who(refused)


def _held_exclusively(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's shared lock, if it got one


def _who(path: Path) -> str:
    try:
        me = json.loads(path.read_text(encoding="utf-8"))
        shard = f", shard {me['shard']}" if me.get("shard") else ""
        return f"pid {me['pid']} on host {me['host']}, started {me['started_at']}{shard} (lock {path})"
    except (OSError, ValueError, TypeError, KeyError):
        return f"a run that has not said who it is yet (lock {path})"
