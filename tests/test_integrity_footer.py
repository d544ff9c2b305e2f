"""The footer reader (engine/footer.py, Thrift compact protocol) agrees with pyarrow and rejects damage."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.checks.integrity import parquet_rows
from engine.errors import IntegrityError


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


@pytest.fixture(scope="module")
def varied_files(tmp_path_factory) -> list[Path]:
    """Footers with every wire type the decoder must skip: maps, bools, doubles, binary statistics,
    key-value metadata, dictionaries, nested lists/structs, many row groups, the page index."""
    import random

    folder = tmp_path_factory.mktemp("pq-varied")
    rng = random.Random(5)
    rows = 3000
    table = pa.table({
        "flag": pa.array([rng.random() < 0.5 for _ in range(rows)]),
        "score": pa.array([rng.random() for _ in range(rows)], pa.float64()),
        "small": pa.array([rng.randrange(-100, 100) for _ in range(rows)], pa.int8()),
        "big": pa.array([rng.randrange(-2**62, 2**62) for _ in range(rows)], pa.int64()),
        "name": pa.array([rng.choice(["a", "bb", "ccc", None]) for _ in range(rows)]),
        "blob": pa.array([bytes([rng.randrange(256)]) * 40 for _ in range(rows)], pa.binary()),
        "tags": pa.array([{"k" + str(i % 3): i for i in range(n % 4)} for n in range(rows)], pa.map_(pa.string(), pa.int32())),
        "nested": pa.array([[{"code": "x", "w": [1.0, 2.0]}] * (n % 3) for n in range(rows)]),
    }).replace_schema_metadata({"origin": "aep-export test", "big": "x" * 5000})
    variants = [
        dict(row_group_size=97, compression="snappy", write_statistics=True),
        dict(row_group_size=1000, compression="none", use_dictionary=False, write_statistics=False),
        dict(row_group_size=500, compression="zstd", write_page_index=True, write_page_checksum=True),
        dict(row_group_size=rows, compression="gzip", data_page_version="2.0"),
    ]
    paths = []
    for i, kw in enumerate(variants):
        path = folder / f"v{i}.parquet"
        pq.write_table(table, path, **kw)
        paths.append(path)
    return paths


def test_varied_footers_match_pyarrow(varied_files):
    for path in varied_files:
        meta = pq.read_metadata(path)
        assert meta.num_row_groups > 0
        assert parquet_rows(path) == meta.num_rows == 3000


def test_random_footer_damage_is_an_integrity_error_never_a_crash(varied_files, tmp_path):
    """Seeded byte flips and truncations inside the footer: rejected or (if still well formed)
    the right count; never another exception type, never a hang."""
    import random

    rng = random.Random(11)
    original = varied_files[0].read_bytes()
    footer_len = int.from_bytes(original[-8:-4], "little")
    start = len(original) - 8 - footer_len
    rejected = 0
    for trial in range(120):
        data = bytearray(original)
        for _ in range(rng.randrange(1, 4)):
            data[start + rng.randrange(footer_len)] = rng.randrange(256)
        path = tmp_path / f"d{trial}.parquet"
        path.write_bytes(bytes(data))
        try:
            assert parquet_rows(path) == 3000  # a flip in a skipped value (e.g. statistics) is harmless
        except IntegrityError:
            rejected += 1
    assert rejected > 12  # many flips hit structure or counts


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
