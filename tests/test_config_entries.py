"""Dataset and audience entries of the config: every accepted form, and a clear error for the rest."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pydantic import ValidationError

from engine.config import AudienceSettings, DatasetSettings, looks_like_dataset_id

ID = "5cd9146b31dae914b75f654f"


def test_accepted_forms() -> None:
    assert DatasetSettings.model_validate(ID).id == ID  # a plain string is an id
    d = DatasetSettings.model_validate({"name": " Customer AI (churn) "})
    assert d.name == " Customer AI (churn) " and d.label == "name: Customer AI (churn) "  # names are matched exactly
    assert DatasetSettings.model_validate({"id": ID, "batch": "B1"}).pinned == ["B1"]  # the first version's key
    assert DatasetSettings.model_validate({"id": ID, "batches": ["B1", " B2", "B1"]}).pinned == ["B1", "B2"]
    assert DatasetSettings.model_validate({"id": ID, "batches": "all"}).pinned is None


def test_windows_are_exact_milliseconds_since_inclusive_until_exclusive() -> None:
    d = DatasetSettings.model_validate({"id": ID, "since": "2025-01-01T00:00:00.123Z", "until": "2025-01-01T00:00:01.001+00:00"})
    assert d.window_ms() == (1735689600123 - 1, 1735689601001)  # createdAfter/createdBefore are both exclusive
    d = DatasetSettings.model_validate({"id": ID, "since": date(2025, 1, 1), "until": datetime(2025, 1, 2)})
    assert d.window_ms() == (1735689600000 - 1, 1735776000000)  # a date is midnight UTC, a naive time is UTC
    assert DatasetSettings.model_validate({"id": ID}).window_ms() == (None, None)


@pytest.mark.parametrize("entry, words", [
    ({"id": ID, "batches": "newest"}, 'must be "latest", "all" or a list of batch ids'),
    ({"id": ID, "batches": []}, "at least one id"),
    ({"id": ID, "name": "x"}, "set either id or name"),
    ({"batches": "all"}, "set either id or name"),
    ({"id": ID, "batch": "B1", "batches": ["B2"]}, "set batch or batches, not both"),
    ({"id": ID, "batches": ["B1"], "since": "2025-01-01"}, "do not apply to pinned batch ids"),
    ({"id": ID, "batches": "all", "since": "2025-02-01", "until": "2025-01-01"}, "since must be earlier than until"),
    ({"id": "  "}, "dataset id must not be empty"),
    ({"id": ID, "window": "x"}, "Extra inputs are not permitted"),
])
def test_dataset_entries_that_make_no_sense(entry: dict, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        DatasetSettings.model_validate(entry)
    assert words in str(info.value)


def test_audience_entries() -> None:
    assert AudienceSettings.model_validate({"export_job_id": 11037}).export_job_id == "11037"
    a = AudienceSettings.model_validate({"segment_id": "seg", "dataset_id": ID})
    assert (a.segment_id, a.dataset_id, a.label) == ("seg", ID, "audience:segment:seg")
    for entry, words in [({}, "set either export_job_id"), ({"export_job_id": "1", "segment_id": "s"}, "set either export_job_id"),
                         ({"export_job_id": "1", "dataset_id": ID}, "dataset_id goes with segment_id"),
                         ({"segment_id": " "}, "must not be empty")]:
        with pytest.raises(ValidationError) as info:
            AudienceSettings.model_validate(entry)
        assert words in str(info.value)


@pytest.mark.parametrize("value, is_id", [(ID, True), (ID.upper(), True), (f" {ID} ", True), (ID[:-1], False),
                                          ("Customer AI Scores - Churn", False), ("g" * 24, False)])
def test_ids_and_names_on_the_command_line(value: str, is_id: bool) -> None:
    assert looks_like_dataset_id(value) is is_id
