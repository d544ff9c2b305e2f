"""The footer reader (thriftpy2 over a trimmed parquet.thrift) agrees with pyarrow and rejects damage."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import IntegrityError
from engine.integrity import parquet_rows


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pq")
    paths = []
    for i, (rows, group) in enumerate([(0, 10), (1, 10), (999, 100), (25_000, 4096)]):
        table = pa.table({
            "ecid": [f"id-{n}" for n in range(rows)],
            "score": pa.array([n % 101 for n in range(rows)], pa.int32()),
            "factors": pa.array([[{"code": "a", "importance": 0.5}]] * rows),
        })
        path = folder / f"f{i}.parquet"
        pq.write_table(table, path, row_group_size=group, compression="snappy", write_page_checksum=True)
        paths.append(path)
    return paths


def test_row_counts_match_pyarrow(parquet_files):
    for path in parquet_files:
        assert parquet_rows(path) == pq.read_metadata(path).num_rows
        assert parquet_rows(path, deep=True) == pq.read_metadata(path).num_rows


@pytest.mark.parametrize("damage", ["truncate_tail", "truncate_half", "footer_length", "magic_head", "garbage_footer"])
def test_damaged_files_are_rejected(parquet_files, tmp_path, damage):
    data = bytearray(parquet_files[3].read_bytes())
    footer_len = int.from_bytes(data[-8:-4], "little")
    if damage == "truncate_tail":
        data = data[:-3]
    elif damage == "truncate_half":
        data = data[: len(data) // 2]
    elif damage == "footer_length":
        data[-8:-4] = (len(data) * 2).to_bytes(4, "little")
    elif damage == "magic_head":
        data[:4] = b"{\"er"
    elif damage == "garbage_footer":
        start = len(data) - 8 - footer_len
        data[start:start + footer_len] = b"\xff" * footer_len
    path = tmp_path / "bad.parquet"
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        parquet_rows(path)


def test_deep_check_catches_a_corrupted_page(parquet_files, tmp_path):
    data = bytearray(parquet_files[3].read_bytes())
    data[200] ^= 0xFF  # inside the first data page; the footer stays intact
    path = tmp_path / "page.parquet"
    path.write_bytes(bytes(data))
    assert parquet_rows(path) == 25_000  # the footer alone cannot see it
    with pytest.raises(IntegrityError):
        parquet_rows(path, deep=True)
