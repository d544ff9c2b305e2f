"""Case 1 of issue #17: a file regenerated on the server between a killed run and its rerun.

The first run is killed (SIGKILL, as in tests/test_kill_resume.py) while the file is part-way;
the server then serves another version of it (same name and size, other bytes: a valid parquet
file); the rerun must end with the new file byte for byte, never a mix of both versions, and
`verify` and `verify --deep` then agree on it. With a validator the rerun asks with If-Range (or
sees the validator change on a 206) and starts over; without one, the few KiB of held bytes it
asks again do not match the server's, and it starts over.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import expected_path, read_report, run_cli, toml_config, with_data_dir
from liar.files import Regenerated, same_size_variant

from engine.fake import DatasetSpec, FakeConfig, FakePlatform
from engine.fake.server import ThreadedFakePlatform
from engine.layout import control_path, part_path
from engine.ranges import RangeSet
from engine.validators import RESUME_WINDOW, resume_windows

RATE = 400e3  # bytes/s of the first run: the kill lands mid-file

CASES = {
    "etag+last-modified": dict(validators=("ETag", "Last-Modified")),
    "etag, If-Range dropped on the way": dict(validators=("ETag",), honour_if_range=False),
    "last-modified only": dict(validators=("Last-Modified",)),
    "no validator": dict(validators=()),
}


@pytest.fixture(params=list(CASES))
def regenerated(request, fake_data_root: Path):
    cfg = FakeConfig(seed=71, datasets=[DatasetSpec(files_per_dataset_file=1, file_mb=2, batches=1, failed_batch=False,
                                                    processing_batch=False)])
    platform = FakePlatform(with_data_dir(cfg, fake_data_root))
    liar = Regenerated(platform, platform.expected_files()[0].name, rate=RATE, **CASES[request.param])
    fp = ThreadedFakePlatform(platform)
    victim = fp.expected_files()[0]  # generated (and sized) once started
    old = victim.source_path.read_bytes()
    liar.versions = [old, same_size_variant(old)]
    yield fp, liar, victim, request.param
    fp.stop()


def test_a_file_regenerated_after_a_kill_ends_as_the_new_file_never_a_mix(tmp_path: Path, regenerated) -> None:
    fp, liar, victim, case = regenerated
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(toml_config(fp, out))
    cmd = [sys.executable, "-m", "engine", "run", "--config", str(config), "--json-logs", "--no-progress"]
    final = expected_path(out, victim)
    old, new = liar.versions

    kill_at = random.Random(case).uniform(0.3, 0.6) * victim.size
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # the kill lands once the server sent that much AND the run keeps some of it on disk (its control
    # file is rewritten at most twice a second: bytes sent are not yet bytes held)
    while proc.poll() is None and time.monotonic() < deadline and (liar.sent < kill_at or not _held(final).total):
        time.sleep(0.01)
    assert proc.poll() is None and kill_at <= liar.sent < victim.size, "the kill would not land mid-file"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    held = _held(final)
    assert not final.exists() and 0 < held.total < victim.size, f"no part-way .part at the kill: {held}"
    validators_then = liar.headers()

    liar.regenerate()
    liar.rate = None
    asked_before = len(liar.served)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]

    got = final.read_bytes()
    assert got == new, (f"not the new file: {len(got)} bytes, the first {_common_prefix(got, old)} as the old one, "
                        f"the last {_common_suffix(got, new)} as the new one")
    assert not list(out.rglob("*.part*"))
    assert read_report(out)["totals"]["restarts"] >= 1, "the file was never started over"
    rerun_asked = liar.served[asked_before:]
    if validators_then:  # the held bytes were identified: the rerun asked with If-Range
        if_range = validators_then.get("ETag") or validators_then["Last-Modified"]
        assert rerun_asked[0].if_range == if_range and rerun_asked[0].range, rerun_asked
        assert rerun_asked[0].status == (200 if CASES[case].get("honour_if_range", True) else 206)
    if not validators_then or "ETag" not in validators_then:  # and confirmed them by bytes asked again
        windows = resume_windows(held, victim.size)
        assert windows and any(a.range and a.range.startswith(f"bytes={windows[0][0]}-") for a in rerun_asked), rerun_asked

    for deep in ([], ["--deep"]):
        verify = run_cli("verify", *deep, str(out), cwd=tmp_path)
        assert verify.returncode == 0, verify.stdout + verify.stderr


def _held(final: Path) -> RangeSet:
    """What the killed run left: its control file's ranges, else the .part as a prefix (nothing
    while neither exists: a live run may be creating or removing them as this reads)."""
    try:
        return RangeSet(tuple(r) for r in json.loads(control_path(final).read_text())["done"])
    except FileNotFoundError:
        pass
    try:
        return RangeSet([(0, part_path(final).stat().st_size)])
    except FileNotFoundError:
        return RangeSet()


def _common_prefix(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _common_suffix(a: bytes, b: bytes) -> int:
    return _common_prefix(a[::-1], b[::-1])


@pytest.fixture(scope="module", params=["pyarrow", "duckdb"])
def two_versions(request, tmp_path_factory) -> tuple[bytes, bytes]:
    """A parquet file as two writers make it (several row groups, dictionaries, nested and
    nullable columns), and another version of it of the same size."""
    import duckdb

    path = tmp_path_factory.mktemp("versions") / "old.parquet"
    query = ("SELECT i AS n, 'ecid-' || (i * 7919 % 100003) AS ecid, (i % 101) / 100.0 AS score, "
             "CASE WHEN i % 7 = 0 THEN NULL ELSE [i % 3, i % 5] END AS factors FROM range(40000) t(i)")
    if request.param == "duckdb":
        duckdb.connect().execute(f"COPY ({query}) TO '{path}' (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 10000)")
    else:
        import pyarrow.parquet as pq

        pq.write_table(duckdb.connect().execute(query).arrow().read_all(), path, compression="snappy", row_group_size=7000)
    old = path.read_bytes()
    return old, same_size_variant(old)


def test_a_file_joined_from_two_versions_fails_the_page_check(two_versions, tmp_path: Path) -> None:
    """What a resume across a change would commit without the window: the footer of one version
    over pages of the other. The footer check alone passes it; every page the footer points at
    must be there."""
    from engine.checks.integrity import parquet_rows
    from engine.errors import IntegrityError

    old, new = two_versions
    path = tmp_path / "f.parquet"
    for whole in (old, new):
        path.write_bytes(whole)
        assert parquet_rows(path) == 40000
    cuts = sorted(random.Random(3).sample(range(64, len(old) - 64), 12))
    for cut in cuts:
        path.write_bytes(old[:cut] + new[cut:])
        with pytest.raises(IntegrityError):
            parquet_rows(path)


@pytest.mark.parametrize("layout", ["prefix", "prefix and tail"])
@pytest.mark.parametrize("server_file", ["unchanged", "regenerated"])
async def test_a_control_file_without_validators_still_resumes_and_its_bytes_are_confirmed(
        server_file: str, layout: str, tmp_path: Path, make_fake) -> None:
    """A .part.ctl as this version wrote it before validators (no etag): its ranges are resumed,
    and confirmed by the windows asked again, even when the server now sends an ETag. The run that
    ends the file is confirmed alone, before anything is written in front of it."""
    from conftest import run_export, settings_for

    from engine.outcome import EXIT_OK
    from engine.output.control import BOOT_ID

    fp = make_fake(FakeConfig.small(n_datasets=1, files=1, rows=40000, seed=72))
    liar = Regenerated(fp, fp.expected_files()[0].name, validators=("ETag",))
    async with fp:
        victim = fp.expected_files()[0]
        old = victim.source_path.read_bytes()
        liar.versions = [old, same_size_variant(old)]
        size = len(old)
        held = RangeSet([(0, size // 3)] + ([(2 * size // 3, size)] if layout == "prefix and tail" else []))
        final = expected_path(tmp_path / "out", victim)
        part_path(final).parent.mkdir(parents=True)  # the hidden folder beside the final name
        part_path(final).write_bytes(old[:held.last_end] if layout == "prefix" else old)  # the gap's bytes are not held
        control_path(final).write_text(json.dumps({"v": 1, "size": size, "done": held.as_list(), "synced": [], "boot": BOOT_ID}))
        windows = resume_windows(held, size)
        assert len(windows) == len(held) and all(end - start == RESUME_WINDOW for start, end in windows)
        if server_file == "regenerated":
            liar.regenerate()

        run = await run_export(settings_for(fp, tmp_path / "out", concurrency=1))  # one stream: exact byte counts

        assert run.exit_code == EXIT_OK
        assert final.read_bytes() == liar.versions[liar.version]
        assert liar.served[0].if_range is None  # no validator recorded: nothing to ask If-Range with
        asked = [int(s.range.removeprefix("bytes=").split("-")[0]) for s in liar.served if s.range]
        assert asked[0] in {start for start, _ in windows}, liar.served  # a window first, before any byte is written
        fetched = run.totals["bytes_fetched"]
        if server_file == "unchanged":  # resumed: the missing bytes and the windows, nothing more
            assert {start for start, _ in windows} <= set(asked), liar.served
            assert run.totals["restarts"] == 0 and fetched == size - held.total + len(windows) * RESUME_WINDOW
        else:  # the first window differs: started over once
            assert run.totals["restarts"] == 1 and fetched == RESUME_WINDOW + size, liar.served


def test_validators_from_the_server_are_untrusted_text() -> None:
    """What is sent back in If-Range: a strong ETag, else the date; never a weak ETag, never a
    value that is not a plain header value; a change of either is a change of the file."""
    from engine.validators import Validator, changed

    assert Validator.of({"ETag": '"abc"', "Last-Modified": "Wed, 01 Jan 2026 00:00:00 GMT"}).if_range() == '"abc"'
    assert Validator.of({"ETag": 'W/"abc"', "Last-Modified": "Wed, 01 Jan 2026 00:00:00 GMT"}).if_range() == (
        "Wed, 01 Jan 2026 00:00:00 GMT")
    assert Validator.of({"ETag": 'W/"abc"'}).if_range() is None
    assert Validator.of({"ETag": '"a"\r\nX-Injected: 1'}) is None
    assert Validator.of({"ETag": '"' + "a" * 300 + '"'}) is None
    assert Validator.from_values(["not", "text"], 7) is None
    strong = Validator('"abc"', "Wed, 01 Jan 2026 00:00:00 GMT")
    assert changed(strong, Validator('"abc"', "Wed, 01 Jan 2026 00:00:00 GMT")) is None
    assert changed(strong, Validator('"abd"')) and changed(strong, None)  # no ETag now: nothing vouches for the bytes
    assert changed(Validator('W/"abc"'), Validator('"abc"')) is None  # the weak comparison
    assert changed(Validator('W/"abc"'), None) is None  # the windows confirm those bytes
    assert changed(Validator(None, "Wed, 01 Jan 2026 00:00:00 GMT"), Validator(None, "Thu, 02 Jan 2026 00:00:00 GMT"))
