"""Positional writes of a list of chunks: one `pwritev` per IOV_MAX chunks, short writes finished."""

from __future__ import annotations

import os
from collections.abc import Sequence

IOV_MAX = 512  # chunks per pwritev, well below the kernel's IOV_MAX (1024)


def pwrite_all(fd: int, chunks: Sequence[bytes | memoryview], offset: int) -> int:
    """Write every chunk at `offset` onwards; returns the bytes written (all of them)."""
    start = offset
    for i in range(0, len(chunks), IOV_MAX):
        batch = chunks[i:i + IOV_MAX]
        total = sum(map(len, batch))
        written = os.pwritev(fd, batch, offset)
        if written < total:  # short write (rare): finish from a joined copy
            data = memoryview(b"".join(batch))
            while written < total:
                written += os.pwrite(fd, data[written:], offset + written)
        offset += total
    return offset - start
