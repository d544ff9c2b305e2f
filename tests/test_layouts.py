"""`layout = "hive"` (issue #19): `dataset=<id>/batch=<id>/…` folders, through everything that walks
the tree (resume, `_LATEST`, manifests, status, verify, a bucket prefix), chosen in the config, the
environment or `--layout`; and one layout per out_dir (a switch is refused, nothing written)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from conftest import clean_env, journal_path, run_cli, run_export, settings_for, toml_config

from engine.fake import DatasetSpec, FakeConfig
from engine.outcome import EXIT_OK, EXIT_USAGE

HIVE_SHAPE, PLAIN_SHAPE = "dataset={dataset}/batch={batch}/…", "{dataset}/{batch}/…"  # as the refusal names them


def _config(tmp_path: Path, fp, out: str | Path, extra_export: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(toml_config(fp, Path("unused"), extra_export=extra_export).replace('out_dir = "unused"', f'out_dir = "{out}"'))
    return path


def _cfg(seed: int) -> FakeConfig:
    return FakeConfig(seed=seed, datasets=[DatasetSpec(files_per_dataset_file=3, rows_per_file=60),
                                           DatasetSpec(files_per_dataset_file=2, rows_per_file=40)])


async def test_hive_export_resumes_points_and_verifies_through_its_own_folders(tmp_path: Path, make_fake) -> None:
    async with make_fake(_cfg(93)) as fp:
        out = tmp_path / "out"
        assert (await run_export(settings_for(fp, out, layout="hive"))).exit_code == EXIT_OK
        for e in fp.expected_files():
            assert (out / f"dataset={e.dataset_id}" / f"batch={e.batch_id}" / e.dataset_file_id / e.name).is_file(), e
        assert sorted(p.name for p in out.iterdir()) == [".aep-export", "_report.json", *sorted(f"dataset={d}" for d in fp.dataset_ids)]
        for d in fp.dataset_ids:
            assert (out / f"dataset={d}" / "_LATEST").read_text() == f"batch={fp.latest_batch(d).data_id}\n"

        # resume: from the journal, then from the checksum lists alone
        for lose_journal in (False, True):
            if lose_journal:
                journal_path(out).unlink()
            fp.reset_stats()
            rerun = await run_export(settings_for(fp, out, layout="hive"))
            assert rerun.exit_code == EXIT_OK and fp.stats.requests["export.download"] == 0, lose_journal
            assert rerun.totals["files_reused"] == len(fp.expected_files())

    status = run_cli("status", str(out), "--json", cwd=tmp_path)
    body = json.loads(status.stdout)
    assert status.returncode == 0 and body["complete"], status.stdout
    assert sorted(r["batch"] for r in body["rows"]) == sorted(fp.latest_batch(d).data_id for d in fp.dataset_ids)
    text = run_cli("status", str(out), cwd=tmp_path).stdout
    assert f"(dataset={fp.dataset_ids[0]}/_LATEST)" in text, text
    verify = run_cli("verify", str(out), cwd=tmp_path)
    assert verify.returncode == 0 and verify.stdout.startswith("OK: 2 batches"), verify.stdout

    # verify reads the hive folders: a changed file is found there
    victim = next(out.glob("dataset=*/batch=*/*/*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    bad = run_cli("verify", str(out), cwd=tmp_path)
    assert bad.returncode == 1 and str(victim.relative_to(out)) in bad.stdout, bad.stdout

    # no run report: status names the batches from the hive folders, as ids
    (out / "_report.json").unlink()
    rows = json.loads(run_cli("status", str(out), "--json", cwd=tmp_path).stdout)["rows"]
    assert sorted((r["dataset"], r["batch"]) for r in rows) == sorted((d, fp.latest_batch(d).data_id) for d in fp.dataset_ids)


@pytest.mark.parametrize("first, then", [("plain", "hive"), ("hive", "plain")])
def test_a_layout_switch_on_an_export_is_refused_naming_both(tmp_path: Path, threaded_fake, first: str, then: str) -> None:
    fp = threaded_fake(_cfg(94))
    out = tmp_path / "out"
    config = _config(tmp_path, fp, out)
    done = run_cli("run", "--config", str(config), "--layout", first, "--no-progress", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name != ".aep-export"}
    fp.reset_stats()

    switched = run_cli("run", "--config", str(config), "--layout", then, "--no-progress", cwd=tmp_path)
    refused_run_sent = (fp.stats.requests["export.download"], fp.stats.requests["ims.token"])  # before check asks

    assert switched.returncode == EXIT_USAGE and "Traceback" not in switched.stderr, switched.stderr[-2000:]
    shapes = {"plain": PLAIN_SHAPE, "hive": HIVE_SHAPE}
    said = switched.stderr + switched.stdout
    assert f"{first} layout ({shapes[first]})" in said and f"{then} layout ({shapes[then]})" in said, said
    # check and run --dry-run say it the same way, with the same exit code, before asking the platform
    refusal = next(line for line in switched.stderr.splitlines() if "layout" in line and "aep-export:" in line)
    for args in (("check",), ("run", "--dry-run")):
        checked = run_cli(*args, "--config", str(config), "--layout", then, cwd=tmp_path)
        assert checked.returncode == EXIT_USAGE and refusal in checked.stderr.splitlines(), (args, checked.stderr[-2000:])
        doc = json.loads(run_cli(*args, "--config", str(config), "--layout", then, "--json", cwd=tmp_path).stdout)
        assert doc["exit_code"] == EXIT_USAGE and doc["errors"][0]["kind"] == "config", doc
        assert doc["errors"][0]["message"] in refusal, (doc, refusal)
    assert run_cli("check", "--config", str(config), "--layout", first, cwd=tmp_path).returncode == EXIT_OK  # its own: fine
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name != ".aep-export"}
    assert after == before, "the refused run wrote into the export"
    assert refused_run_sent == (0, 0), "the refused run downloaded or sent an (early) token request"
    assert fp.stats.requests["export.download"] == 0  # nor did check


def test_a_switch_is_refused_over_an_export_whose_report_has_the_old_name(tmp_path: Path, threaded_fake) -> None:
    """An export written before layouts (report.json, no `layout` in it) is a plain one."""
    fp = threaded_fake(_cfg(95))
    out = tmp_path / "out"
    config = _config(tmp_path, fp, out)
    assert run_cli("run", "--config", str(config), "--no-progress", cwd=tmp_path).returncode == EXIT_OK
    body = json.loads((out / "_report.json").read_text())
    del body["layout"]
    (out / "report.json").write_text(json.dumps(body))
    (out / "_report.json").unlink()
    refused = run_cli("run", "--config", str(config), "--layout", "hive", "--no-progress", cwd=tmp_path)
    assert refused.returncode == EXIT_USAGE and "plain layout" in refused.stderr + refused.stdout, refused.stderr[-2000:]
    again = run_cli("run", "--config", str(config), "--no-progress", cwd=tmp_path)  # the same layout: fine, and renamed
    assert again.returncode == EXIT_OK and (out / "_report.json").is_file() and not (out / "report.json").exists()


@pytest.mark.parametrize("how", ["config", "env"])
def test_layout_from_the_config_file_and_the_environment(tmp_path: Path, threaded_fake, how: str) -> None:
    fp = threaded_fake(_cfg(96))
    out = tmp_path / "out"
    extra = 'layout = "hive"' if how == "config" else ""
    env = clean_env(**({"AEP_EXPORT_EXPORT__LAYOUT": "hive"} if how == "env" else {}))
    p = run_cli("run", "--config", str(_config(tmp_path, fp, out, extra)), "--no-progress", cwd=tmp_path, env=env)
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    assert sorted(p.name for p in out.glob("dataset=*")) == sorted(f"dataset={d}" for d in fp.dataset_ids)


def test_an_unknown_layout_is_the_flags_error(tmp_path: Path, threaded_fake) -> None:
    fp = threaded_fake(_cfg(97))
    p = run_cli("run", "--config", str(_config(tmp_path, fp, tmp_path / "out")), "--layout", "flat", cwd=tmp_path)
    assert p.returncode == EXIT_USAGE and "--layout flat" in p.stderr and "'plain' or 'hive'" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


def test_hive_into_a_bucket_prefix(tmp_path: Path, moto, threaded_fake) -> None:
    bucket = f"aep-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    fp = threaded_fake(_cfg(98))
    url = f"s3://{bucket}/daily"
    config = _config(tmp_path, fp, url, 'layout = "hive"')
    env = clean_env(**moto.env())
    assert run_cli("run", "--config", str(config), "--no-progress", cwd=tmp_path, env=env).returncode == EXIT_OK
    keys = set(moto.keys(bucket, "daily/"))
    for e in fp.expected_files():
        assert f"daily/dataset={e.dataset_id}/batch={e.batch_id}/{e.dataset_file_id}/{e.name}" in keys
    for d in fp.dataset_ids:
        assert moto.read(bucket, f"daily/dataset={d}/_LATEST").decode() == f"batch={fp.latest_batch(d).data_id}\n"
    assert "daily/_report.json" in keys and "daily/report.json" not in keys

    fp.platform.reset_stats()
    assert run_cli("run", "--config", str(config), "--no-progress", cwd=tmp_path, env=env).returncode == EXIT_OK
    assert fp.stats.requests["export.download"] == 0, "the rerun fetched files the prefix holds verified"
    verify = run_cli("verify", url, cwd=tmp_path, env=env)
    assert verify.returncode == 0 and verify.stdout.startswith("OK: 2 batches"), verify.stdout + verify.stderr
    status = run_cli("status", url, cwd=tmp_path, env=env)
    assert status.returncode == 0 and f"(dataset={fp.dataset_ids[0]}/_LATEST)" in status.stdout, status.stdout
    plain = run_cli("run", "--config", str(config), "--layout", "plain", "--no-progress", cwd=tmp_path, env=env)
    assert plain.returncode == EXIT_USAGE and "hive layout" in plain.stderr + plain.stdout, plain.stderr[-2000:]
    checked = run_cli("check", "--config", str(config), "--layout", "plain", cwd=tmp_path, env=env)  # check reads the bucket too
    assert checked.returncode == EXIT_USAGE and "hive layout" in checked.stderr, checked.stderr[-2000:]


async def test_hive_shards_share_one_folder_and_status_reads_them(tmp_path: Path, make_fake) -> None:
    from engine.exporter import Exporter
    from engine.output.status import export_status
    from engine.shard import Shard

    async with make_fake(FakeConfig(seed=99, datasets=[DatasetSpec(files_per_dataset_file=1, rows_per_file=30)] * 4)) as fp:
        out = tmp_path / "out"
        for index in range(2):
            run = await Exporter(settings_for(fp, out, layout="hive"), handle_signals=False, shard=Shard(index, 2)).execute()
            assert run.exit_code == EXIT_OK
    assert sorted(p.name for p in out.glob("dataset=*")) == sorted(f"dataset={d}" for d in fp.dataset_ids)
    assert sorted(p.name for p in out.glob("_report*.json")) == ["_report.shard-0-of-2.json", "_report.shard-1-of-2.json"]
    status = export_status(out)
    assert status.complete and status.shards == 2 and status.layout == "hive"
    assert sorted(r.dataset for r in status.rows) == sorted(fp.dataset_ids)


# -- ids a hive folder cannot hold (`dataset=<id>/batch=<id>`: readers split at '=', decode %XX) -----


@pytest.mark.parametrize("bad", ["x=y", "a%2Fb", "__HIVE_DEFAULT_PARTITION__"])
def test_an_id_hive_readers_would_read_back_otherwise_is_refused_in_hive_only(bad: str) -> None:
    from engine.errors import UnsafeNameError
    from engine.layout import HIVE, PLAIN, folder_id

    assert folder_id(bad, "batch id", PLAIN) == bad  # a plain folder holds it as it is
    with pytest.raises(UnsafeNameError, match=r"batch id .* export.layout = \"hive\""):
        folder_id(bad, "batch id", HIVE)
    for already in ("a/b", "..", "_SUCCESS"):  # what the plain layout refuses, the hive one does too
        with pytest.raises(UnsafeNameError):
            folder_id(already, "batch id", HIVE)


@pytest.mark.parametrize("entry, key", [('id = "ab=cd"', "datasets.0.id"),
                                        ('id = "5cd9146b31dae914b75f654f"\nbatches = ["B1", "x%y"]', "datasets.0.batches.1"),
                                        ('id = "5cd9146b31dae914b75f654f"\nbatch = "__HIVE_DEFAULT_PARTITION__"', "datasets.0.batch")])
def test_a_config_id_a_hive_folder_cannot_hold_is_the_configs_error(tmp_path: Path, threaded_fake, entry: str, key: str) -> None:
    fp = threaded_fake(_cfg(100))
    out = tmp_path / "out"
    config = _config(tmp_path, fp, out, 'layout = "hive"')
    text = config.read_text()
    config.write_text(text[:text.index("[[datasets]]")] + f"[[datasets]]\n{entry}\n")
    p = run_cli("run", "--config", str(config), "--no-progress", cwd=tmp_path)
    assert p.returncode == EXIT_USAGE and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"invalid configuration in {config}: {key} " in p.stderr and 'export.layout = "hive"' in p.stderr, p.stderr
    assert not out.exists() and fp.stats.requests["export.download"] == 0
    check = run_cli("check", "--config", str(config), cwd=tmp_path)  # check says it the same way
    assert check.returncode == EXIT_USAGE and f"{key} " in check.stderr, check.stderr
    plain = run_cli("check", "--config", str(config), "--layout", "plain", cwd=tmp_path)  # a plain folder holds it
    assert key not in plain.stderr, plain.stderr


def _rename_batch(fp, dataset_id: str, new_id: str) -> str:
    """The platform lists the dataset's newest batch under `new_id` (its Catalog key and Data
    Access id); returns the id it had."""
    model, batch = fp.model, fp.latest_batch(dataset_id)
    old = batch.key
    assert batch.data_id == old, "a dataset whose batch key is its data id"
    del model.batches_by_key[old], model.batches_by_data_id[old]
    batch.key = batch.data_id = new_id
    model.batches_by_key[new_id] = model.batches_by_data_id[new_id] = batch
    return old


@pytest.mark.parametrize("what", ["batch", "dataset"])
async def test_a_platform_id_a_hive_folder_cannot_hold_fails_its_entry_and_nothing_is_written(
        tmp_path: Path, make_fake, what: str) -> None:
    """A batch id (Catalog) or a dataset id (looked up by name) with '=' from the platform: its entry
    fails saying why, nothing of it is written; the other dataset is exported. A plain export takes it."""
    evil = DatasetSpec(id="aaaaaaaaaaaa=bbbbbbbbbbb" if what == "dataset" else None, name="evil", files_per_dataset_file=2,
                       rows_per_file=30)
    fp = make_fake(FakeConfig(seed=101, datasets=[evil, DatasetSpec(files_per_dataset_file=2, rows_per_file=40)]))
    victim, other = fp.dataset_ids
    bad = victim if what == "dataset" else "batch=x"
    if what == "batch":
        _rename_batch(fp, victim, bad)
    async with fp:
        for layout in ("hive", "plain"):
            out = tmp_path / layout
            settings = settings_for(fp, out, [other], layout=layout)
            settings.datasets.insert(0, type(settings.datasets[0])(name="evil"))
            run = await run_export(settings)
            by_id = {d.dataset_id: d for d in run.datasets}
            if layout == "plain":
                assert run.exit_code == EXIT_OK and (out / victim).is_dir(), [str(d.error) for d in run.datasets]
                continue
            assert run.exit_code == 1 and by_id[other].status == "ok"
            failed = by_id[victim]
            assert failed.status == "failed" and failed.error is not None, failed
            said = str(failed.error)
            assert f"{what} id {bad!r} contains '='" in said and 'export.layout = "hive"' in said, said
            assert sorted(p.name for p in out.iterdir()) == [".aep-export", "_report.json", f"dataset={other}"]


@pytest.mark.parametrize("layout", ["plain", "hive"])
def test_every_json_document_says_the_layout(tmp_path: Path, threaded_fake, layout: str) -> None:
    """run, check, run --dry-run, status and verify --json name the layout (from the reports, else
    from the batch folders); a key added beside the others."""
    fp = threaded_fake(_cfg(102))
    out = tmp_path / "out"
    config = _config(tmp_path, fp, out, f'layout = "{layout}"')

    def doc(*args: str, code: int = EXIT_OK) -> dict:
        p = run_cli(*args, "--json", cwd=tmp_path)
        assert p.returncode == code, p.stdout[-2000:] + p.stderr[-2000:]
        return json.loads(p.stdout)

    assert doc("check", "--config", str(config))["layout"] == layout  # before anything is written: export.layout
    assert doc("run", "--config", str(config), "--no-progress")["layout"] == layout
    for args in (("check", "--config", str(config)), ("run", "--config", str(config), "--dry-run"),
                 ("status", str(out)), ("verify", str(out))):
        body = doc(*args)
        assert body["layout"] == layout and {"schema", "ok", "exit_code", "errors"} <= body.keys(), args
    (out / "_report.json").unlink()  # no run report: the batch folders say it
    assert doc("status", str(out), code=1)["layout"] == doc("verify", str(out))["layout"] == layout  # status: scope unknown
