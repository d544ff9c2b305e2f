"""Object storage in-process: the crash windows a kill rarely hits, abandoned uploads, the copy of
objects over 5 GiB, and the pieces (part sizes, keys, the spool's budget). Verify and inventory
on a prefix: tests/test_stores.py."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import run_export
from objectstores import PART, object_name, one_batch_of, store_settings
from s3server import MotoServer

from engine.config import ExportSettings, Settings, StoreURL
from engine.fake import DatasetSpec, FakeConfig, Faults
from engine.output import bucket as bucket_module
from engine.output.objectstore import MAX_PARTS, part_size_for, staging_key, upload_owner
from engine.output.spool import Spool
from engine.output.upload import StoreTarget


@pytest.fixture
def s3(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> tuple[MotoServer, str]:
    """The standard AWS_* environment pointing at the server, and a fresh bucket."""
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    name = f"aep-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(name)
    return moto, name


def assert_exported(moto: MotoServer, bucket: str, prefix: str, expected: list) -> None:
    for e in expected:
        data = moto.read(bucket, object_name(prefix, e))
        assert hashlib.sha256(data).hexdigest() == e.sha256
    assert moto.uploads(bucket) == []
    assert not [k for k in moto.keys(bucket) if "/.aep-export/" in k]


async def test_an_upload_completed_but_never_copied_is_checked_and_copied_without_fetching(s3, make_fake) -> None:
    """The window between completing the multipart upload and the copy to the final key."""
    moto, bucket = s3
    async with make_fake(one_batch_of(71)) as fp:
        expected = fp.expected_files()
        run = await run_export(store_settings(fp, f"s3://{bucket}/p"))
        assert run.exit_code == 0, run.errors
        victim = expected[0]
        rel = object_name("p", victim).removeprefix("p/")
        data = moto.read(bucket, object_name("p", victim))
        moto.client.delete_object(Bucket=bucket, Key=object_name("p", victim))  # the copy never happened
        moto.client.put_object(Bucket=bucket, Key="p/" + staging_key(rel, victim.size, PART), Body=data)

        fp.reset_stats()
        run = await run_export(store_settings(fp, f"s3://{bucket}/p"))
        assert run.exit_code == 0, run.errors
        assert fp.stats.bytes_sent == 0, "the staged bytes were fetched again"
        assert run.totals["files_downloaded"] == 1 and run.totals["files_reused"] == len(expected) - 1
        assert_exported(moto, bucket, "p", expected)
        head = moto.client.head_object(Bucket=bucket, Key=object_name("p", victim))
        assert head["Metadata"]["aep-export-sha256"] == victim.sha256


async def test_leftovers_of_other_versions_and_of_verified_files_are_cleaned_up(s3, make_fake) -> None:
    moto, bucket = s3
    async with make_fake(one_batch_of(72)) as fp:
        expected = fp.expected_files()
        assert (await run_export(store_settings(fp, f"s3://{bucket}/p"))).exit_code == 0
        done, other = (object_name("p", e).removeprefix("p/") for e in expected)
        stray = [
            staging_key(done, expected[0].size, PART),  # a verified file's upload (a kill after the copy)
            staging_key(other, expected[1].size + 1, PART),  # a version of the file with another size
            staging_key(other, expected[1].size, 6 << 20),  # another part size (the setting changed)
        ]
        for key in stray:
            moto.client.create_multipart_upload(Bucket=bucket, Key="p/" + key)
        moto.client.put_object(Bucket=bucket, Key="p/" + staging_key(done, 99, PART), Body=b"old")
        moto.client.delete_object(Bucket=bucket, Key=object_name("p", expected[1]))  # to be fetched again

        fp.reset_stats()
        run = await run_export(store_settings(fp, f"s3://{bucket}/p"))
        assert run.exit_code == 0, run.errors
        assert fp.stats.bytes_by_file.get(f"{expected[0].dataset_file_id}/{expected[0].name}", 0) == 0
        assert_exported(moto, bucket, "p", expected)


async def test_objects_over_the_single_copy_limit_are_copied_part_by_part(s3, make_fake, monkeypatch) -> None:
    moto, bucket = s3
    monkeypatch.setattr(bucket_module, "COPY_LIMIT", 6 << 20)  # 5 GiB in S3: small files take the same path here
    monkeypatch.setattr(bucket_module, "COPY_PART", PART)
    async with make_fake(one_batch_of(73, files=1)) as fp:
        expected = fp.expected_files()
        assert expected[0].size > 6 << 20
        run = await run_export(store_settings(fp, f"s3://{bucket}/p"))
        assert run.exit_code == 0, run.errors
        assert_exported(moto, bucket, "p", expected)
        head = moto.client.head_object(Bucket=bucket, Key=object_name("p", expected[0]))
        assert head["Metadata"]["aep-export-sha256"] == expected[0].sha256
        assert head["ETag"].strip('"').endswith("-2"), "not copied as a two-part upload"


async def test_a_small_spool_drops_uploaded_parts_and_the_hash_is_finished_from_the_bucket(s3, make_fake, tmp_path: Path,
                                                                                         monkeypatch) -> None:
    """Parts of one file in several streams arrive out of order; under a 16 MiB budget an uploaded
    part still waiting for the in-order hash is dropped, and the commit reads it back instead."""
    moto, bucket = s3
    read_back: list[tuple[int, int]] = []
    original = StoreTarget._read_back

    def spy(self: StoreTarget, start: int, end: int, hasher: Any) -> int:
        read_back.append((start, end))
        return original(self, start, end, hasher)

    monkeypatch.setattr(StoreTarget, "_read_back", spy)
    async with make_fake(FakeConfig(seed=74, faults=Faults(bandwidth_bps=8e6), datasets=[DatasetSpec(
            batches=1, failed_batch=False, processing_batch=False, files_per_dataset_file=1, file_mb=30)])) as fp:
        run = await run_export(store_settings(fp, f"s3://{bucket}/p", spool_limit=16 << 20, spool_dir=str(tmp_path)))
        assert run.exit_code == 0, run.errors
        assert run.totals["split_files"] == 1 and run.totals["restarts"] == 0, run.totals
        assert_exported(moto, bucket, "p", fp.expected_files())
        assert read_back, "no uploaded part was dropped before the hash reached it"
        assert list(tmp_path.iterdir()) == []


# verify and inventory on a prefix: tests/test_stores.py (both stores, one test)


# ----------------------------------------------------------------------------- pieces


def test_part_size_stays_within_ten_thousand_parts() -> None:
    assert part_size_for(None, 8 << 20) == 8 << 20
    assert part_size_for(78 << 30, 8 << 20) == 8 << 20  # 9,984 parts
    big = part_size_for(200 << 30, 8 << 20)
    assert big % (1 << 20) == 0 and -(-(200 << 30) // big) <= MAX_PARTS and big > 8 << 20


def test_staging_keys_name_their_file_and_nothing_else() -> None:
    key = staging_key("ds/b/dsf/part-0.parquet", 123, PART)
    assert key == f".aep-export/uploads/ds/b/dsf/part-0.parquet/123-{PART}"
    assert upload_owner(key) == "ds/b/dsf/part-0.parquet"
    assert upload_owner(staging_key("ds/b/dsf/x", None, PART)) == "ds/b/dsf/x"
    assert upload_owner(".aep-export/uploads/ds/b/dsf/x/notes.txt") is None
    assert upload_owner("ds/b/dsf/x/1-2") is None


def test_out_dir_accepts_bucket_urls_and_keeps_folders_as_paths() -> None:
    url = ExportSettings(out_dir="S3://bucket//a/b/").out_dir
    assert isinstance(url, StoreURL) and (url.bucket, url.prefix, str(url)) == ("bucket", "a/b", "s3://bucket/a/b")
    assert str(url / "_report.json") == "s3://bucket/a/b/_report.json"
    assert ExportSettings(out_dir="s3://bucket").out_dir.prefix == ""
    assert ExportSettings(out_dir="exports").out_dir == Path("exports")
    for bad in ("gs://b/p", "abfs://c/p", "s3:///p"):  # az:// is accepted since issue #22; abfs:// must name its account
        with pytest.raises(ValueError):
            ExportSettings(out_dir=bad)
    with pytest.raises(ValueError):
        Settings.model_validate({"platform": {"org_id": "o"}, "auth": {"client_id": "c", "access_token": "t"},
                                 "datasets": [{"id": "d"}], "store": {"part_size": 1 << 20}})  # below S3's 5 MiB


async def test_spool_drops_kept_parts_then_waits_for_uploads_but_never_for_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=10)
    disk = anyio.CapacityLimiter(2)
    kept = spool.new_piece(0, 0, 6)
    kept.stored = 6
    spool.used = 6
    dropped = []
    spool.evictable[kept] = dropped.append
    await spool.reserve(8, disk)  # over the limit: the kept part goes first
    assert dropped == [kept] and kept.fd < 0 and not kept.path.exists() and spool.used == 8

    spool.uploads_pending = 1
    waited = []

    async def writer() -> None:
        await spool.reserve(5, disk)
        waited.append(spool.used)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.sleep(0.05)
        assert not waited, "a writer went over the limit while an upload could free space"
        spool.uploads_pending = 0
        spool.used -= 8  # the upload ended and its part left the disk
        spool.notify()
    assert waited == [5]

    await spool.reserve(100, disk)  # nothing to drop, nothing uploading: over the limit rather than stuck
    assert spool.used == 105
    spool.close()
    assert not spool.dir.exists()


@pytest.mark.parametrize("held", [[1], [2], [1, 3]], ids=["first", "middle", "first-and-last"])
async def test_parts_left_by_a_dead_pod_are_kept_and_the_hash_finished_from_the_bucket(s3, make_fake, held) -> None:
    """Parts uploaded by an earlier pod are not fetched again; the SHA-256 it could not keep is
    completed by reading them back (checked end to end by the store's SHA-256 of the copy)."""
    moto, bucket = s3
    async with make_fake(FakeConfig(seed=76, datasets=[DatasetSpec(batches=1, failed_batch=False, processing_batch=False,
                                                                    files_per_dataset_file=1, file_mb=13)])) as fp:
        (e,) = fp.expected_files()
        assert (await run_export(store_settings(fp, f"s3://{bucket}/p"))).exit_code == 0
        data = moto.read(bucket, object_name("p", e))
        moto.client.delete_object(Bucket=bucket, Key=object_name("p", e))
        key = "p/" + staging_key(object_name("p", e).removeprefix("p/"), e.size, PART)
        upload = moto.client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
        for n in held:
            body = data[(n - 1) * PART:n * PART]
            moto.client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=n, Body=body,
                                    ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode())

        fp.reset_stats()
        run = await run_export(store_settings(fp, f"s3://{bucket}/p"))
        assert run.exit_code == 0, run.errors
        kept = sum(len(data[(n - 1) * PART:n * PART]) for n in held)
        assert run.totals["bytes_fetched"] == e.size - kept and run.totals["restarts"] == 0, run.totals
        assert_exported(moto, bucket, "p", [e])


async def test_flushes_cut_at_part_boundaries_land_in_the_right_parts(tmp_path: Path) -> None:
    """Chunks that end exactly on a part boundary, span several parts, or come out of order."""
    from engine.output.upload import Resumed, Uplink
    from engine.pieces import Download

    part, size = 8, 30
    data = bytes(range(size))
    spool = Spool(tmp_path, limit=1 << 20)
    async with anyio.create_task_group() as tg:
        link = Uplink(bucket=None, spool=spool, tg=tg, slots=anyio.Semaphore(1), disk=anyio.CapacityLimiter(2))  # type: ignore[arg-type]
        target = StoreTarget(link, "f", "staging", size, part, Resumed())
        target._advance = _no_uploads  # type: ignore[method-assign]
        download = Download(size, align=part)
        for offset, cuts in ((0, [8, 4]), (20, [2, 8]), (12, [5, 3]), (28, [2]), (30, [])):
            chunks, pos = [], offset
            for n in cuts:
                chunks.append(data[pos:pos + n])
                pos += n
            await target.flush(offset, chunks, download)
        tg.cancel_scope.cancel()
    assert sorted(target.pieces) == [0, 1, 2, 3]
    for index, piece in target.pieces.items():
        assert (piece.start, piece.end) == (index * part, min(size, (index + 1) * part)) and piece.complete
        assert piece.read_at(piece.start, piece.length) == data[piece.start:piece.end]
        assert piece.sha256() == hashlib.sha256(data[piece.start:piece.end]).digest()
    assert download.hashed == size and download.digest() == hashlib.sha256(data).hexdigest()
    spool.close()


async def _no_uploads() -> None:
    pass
