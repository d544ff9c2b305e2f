"""The tree every common parquet reader opens (issue #19): pyarrow.dataset, pandas, polars, DuckDB and
Spark read the export root and a dataset folder of both layouts and get exactly the exported rows;
with `layout = "hive"` they get the dataset and the batch as columns.

Each reader is called the way its users call it on a folder, with no option where the reader needs
none (what each one skips was measured: README, "Output layout"):
- pyarrow.dataset, pandas: a folder; they skip names starting with `_` or `.` (the run report was
  `report.json`, read as parquet: both failed on the root). pyarrow.dataset infers hive columns
  only with partitioning="hive" (pandas does by default).
- polars: no version skips `_` or `.` names in a folder (2.1.0 skips only empty files; its
  `hidden_file_prefix` is opt-in, unstable, and ignores folder names), so a folder with `_LATEST`
  or `_manifest.json` beside the data fails whatever they are called: it reads a glob,
  `**/*.parquet` (hive_partitioning=True for the columns).
- DuckDB: a glob, `**/*.parquet`; hive columns are detected from the `key=value` folders.
- Spark: a folder; it skips `_`/`.` names and reads below the folder only through `key=value`
  folders, so the plain layout needs recursiveFileLookup and the hive layout needs nothing.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pytest
from conftest import missing, run_export, settings_for, with_data_dir

from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.outcome import EXIT_OK

PLAIN, HIVE = "plain", "hive"  # export.layout (spelled out: the file also runs against versions without it)
LAYOUTS = (PLAIN, HIVE)


def dataset_folder(dataset_id: str, layout: str) -> str:
    return f"dataset={dataset_id}" if layout == HIVE else dataset_id


@dataclass
class Exported:
    fp: Any
    out: Path
    layout: str
    ds: str  # exported twice: an older batch (pinned) and the latest
    rows: dict[tuple[str, str], int]  # (dataset id, batch folder id) -> rows, from the fake's own files


def _rows_of(batch: Any) -> int:
    return sum(p.rows for _, p in batch.parts if not p.is_marker)


class Exports:
    """One fake, exported into one folder per layout on first use: dataset A twice (its older batch
    pinned, then the latest), B once."""

    def __init__(self, fp: Any, root: Path):
        self.fp, self.root, self.done = fp, root, dict[str, Exported]()

    def __getitem__(self, layout: str) -> Exported:
        if layout not in self.done:
            fp, a = self.fp, self.fp.dataset_ids[0]
            older = min((b for b in fp.model.datasets[a].batches if b.status == "success"), key=lambda b: b.created)
            assert older.key != fp.latest_batch(a).key
            out = self.root / layout / "out"
            chosen = {} if layout == PLAIN else {"layout": layout}  # plain: the default, as users have it
            pinned = settings_for(fp, out, datasets=[a], **chosen)
            pinned.datasets[0].batch = older.key
            assert anyio.run(run_export, pinned).exit_code == EXIT_OK
            assert anyio.run(run_export, settings_for(fp, out, **chosen)).exit_code == EXIT_OK
            batches = [(a, older), *((d, fp.latest_batch(d)) for d in fp.dataset_ids)]
            self.done[layout] = Exported(fp, out, layout, a, {(d, b.data_id): _rows_of(b) for d, b in batches})
        return self.done[layout]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, fake_data_root: Path) -> Any:
    cfg = with_data_dir(FakeConfig(seed=91, datasets=[
        DatasetSpec(files_per_dataset_file=3, rows_per_file=400, old_batch_rows=70, success_marker=True),
        DatasetSpec(files_per_dataset_file=2, rows_per_file=300)]), fake_data_root)
    fp = FakePlatform.run_in_thread(cfg)
    try:
        yield Exports(fp, tmp_path_factory.mktemp("readers"))
    finally:
        fp.stop()


@pytest.fixture(scope="module")
def spark() -> Any:
    """One local SparkSession for the module (it costs seconds to start)."""
    if shutil.which("java") is None:
        missing("Spark needs a Java runtime (.ci/run installs one)")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("aep-export-readers")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# ----------------------------------------------------------------------------- readers

# Each reader: (path, layout) -> {(dataset or None, batch or None): rows}; the columns it gives
# are what it infers from the folders (None where it gives none).


def _counts(frame: pd.DataFrame) -> Counter[tuple[Any, Any]]:
    keys = [frame[c].astype(str) if c in frame.columns else pd.Series([None] * len(frame), index=frame.index)
            for c in ("dataset", "batch")]
    return Counter(zip(*keys, strict=True))


def read_pyarrow(path: Path, layout: str) -> Counter[tuple[Any, Any]]:
    rows = pads.dataset(path, format="parquet").count_rows()  # no option: opens the folder
    table = pads.dataset(path, format="parquet", partitioning="hive" if layout == HIVE else None).to_table()
    assert table.num_rows == rows
    return _counts(table.to_pandas())


def read_pandas(path: Path, layout: str) -> Counter[tuple[Any, Any]]:
    return _counts(pd.read_parquet(path))


def read_polars(path: Path, layout: str) -> Counter[tuple[Any, Any]]:
    return _counts(pl.read_parquet(f"{path}/**/*.parquet", hive_partitioning=layout == HIVE).to_pandas())


def read_duckdb(path: Path, layout: str) -> Counter[tuple[Any, Any]]:
    with duckdb.connect() as con:
        frame = con.execute(f"SELECT * FROM read_parquet('{path}/**/*.parquet')").df()
    return _counts(frame)


READERS = {"pyarrow.dataset": read_pyarrow, "pandas": read_pandas, "polars": read_polars, "duckdb": read_duckdb}


def expected(export: Exported, dataset: str | None, columns: tuple[bool, bool]) -> Counter[tuple[Any, Any]]:
    """{(dataset, batch): rows} the reader must see, with None for a column it does not give."""
    want: Counter[tuple[Any, Any]] = Counter()
    for (d, b), rows in export.rows.items():
        if dataset is None or d == dataset:
            want[(d if columns[0] else None, b if columns[1] else None)] += rows
    return want


def _folders(export: Exported) -> list[tuple[str, Path, str | None]]:
    return [("root", export.out, None), ("dataset folder", export.out / dataset_folder(export.ds, export.layout), export.ds)]


# Which columns each reader infers from hive folders, given the root or a dataset folder: readers
# that parse the whole path (polars, DuckDB) see `dataset=` above a dataset folder too.
HIVE_COLUMNS = {"pyarrow.dataset": "below", "pandas": "below", "polars": "path", "duckdb": "path", "spark": "below"}


def _columns(reader: str, layout: str, scope: str) -> tuple[bool, bool]:
    if layout != HIVE:
        return False, False
    return (scope == "root" or HIVE_COLUMNS[reader] == "path"), True


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reader", list(READERS))
def test_reader_gets_exactly_the_exported_rows(exports: Exports, reader: str, layout: str) -> None:
    export = exports[layout]
    for scope, path, dataset in _folders(export):
        got = READERS[reader](path, layout)
        assert got == expected(export, dataset, _columns(reader, layout, scope)), (reader, layout, scope)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_spark_gets_exactly_the_exported_rows(exports: Exports, spark: Any, layout: str) -> None:
    export = exports[layout]
    for scope, path, dataset in _folders(export):
        reader = spark.read if layout == HIVE else spark.read.option("recursiveFileLookup", "true")
        frame = reader.parquet(str(path))
        columns = [c for c in ("dataset", "batch") if c in frame.columns]
        if columns:
            got = Counter({tuple(str(r[c]) if c in columns else None for c in ("dataset", "batch")): r["count"]
                           for r in frame.groupBy(*columns).count().collect()})
        else:
            got = Counter({(None, None): frame.count()})
        assert got == expected(export, dataset, _columns("spark", layout, scope)), (layout, scope)


def test_manifests_agree_with_the_fake(exports: Exports) -> None:
    """The rows the readers are held to are the ones the export vouches for, in each layout."""
    import json

    for layout in LAYOUTS:
        export, found = exports[layout], {}
        for manifest in export.out.rglob("_manifest.json"):
            body = json.loads(manifest.read_text())
            assert manifest.parent.name == (f"batch={body['batch_id']}" if layout == HIVE else body["batch_id"])
            found[(body["dataset_id"], body["batch_id"])] = body["records_found"]
        assert found == export.rows, layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nothing_beside_the_data_lacks_a_reader_skipped_name(exports: Exports, layout: str) -> None:
    """At the root too: every file that is not data is in a folder or has a name starting with `_`
    or `.` (the run report was `report.json`)."""
    out = exports[layout].out
    for path in out.rglob("*"):
        rel = path.relative_to(out)
        if path.is_file() and not path.name.endswith(".parquet"):
            assert any(part.startswith(("_", ".")) for part in rel.parts), rel


def test_hive_folders_are_key_value_and_latest_names_a_folder(exports: Exports) -> None:
    export = exports[HIVE]
    folders = sorted(p.relative_to(export.out).as_posix() for p in export.out.glob("*/*") if p.is_dir())
    assert folders == sorted(f"dataset={d}/batch={b}" for d, b in export.rows)
    for d in export.fp.dataset_ids:
        pointer = (export.out / f"dataset={d}" / "_LATEST").read_text().strip()
        assert pointer == f"batch={export.fp.latest_batch(d).data_id}"
    assert not list(exports[PLAIN].out.glob("dataset=*"))  # the default stays as it was
