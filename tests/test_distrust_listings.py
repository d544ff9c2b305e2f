"""Listings taken on trust (issue #17, case 4, and the listing half of case 2).

A Data Access listing is untrusted input: paging that comes back to a page already read, next
links that go round under new URLs, an entry listed twice, or a listing that holds less than the
Catalog's metrics count fail that batch alone, with a message that says what was wrong and no
`_SUCCESS`; the run's other datasets are exported; exit 1. The platform that lies: tests/liar/listings.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import assert_files_match, expected_path, read_report, run_export, settings_for
from liar import listings

from engine.fake import DatasetSpec, FakeConfig
from engine.layout import SUCCESS
from engine.model import BatchRef, FileTask
from engine.outcome import EXIT_FAILED
from engine.plan import make_plan
from engine.platform.dataaccess import Listing, UntrustedListing, check_against_catalog
from engine.platform.discovery import Discovery

PAGE = 10


def _two_datasets(first: DatasetSpec, seed: int) -> FakeConfig:
    """The dataset a test lies about, and a second one that must still be exported."""
    return FakeConfig(seed=seed, datasets=[first, DatasetSpec(files_per_dataset_file=3, rows_per_file=20)])


def _paged(seed: int) -> FakeConfig:
    return _two_datasets(DatasetSpec(files_per_dataset_file=3 * PAGE, rows_per_file=20, page_size=PAGE), seed)


def _batch_report(out: Path, dataset_id: str) -> dict[str, Any]:
    (batch,) = next(d for d in read_report(out)["datasets"] if d["dataset_id"] == dataset_id)["batches"]
    return batch


def _assert_failed_alone(fp: Any, out: Path, run: Any, lied_about: str, *phrases: str) -> dict[str, Any]:
    """The lied-about batch failed, said why first, has no _SUCCESS; the other dataset is complete."""
    assert run.exit_code == EXIT_FAILED, read_report(out)
    batch = _batch_report(out, lied_about)
    assert batch["status"] == "failed", batch
    assert batch["errors"][0].startswith("listing not trusted: "), batch["errors"]
    for phrase in phrases:
        assert phrase in batch["errors"][0], batch["errors"][0]
    assert not (out / lied_about / batch["batch_id"] / SUCCESS).exists()
    others = [e for e in fp.expected_files() if e.dataset_id != lied_about]
    assert_files_match(out, others)
    assert all((out / e.dataset_id / e.batch_id / SUCCESS).is_file() for e in others)
    return batch


# -- against the lying platform --------------------------------------------------------------


async def test_next_link_back_to_page_one_fails_the_batch_and_fetches_none_of_it(tmp_path: Path, make_fake) -> None:
    # Before: pages 1, 2, 1 were listed (page 3 never), the repeated names fetched twice and the
    # row check satisfied by the repeats: exit 0 and _SUCCESS with 10 of 30 files missing.
    fp = make_fake(_paged(seed=1701))
    lied_about = fp.dataset_ids[0]
    files = [e for e in fp.expected_files() if e.dataset_id == lied_about]
    served = listings.back_to_first_page(fp, files[0].dataset_file_id)
    async with fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))

    assert len(served) == 3, served  # page 1, page 2, and page 1 again under the URL page 2 gave
    _assert_failed_alone(fp, out, run, lied_about, f"dataSetFile {files[0].dataset_file_id}", "page 3 lists only entries of page 1 again")
    # Nothing of a listing that did not hold up is fetched: no file can stand for the batch.
    assert not any(expected_path(out, e).exists() for e in files)


async def test_next_links_cycling_under_new_urls_end_after_one_lap(tmp_path: Path, make_fake) -> None:
    # Before: every lap's URLs are new, so the listing was followed to its (here 5th) end, 180 file
    # tasks for 30 files; against a server that never ends it, on towards 100,000 pages.
    fp = make_fake(_paged(seed=1702))
    lied_about = fp.dataset_ids[0]
    files = [e for e in fp.expected_files() if e.dataset_id == lied_about]
    served = listings.cycling_pages(fp, files[0].dataset_file_id, laps=5)
    async with fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))

    real_pages = 3
    assert real_pages < len(served) < 3 * real_pages, served  # the lap began, and was cut at its first page
    assert "lap=1" in served[-1]
    _assert_failed_alone(fp, out, run, lied_about, "page 4 lists only entries of page 1 again")
    assert run.totals["files_failed"] == 0 and run.totals["files"] == 3  # the other dataset's only


async def test_a_name_listed_twice_with_different_bytes_fails_the_batch(tmp_path: Path, make_fake) -> None:
    # Before: both entries wrote one .part, a mix of the two under the final name (2 of 3 tries),
    # exit 0 and _SUCCESS.
    fp = make_fake(_two_datasets(DatasetSpec(files_per_dataset_file=3, rows_per_file=400), seed=1703))
    lied_about = fp.dataset_ids[0]
    files = [e for e in fp.expected_files() if e.dataset_id == lied_about]
    victim, other = files[0], files[1]
    served = listings.name_twice(fp, victim.dataset_file_id, victim.name, other.name)
    async with fp:
        assert victim.source_path.read_bytes() != other.source_path.read_bytes()
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))

    assert served, "the listing with the name twice was never served"
    _assert_failed_alone(fp, out, run, lied_about, f"the name {victim.name!r} twice (on page 1)", "cannot be known")
    assert not expected_path(out, victim).exists()  # neither of the two contents is under that name


async def test_an_empty_listing_for_a_batch_with_records_fails_it(tmp_path: Path, make_fake) -> None:
    # Before: nothing listed, nothing to check: exit 0 and _SUCCESS over an empty batch folder.
    fp = make_fake(_two_datasets(DatasetSpec(files_per_dataset_file=3, rows_per_file=20), seed=1704))
    lied_about = fp.dataset_ids[0]
    batch_id = next(e.batch_id for e in fp.expected_files() if e.dataset_id == lied_about)
    served = listings.empty_batch(fp, batch_id)
    async with fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out))
    records = sum(e.rows for e in fp.expected_files() if e.dataset_id == lied_about)

    assert served and records > 0
    batch = _assert_failed_alone(fp, out, run, lied_about, f"holds no data file, but the Catalog counts {records} records")
    assert batch["files"] == 0


async def test_a_listing_short_of_the_catalog_file_count_fails_without_the_row_check(tmp_path: Path, make_fake) -> None:
    # With verify_parquet = false no row count is known, so only the Catalog's outputFileCount can
    # tell that a file is missing. Before: exit 0 and _SUCCESS with 2 of 3 files.
    fp = make_fake(_two_datasets(DatasetSpec(files_per_dataset_file=3, rows_per_file=20), seed=1705))
    lied_about = fp.dataset_ids[0]
    files = [e for e in fp.expected_files() if e.dataset_id == lied_about]
    left_out = listings.short_listing(fp, files[0].dataset_file_id)
    async with fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, verify_parquet=False))

    assert left_out
    _assert_failed_alone(fp, out, run, lied_about, "holds 2 files, but the Catalog counts 3 (metrics.outputFileCount)")


async def test_check_reports_a_listing_it_cannot_trust(tmp_path: Path, make_fake) -> None:
    fp = make_fake(_two_datasets(DatasetSpec(files_per_dataset_file=3, rows_per_file=20), seed=1704))
    lied_about = fp.dataset_ids[0]
    batch_id = next(e.batch_id for e in fp.expected_files() if e.dataset_id == lied_about)
    listings.empty_batch(fp, batch_id)
    async with fp:
        plans = await make_plan(settings_for(fp, tmp_path / "out"))

    (planned,) = plans[0].batches
    assert planned.error is not None and planned.error.startswith("listing not trusted: ") and not plans[0].ok
    assert plans[1].ok


# -- the paging guard, unit by unit -------------------------------------------------------------


class Pages:
    """Canned listing pages by URL (relative to the gateway, as Discovery passes them)."""

    GATEWAY = "https://platform.example.test"

    def __init__(self, pages: dict[str, Any] | None = None, *, endless: bool = False):
        self.pages = pages or {}
        self.endless = endless  # /p?n=N lists name-N and links to /p?n=N+1, for ever
        self.calls: list[str] = []

    def url(self, path_or_url: str) -> Any:
        from yarl import URL

        url = URL(path_or_url)
        return url if url.is_absolute() else URL(self.GATEWAY).join(url)

    async def get_json(self, url: str, params: Any = None) -> Any:
        self.calls.append(url)
        assert len(self.calls) <= 100, "paging does not stop"
        if self.endless:
            n = int(url.rsplit("=", 1)[1]) if "=" in url else 0
            return {"data": [{"name": f"name-{n}"}], "_links": {"next": {"href": f"/p?n={n + 1}"}}}
        return self.pages[url]


async def _items(client: Pages, start: str, max_listing_pages: int | None = None) -> list[dict]:
    discovery = Discovery(client)  # type: ignore[arg-type]
    if max_listing_pages is not None:
        discovery.data_access.max_listing_pages = max_listing_pages  # export.max_listing_pages
    return [item async for item in discovery.data_access._pages(start)]


def _page(*names: str, nxt: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": [{"name": n, "length": "4"} for n in names]}
    if nxt:
        body["_links"] = {"next": {"href": nxt}}
    return body


async def test_a_next_link_to_a_page_read_before_is_refused() -> None:
    # Before: the listing ended quietly at page 2, page 3 never read.
    client = Pages({"/p1": _page("a", nxt="/p2"), "/p2": _page("b", nxt=f"{Pages.GATEWAY}/p1"), "/p3": _page("c")})
    with pytest.raises(UntrustedListing, match="the next link of page 2 points back to page 1"):
        await _items(client, "/p1")
    assert client.calls == ["/p1", "/p2"]


async def test_a_page_that_links_to_itself_is_refused() -> None:
    client = Pages({"/s": _page("a", nxt="/s")})
    with pytest.raises(UntrustedListing, match="page 1 points back to page 1"):
        await _items(client, "/s")


async def test_a_listing_longer_than_max_listing_pages_is_refused() -> None:
    client = Pages(endless=True)
    with pytest.raises(UntrustedListing, match=r"more than 5 pages \(export.max_listing_pages\)"):
        await _items(client, "/p?n=0", max_listing_pages=5)
    assert len(client.calls) == 5


async def test_a_cursor_that_does_not_advance_is_refused() -> None:
    # New URLs, the same page: the entries say what the URLs do not.
    client = Pages({"/p?c=1": _page("a", "b", nxt="/p?c=1&x=1"), "/p?c=1&x=1": _page("a", "b", nxt="/p?c=1&x=2")})
    with pytest.raises(UntrustedListing, match="page 2 lists only entries of page 1 again"):
        await _items(client, "/p?c=1")
    assert len(client.calls) == 2


async def _listing(pages: dict[str, Any], dataset_files: list[dict], catalog: dict | None = None) -> tuple[Listing, list[FileTask]]:
    tasks: list[FileTask] = []

    async def sink(task: FileTask) -> None:
        tasks.append(task)

    batch = BatchRef("ds", "b", catalog or {})
    return await Discovery(Pages(pages)).data_access.list_files(batch, dataset_files, sink), tasks  # type: ignore[arg-type]


async def test_identical_entries_listed_twice_are_refused_and_none_of_the_listing_is_fetched() -> None:
    # Which one is right cannot be known, even when they agree.
    listing, tasks = await _listing({"/f": _page("a", "x", "a")}, [{"dataSetFileId": "f", "_links": {"self": {"href": "/f"}}}])
    assert listing.untrusted == "dataSetFile f lists the name 'a' twice (on page 1): which entry is right cannot be known"
    assert tasks == [] and listing.files == 0


async def test_a_dataset_file_listed_twice_in_a_batch_is_refused() -> None:
    listed = [{"dataSetFileId": "f1"}, {"dataSetFileId": "f2"}, {"dataSetFileId": "f1"}]
    client = Pages({"/data/foundation/export/batches/b/files": {"data": listed}})
    with pytest.raises(UntrustedListing, match="the dataSetFiles of batch b lists the dataSetFileId 'f1' twice"):
        await Discovery(client).data_access.resolve_batch("ds", "b", {})  # type: ignore[arg-type]
    # and a directory that lists itself (or another dataSetFile of the batch) again
    listing, tasks = await _listing({"/d": {"data": [{"name": "a"}, {"dataSetFileId": "d", "_links": {"self": {"href": "/d"}}}]}},
                                    [{"dataSetFileId": "d", "_links": {"self": {"href": "/d"}}}])
    assert listing.untrusted == "dataSetFile d is listed twice in batch b" and len(tasks) == 1


@pytest.mark.parametrize(("listed", "skipped", "metrics", "problem"), [
    (3, 0, {"outputFileCount": 3, "outputRecordCount": 60}, None),
    (2, 1, {"outputFileCount": 3, "outputRecordCount": 60}, None),  # a marker may be what it counts
    (4, 0, {"outputFileCount": 3}, None),  # more: left to the row check after download
    (2, 0, {"outputFileCount": 3}, "holds 2 files, but the Catalog counts 3"),
    (0, 1, {"recordsWritten": 60}, "holds no data file, but the Catalog counts 60 records"),
    (0, 0, {"outputFileCount": 0, "outputRecordCount": 0}, None),
    (0, 0, {"outputFileCount": -1, "inputFileCount": -1}, None),  # unknown
    (0, 0, {}, None),
])
def test_the_listing_against_the_catalog(listed: int, skipped: int, metrics: dict, problem: str | None) -> None:
    from engine.checks.integrity import expected_record_count

    obj = {"metrics": metrics}
    listing = Listing(files=listed, skipped=[f"f/_m{i}" for i in range(skipped)])
    batch = BatchRef("ds", "b", obj, expected_record_count(obj))
    if problem is None:
        check_against_catalog(batch, listing)
    else:
        with pytest.raises(UntrustedListing, match=problem):
            check_against_catalog(batch, listing)
