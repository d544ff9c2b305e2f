"""FakeConfig and its presets (all cheap to generate except `big`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .data import DatasetSpec
from .faults import Faults
from .presets import PRESETS  # noqa: F401 - re-exported


@dataclass
class DlzFake:
    """How the fake's dataset exports behave (tests compress Adobe's minutes into fractions of a second)."""

    ineligible: list[str] = field(default_factory=list)  # dataset ids the configs endpoint leaves out
    adhoc_enabled: bool = True  # False: every ad hoc run refused "can not be executed for Flow spec"
    not_ready_s: float = 0.0  # after a flow is created, ad hoc runs are refused "not ready" this long (Adobe: 600)
    run_polls: int = 2  # GETs of a flow's runs that show a new run in progress before it ends
    failing: list[str] = field(default_factory=list)  # datasets whose runs end failed (CONNECTOR-2001-500)
    sas_ttl_s: float = 3600.0  # lifetime of each SAS the credentials endpoint gives (negative: already expired)
    compression: str = "GZIP"  # the target connection's default; NONE writes .parquet as batched


@dataclass
class FakeConfig:
    seed: int = 7
    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    faults: Faults = field(default_factory=Faults)
    data_dir: Path | str | None = None  # None: $TMPDIR/aep-fake-cache/<hash of spec>
    page_size: int = 100  # default listing page size (1..100); DatasetSpec.page_size overrides
    client_id: str = "aep-fake-client-id"
    client_secret: str = "aep-fake-client-secret"
    org_id: str = "4F3BB22C5631222A7F000101@AdobeOrg"
    sandbox: str = "prod"
    static_token: str = "aep-fake-static-token"  # always accepted, never expires
    job_polls_to_success: int = 2  # GETs of an export job until it reports SUCCEEDED
    batch_polls_to_success: int = 0  # GETs of an audience's new batch that answer "loading" first
    # How hrefs and next links are spelled (aep-api.md §4.1): "request" = from the Host header;
    # "port" = the port always written (http://127.0.0.1:80/…, like Adobe's ":443" hrefs);
    # "no_port" = never written; "documented" = self hrefs with the port, next/page links without.
    # "no_port" and "documented" only make sense on the scheme's default port (80 here).
    links: Literal["request", "port", "no_port", "documented"] = "request"
    link_host: str | None = None  # host name written in links (default: the listening address)
    # Part hrefs point at the second (blob) host, signed: a link to another origin, which must
    # not receive credentials (the blob host records the headers it gets).
    foreign_download_links: bool = False
    dlz: DlzFake = field(default_factory=DlzFake)  # dataset exports into the Data Landing Zone (flowservice.py)

    # ------------------------------------------------------------------ presets

    @classmethod
    def demo(cls, seed: int = 7, faults: Faults | None = None) -> FakeConfig:
        """Small mixed-variant org: finishes (incl. generation) in seconds."""
        return cls(seed=seed, faults=faults or Faults(), datasets=[
            DatasetSpec(name="Customer AI Scores - Web Conversion", files_per_dataset_file=4,
                        rows_per_file=3000, success_marker=True),
            DatasetSpec(name="Customer AI Scores - Churn (paged)", files_per_dataset_file=12,
                        rows_per_file=800, page_size=5, length_as="number", metrics_form="old",
                        status_word="active"),
            DatasetSpec(name="Customer AI Scores - Legacy related batch", batch_key="related",
                        dataset_files=2, files_per_dataset_file=2, rows_per_file=1500,
                        listing_shape="bare_array", length_as="number"),
            DatasetSpec(name="Customer AI Scores - Nested", nested=True, files_per_dataset_file=2,
                        rows_per_file=1000, page_size=3),
            DatasetSpec(name="Audience export - High value", files_per_dataset_file=2,
                        rows_per_file=500, audience_job=True, failed_batch=False),
        ])

    @classmethod
    def small(cls, n_datasets: int = 3, seed: int = 7, files: int = 3, rows: int = 500,
              faults: Faults | None = None) -> FakeConfig:
        return cls(seed=seed, faults=faults or Faults(), datasets=[
            DatasetSpec(files_per_dataset_file=files, rows_per_file=rows) for _ in range(n_datasets)])

    @classmethod
    def sized(cls, total_mb: float, files: int, seed: int = 7, datasets: int = 1,
              faults: Faults | None = None) -> FakeConfig:
        """`files` parts of about total_mb/files MiB each, spread over `datasets` datasets."""
        per_ds = max(1, files // datasets)
        return cls(seed=seed, faults=faults or Faults(), datasets=[
            DatasetSpec(files_per_dataset_file=per_ds, file_mb=total_mb / (per_ds * datasets))
            for _ in range(datasets)])

    @classmethod
    def chaos(cls, seed: int = 7) -> FakeConfig:
        """Demo data with every fault mode enabled at moderate rates."""
        return cls.demo(seed=seed, faults=Faults(
            p_429=0.1, p_5xx=0.05, p_error_body=0.03, p_reset=0.1, p_short_range=0.2,
            ignore_range=0.1, p_corrupt=0.05, send_digest=True, first_byte_delay_s=0.01,
            retry_after_s=1, p_retry_after_date=0.3))

    @classmethod
    def preset(cls, name: str, seed: int = 7) -> FakeConfig:
        presets = {
            "demo": lambda: cls.demo(seed=seed),
            "small": lambda: cls.small(seed=seed),
            "chaos": lambda: cls.chaos(seed=seed),
            "lan": lambda: cls.sized(512, 16, seed=seed),
            "wan": lambda: cls.sized(256, 8, seed=seed, faults=Faults(
                bandwidth_bps=20e6, first_byte_delay_s=0.08, p_429=0.02, p_reset=0.02)),
            "big": lambda: cls.sized(8192, 64, seed=seed, datasets=2),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return presets[name]()

    def replace(self, **changes: object) -> FakeConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


