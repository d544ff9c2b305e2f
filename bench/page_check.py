"""`python -m bench.page_check [--dir DIR] [--reps N]`

What the page check at commit costs (checks/integrity.py, `footer_rows(pages=True)`): on a
~64 MiB file shaped like the fake's score files (the fake's generator: 262,144-row groups,
snappy) and on a file of many small row groups, the median wall and CPU time of the footer
check alone, with every page header walked, and of the SHA-256 the engine computes anyway.
Files are read warm (page cache), as at commit right after the last write.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _files(folder: Path) -> dict[str, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.fake.data import write_scores_parquet

    big = folder / "scores-64mib.parquet"
    if not big.exists():
        write_scores_parquet(big, 1_290_000, np.random.default_rng(1))
    many = folder / "many-row-groups.parquet"
    if not many.exists():
        n = 400_000
        rng = np.random.default_rng(2)
        table = pa.table({"ecid": pa.array([f"id-{i}" for i in range(n)]), "score": rng.random(n),
                          "bucket": pa.array(rng.integers(0, 100, n), pa.int32()),
                          "day": pa.array(np.full(n, 20000, np.int32), pa.date32()),
                          "flag": pa.array(rng.random(n) < 0.5)})
        pq.write_table(table, many, row_group_size=100, compression="snappy")  # 4,000 groups x 5 columns
    return {"~64 MiB, score files' shape": big, "4,000 row groups x 5 columns": many}


def _timed(fn, reps: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    import os

    import pyarrow.parquet as pq

    from engine.checks.integrity import file_digest, footer_rows

    p = argparse.ArgumentParser(prog="python -m bench.page_check")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "aep-export-page-check")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    for label, path in _files(args.dir).items():
        meta = pq.read_metadata(path)
        size = path.stat().st_size
        with path.open("rb") as fh:
            fd = fh.fileno()

            def check(pages: bool) -> int:
                return footer_rows(lambda offset, n: os.pread(fd, n, offset), size, path.name, pages=pages)  # noqa: B023 - called within this iteration only

            footer = _timed(lambda: check(False), args.reps)
            pages = _timed(lambda: check(True), args.reps)
        sha = _timed(lambda: file_digest(path, "sha256"), args.reps)  # noqa: B023 - called within this iteration only
        chunks = meta.num_row_groups * meta.num_columns
        print(f"{label}: {size / 2**20:.1f} MiB, {meta.num_row_groups} row groups, {chunks} column chunks")
        for what, (wall, cpu) in (("footer only", footer), ("footer + every page header", pages), ("SHA-256 of the file", sha)):
            print(f"  {what:28s} {wall * 1e3:9.2f} ms wall {cpu * 1e3:9.2f} ms CPU")
        extra = pages[1] - footer[1]
        per_gib = extra / (size / 2**30)
        print(f"  the page walk alone: {extra * 1e3:.2f} ms CPU, {per_gib:.3f} s per GiB ({extra / sha[1]:.0%} of the SHA-256)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
