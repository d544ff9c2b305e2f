"""Four regressions the suite missed (issue #17, "Tests"): each test fails when one is planted.

22 plausible bugs were planted one at a time; these four passed every test:
(a) a commit that renames a .part to its final name before its checks run;
(b) a batch finished without comparing its parquet rows with the Catalog's record count;
(c) a commit without the on-disk size checks;
(d) a journal entry reused for a file that changed size but kept its mtime.
Each test's docstring names the one it guards and how it was seen to fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import (
    assert_files_match,
    control_of,
    expected_path,
    part_of,
    read_manifest,
    read_report,
    run_export,
    settings_for,
    sha256_of,
)
from liar.regress import corrupt_every_body, overstate_records

from engine.fake import FakeConfig
from engine.layout import LATEST, SUCCESS
from engine.outcome import EXIT_FAILED, EXIT_OK
from engine.output.local import LocalTarget
from engine.retry import INTEGRITY_REFETCHES


def _key(e) -> str:
    """A file as the fake counts its bytes."""
    return f"{e.dataset_file_id}/{e.name}"


def _started(fp, e):
    """The same file as the started fake describes it (its size and digest are known from then)."""
    return next(f for f in fp.expected_files() if _key(f) == _key(e))


def _record_renames(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path something was renamed to during the test (the engine commits by renaming)."""
    targets: list[Path] = []
    for name in ("replace", "rename"):
        original = getattr(os, name)

        def recording(src, dst, *args, _original=original, **kw):
            targets.append(Path(os.fsdecode(dst)))
            return _original(src, dst, *args, **kw)

        monkeypatch.setattr(os, name, recording)
    return targets


async def test_a_file_failing_its_checks_on_every_fetch_never_appears_under_its_final_name(
        tmp_path: Path, make_fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (a): renaming the .part to its final name before its checks run. Every fetch of
    one file brings a damaged copy under the digest of the true bytes (only the digest check at
    commit can tell), so the file fails for good: at no moment may its final name exist. Seen to
    fail with the rename moved before the checks (the damaged copy stays under its final name)."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=3, rows=40, seed=71))
    victim = fp.expected_files()[0]
    served = corrupt_every_body(fp, victim.dataset_file_id, victim.name)
    renamed_to = _record_renames(monkeypatch)
    out = tmp_path / "out"
    async with fp:
        run = await run_export(settings_for(fp, out))
        victim = _started(fp, victim)
        others = [e for e in fp.expected_files() if _key(e) != _key(victim)]

    final = expected_path(out, victim)
    assert served == [victim.size] * (INTEGRITY_REFETCHES + 1), "the damaged copy was not what every fetch got"
    failed = [r for b in run.batches() for r in b.results if r.task.name == victim.name]
    assert [r.status.value for r in failed] == ["failed"] and "Repr-Digest" in (failed[0].error or "")
    assert final not in renamed_to, "the damaged copy was renamed to its final name"
    assert not final.exists() and not part_of(final).exists() and not control_of(final).exists()
    for e in others:  # the recorder saw the commits that did happen
        assert expected_path(out, e) in renamed_to and sha256_of(expected_path(out, e)) == e.sha256
    assert run.exit_code == EXIT_FAILED
    assert not (out / victim.dataset_id / victim.batch_id / SUCCESS).exists()


async def test_a_batch_whose_parquet_rows_disagree_with_the_catalog_is_not_marked_complete(
        tmp_path: Path, make_fake) -> None:
    """Regression (b): skipping the comparison of the parquet rows with the Catalog's record
    count. The Catalog counts one record more than the batch's files hold (every file is
    otherwise right): the batch fails, with no _SUCCESS and no _LATEST naming it. Seen to fail
    with the comparison skipped (exit 0, _SUCCESS)."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=3, rows=40, seed=72))
    told = overstate_records(fp, extra=1)
    out = tmp_path / "out"
    async with fp:
        run = await run_export(settings_for(fp, out))
        expected = fp.expected_files()

    dataset, batch = expected[0].dataset_id, expected[0].batch_id
    assert told, "the Catalog never stated the wrong count"
    assert_files_match(out, expected)  # the files are all there and right: only the count is not
    manifest = read_manifest(out / dataset / batch)
    rows = sum(e.rows for e in expected)
    assert (manifest["records_expected"], manifest["records_found"]) == (rows + 1, rows)
    assert manifest["status"] == "failed" and any("record count" in e for e in manifest["errors"])
    assert run.exit_code == EXIT_FAILED
    assert not (out / dataset / batch / SUCCESS).exists() and not (out / dataset / LATEST).exists()
    [reported] = [b for d in read_report(out)["datasets"] for b in d["batches"]]
    assert reported["status"] == "failed"


def _change_part_before_commit_once(monkeypatch: pytest.MonkeyPatch, final: Path, change: str) -> list[int]:
    """The first time the file whose final name is `final` is committed, its .part changes size
    on disk just before (as another writer would change it): "grown" appends the file's own bytes
    again (its end is still a valid parquet footer), "cut" drops its last 100 bytes. Returns the
    sizes it had when changed."""
    changed: list[int] = []
    original = LocalTarget._write_unwritten  # the commit's first step: a small file's bytes reach its .part there

    def write_unwritten(self) -> None:
        original(self)
        if self.final == final and not changed:
            size = os.fstat(self.fd).st_size
            if change == "grown":
                os.pwrite(self.fd, os.pread(self.fd, size, 0), size)
            else:
                os.ftruncate(self.fd, size - 100)
            changed.append(size)

    monkeypatch.setattr(LocalTarget, "_write_unwritten", write_unwritten)
    return changed


@pytest.mark.parametrize(("change", "verify_parquet"), [("grown", True), ("cut", False)])
async def test_a_part_whose_size_on_disk_changed_before_its_commit_is_fetched_again(
        tmp_path: Path, make_fake, monkeypatch: pytest.MonkeyPatch, change: str, verify_parquet: bool) -> None:
    """Regression (c): dropping the on-disk size checks at commit. The SHA-256 is streamed from the
    bytes received, so it still matches; a .part holding the file twice still ends with a valid
    footer and the right rows, and a cut one is not read as parquet with `verify_parquet = false`:
    only its size on disk tells. The file is refused and fetched again. Seen to fail with both
    size checks dropped (the changed bytes committed, exit 0)."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=3, rows=40, seed=73))
    victim = fp.expected_files()[1]
    out = tmp_path / "out"
    changed = _change_part_before_commit_once(monkeypatch, expected_path(out, victim), change)
    async with fp:
        run = await run_export(settings_for(fp, out, verify_parquet=verify_parquet))
        victim = _started(fp, victim)

    assert changed == [victim.size], "the .part never changed before its commit"
    assert run.exit_code == EXIT_OK
    assert_files_match(out, fp.expected_files())
    assert fp.stats.bytes_by_file[_key(victim)] == 2 * victim.size  # refused once, fetched again


@pytest.mark.parametrize("change", ["cut", "grown"])
async def test_a_final_file_that_changed_size_but_kept_its_mtime_is_fetched_again(
        tmp_path: Path, make_fake, change: str) -> None:
    """Regression (d): reusing a journal entry whose file changed size but kept its mtime. After a
    complete run, one exported file loses or gains 100 bytes and gets its mtime back (a copy tool
    that keeps times, a restore): the rerun must not trust the journal for it. Seen to fail with
    the journal comparing mtimes only (the changed file kept, exit 0, nothing fetched)."""
    fp = make_fake(FakeConfig.small(n_datasets=1, files=3, rows=40, seed=74))
    out = tmp_path / "out"
    async with fp:
        expected = fp.expected_files()
        assert (await run_export(settings_for(fp, out))).exit_code == EXIT_OK
        victim = expected[1]
        path = expected_path(out, victim)
        before = path.stat()
        data = path.read_bytes()
        path.write_bytes(data[:-100] if change == "cut" else data + data[-100:])
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size != before.st_size
        fp.reset_stats()

        run = await run_export(settings_for(fp, out))

    assert run.exit_code == EXIT_OK
    assert dict(fp.stats.bytes_by_file) == {_key(victim): victim.size}, "the changed file was not fetched again"
    assert_files_match(out, expected)
