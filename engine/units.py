"""Numbers as people read them (the summary, progress lines, the plan) and write them (--bwlimit 20M)."""

from __future__ import annotations

import re

# K, M, G, T alone are powers of 1024, as rclone's --bwlimit, curl's --limit-rate and aria2 read
# them; the IEC forms (KiB, Mi) too; only the SI forms with a B (kB, MB, GB, TB) are powers of 1000.
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DECIMAL = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:([kmgt])(i)?)?(b)?\s*(?:/\s*s)?\s*", re.IGNORECASE)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def parse_bytes(text: str) -> int:
    """Bytes from "20M", "512K", "1.5GiB", "20 MB/s" or "1048576" (a "/s" is allowed: rates
    read the same). Raises ValueError naming the accepted forms."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size: a number with an optional unit, e.g. 20M, 512K, 1.5GiB, 20MB "
                         "(K, M, G, T, KiB, MiB… are powers of 1024; kB, MB, GB are powers of 1000)")
    number, prefix, iec, byte = float(m.group(1)), (m.group(2) or "").lower(), m.group(3), m.group(4)
    si = prefix and byte and not iec  # kB, MB, GB, TB
    return round(number * (_DECIMAL[prefix + "b"] if si else _BINARY[prefix]))
