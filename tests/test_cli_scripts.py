"""The CLI as a data engineer's scripts use it (issue #19): one-line errors with the right exit
code, a versioned JSON document on stdout for every command, flags that are never guessed,
`list` and names, help without the engine's start-up cost, and the Makefile's two set-ups."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import clean_env, read_manifest, read_report, run_cli, toml_config

from engine.fake import DatasetSpec, FakeConfig, Faults
from engine.outcome import EXIT_CREDENTIALS, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from engine.units import human_bytes

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["Churn propensity", "Web conversion propensity", "Upsell propensity"]
UNKNOWN_ID = "0123456789abcdef01234567"
HEAVY = {"aiohttp", "pydantic", "structlog", "anyio", "pyarrow", "aiobotocore"}
BOUND_S = 40.0  # for the ~15 s unreachable budget (as tests/test_unreachable.py): machines here are shared

# The keys of each --json document (README, "JSON results"): within a version keys may be added,
# never removed or renamed, so these sets may only grow.
COMMON = {"schema", "ok", "exit_code", "errors"}
RUN_KEYS = COMMON | {"report", "started_at", "finished_at", "duration_s", "status", "shard", "entries", "totals", "datasets",
                     "layout"}
RUN_DATASET_KEYS = {"dataset_id", "name", "source", "status", "error", "delegated", "batches"}
RUN_BATCH_KEYS = {"batch_id", "status", "attempted", "files", "files_failed", "files_reused", "bytes", "bytes_fetched",
                  "records_expected", "records_found", "seconds", "errors"}
CHECK_KEYS = COMMON | {"destination", "entries", "totals", "layout"}
CHECK_ENTRY_KEYS = {"entry", "dataset_id", "error", "actions", "batches", "replaced", "left_out"}
HELD_KEYS = {"fetch_files", "fetch_bytes", "verified_files", "verified_bytes", "partial_files", "held_bytes", "replaced_files"}
CHECK_BATCH_KEYS = {"batch_id", "files", "bytes", "unsized_files", "error", "file_states"} | HELD_KEYS
FILE_STATE_KEYS = {"path", "size", "state", "held_bytes", "note"}
VERIFY_KEYS = COMMON | {"where", "batches", "files", "bytes", "problems", "layout"}
STATUS_KEYS = COMMON | {"complete", "shards", "reports", "ignored_reports", "rows", "counts", "layout"}  # the old keys kept
LIST_KEYS = COMMON | {"sandbox", "name_filter", "datasets"}
LIST_DATASET_KEYS = {"id", "name", "created", "last_batch", "error"}


@pytest.fixture(scope="module")
def fake(fake_data_root: Path):
    from conftest import with_data_dir

    from engine.fake import FakePlatform

    cfg = with_data_dir(FakeConfig(seed=191, datasets=[
        DatasetSpec(name=name, files_per_dataset_file=2, rows_per_file=50) for name in NAMES]), fake_data_root)
    fp = FakePlatform.run_in_thread(cfg)
    yield fp
    fp.stop()


@pytest.fixture(scope="module")
def exported(fake, tmp_path_factory: pytest.TempPathFactory):
    """One complete export, shared by the tests that read it: the folder holding c.toml and out/."""
    base = tmp_path_factory.mktemp("exported")
    (base / "c.toml").write_text(toml_config(fake, base / "out"))
    p = run_cli("run", "--config", "c.toml", "--no-progress", cwd=base)
    assert p.returncode == EXIT_OK, p.stderr[-3000:]
    return base


def _config(fake, tmp_path: Path, datasets: list[str] | None = None, **kw) -> str:
    (tmp_path / "c.toml").write_text(toml_config(fake, tmp_path / "out", datasets, **kw))
    return "c.toml"


def _one_json_document(stdout: str) -> dict:
    doc = json.loads(stdout)  # the whole of stdout is one document: no table, no log line
    assert isinstance(doc, dict) and re.fullmatch(r"aep-export/[a-z]+/1", doc["schema"]), doc
    assert doc["ok"] is (doc["exit_code"] == 0)
    assert all(set(e) == {"kind", "message"} for e in doc["errors"]), doc["errors"]
    return doc


def _stderr_lines(p: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.strip()]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


# -- 1. two tracebacks become one line with the right exit code ------------------------------------


def test_verify_takes_a_relative_path_after_an_interrupted_run(exported, tmp_path: Path) -> None:
    """A file still in flight (its .part, where the engine keeps it) is a problem `verify` names,
    whether DIR is given absolute or relative (relative raised ValueError in incomplete())."""
    import shutil

    from engine.layout import part_path

    base = exported
    shutil.copytree(base / "out", tmp_path / "out3")
    final = next(p for p in (tmp_path / "out3").rglob("*.parquet"))
    part = part_path(final)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"PAR1 half a file")  # what an interrupted run leaves
    for where in ("out3", str(tmp_path / "out3"), "./out3/"):
        p = run_cli("verify", where, cwd=tmp_path)
        assert "Traceback" not in p.stderr, p.stderr[-2000:]
        assert p.returncode == EXIT_FAILED and ".part" in p.stdout, (where, p.stdout, p.stderr[-500:])
        p = run_cli("status", where, cwd=tmp_path)
        assert p.returncode == EXIT_OK and "Traceback" not in p.stderr, (where, p.stdout, p.stderr[-500:])


def test_unreachable_object_store_is_exit_4_and_one_line_within_the_budget(fake, tmp_path: Path) -> None:
    """An s3:// destination whose endpoint refuses connections: like an unreachable gateway, not a
    minute of botocore retries and a 55-line traceback."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = clean_env(AWS_ACCESS_KEY_ID="aep-test", AWS_SECRET_ACCESS_KEY="aep-test-secret", AWS_REGION="us-east-1",
                    AWS_ENDPOINT_URL=endpoint, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    config = _config(fake, tmp_path)
    commands = {"run": ["run", "--config", config, "--out", "s3://scores/aep", "--json-logs"],
                "verify": ["verify", "s3://scores/aep"], "status": ["status", "s3://scores/aep"]}
    started = time.monotonic()
    procs = {name: subprocess.Popen([sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=tmp_path, env=env) for name, args in commands.items()}
    for name, proc in procs.items():  # at once: each waits out its budget
        stdout, stderr = proc.communicate(timeout=150)
        elapsed = time.monotonic() - started
        assert "Traceback" not in stderr, f"{name}: {stderr[-3000:]}"
        assert proc.returncode == EXIT_UNREACHABLE, f"{name}: exit {proc.returncode}: {stderr[-1000:]}"
        assert elapsed < BOUND_S, f"{name} took {elapsed:.0f} s"
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"aep-export: platform unreachable: cannot connect to the object store at {endpoint}"), last
        assert "AWS_ENDPOINT_URL" in last and stdout == "", (last, stdout)
    assert not (tmp_path / "out").exists()  # nothing written locally either


# -- 2. --json: one document on stdout, logs on stderr ---------------------------------------------


def test_run_json_is_one_document_with_names_figures_and_error_kinds(fake, tmp_path: Path) -> None:
    p = run_cli("run", "--config", _config(fake, tmp_path), "--json", cwd=tmp_path)
    doc = _one_json_document(p.stdout)
    assert set(doc) == RUN_KEYS and doc["schema"] == "aep-export/run/1" and doc["ok"] and doc["status"] == "ok"
    assert doc["totals"] == read_report(tmp_path / "out")["totals"] and doc["report"] == str(tmp_path / "out" / "_report.json")
    assert [d["name"] for d in doc["datasets"]] == NAMES
    assert all(set(d) == RUN_DATASET_KEYS and all(set(b) == RUN_BATCH_KEYS for b in d["batches"]) for d in doc["datasets"])
    assert all(json.loads(ln)["event"] for ln in _stderr_lines(p))  # the logs: JSON lines on stderr (not a terminal)

    # an entry that fails: its error with its kind; exit 1
    p = run_cli("run", "--config", _config(fake, tmp_path, [fake.dataset_ids[0], UNKNOWN_ID]), "--json", cwd=tmp_path)
    failed = _one_json_document(p.stdout)
    assert p.returncode == failed["exit_code"] == EXIT_FAILED and failed["status"] == "failed" and not failed["ok"]
    bad = next(d for d in failed["datasets"] if d["dataset_id"] == UNKNOWN_ID)
    assert bad["error"]["kind"] == "not_found" and UNKNOWN_ID in bad["error"]["message"] and bad["name"] is None


def test_check_verify_status_list_json_documents(fake, exported, tmp_path: Path) -> None:
    base = exported
    config = _config(fake, tmp_path, [fake.dataset_ids[0], UNKNOWN_ID])
    for args in (["check", "--config", config, "--json"], ["run", "--config", config, "--dry-run", "--json"]):
        p = run_cli(*args, cwd=tmp_path)
        doc = _one_json_document(p.stdout)
        assert set(doc) == CHECK_KEYS and doc["schema"] == "aep-export/check/1" and p.returncode == doc["exit_code"] == EXIT_FAILED
        assert all(set(e) == CHECK_ENTRY_KEYS for e in doc["entries"])
        assert all(set(b) == CHECK_BATCH_KEYS and all(set(f) == FILE_STATE_KEYS for f in b["file_states"])
                   for e in doc["entries"] for b in e["batches"])
        assert set(doc["totals"]) >= HELD_KEYS and doc["destination"] == str(tmp_path / "out")
        good, bad = doc["entries"]
        assert good["error"] is None and good["batches"][0]["files"] > 0 and bad["error"]["kind"] == "not_found"
        assert doc["totals"]["entries_with_errors"] == 1 and doc["totals"]["files"] == good["batches"][0]["files"]

    p = run_cli("verify", "out", "--json", cwd=base)
    doc = _one_json_document(p.stdout)
    assert set(doc) == VERIFY_KEYS and doc["ok"] and doc["problems"] == [] and doc["batches"] == len(NAMES)

    p = run_cli("status", "out", "--json", cwd=base)
    doc = _one_json_document(p.stdout)
    assert set(doc) == STATUS_KEYS and doc["schema"] == "aep-export/status/1" and doc["complete"] is True
    assert {r["state"] for r in doc["rows"]} == {"done"} and p.returncode == 0

    p = run_cli("list", "--config", config, "--json", cwd=tmp_path)
    doc = _one_json_document(p.stdout)
    assert set(doc) == LIST_KEYS and all(set(d) == LIST_DATASET_KEYS for d in doc["datasets"])


def test_a_command_that_cannot_run_still_writes_its_document(fake, tmp_path: Path) -> None:
    """Rejected credentials: exit 3, the document with the error's kind, and one line on stderr."""
    config = _config(fake, tmp_path, client_secret="wrong-secret-19")
    for command in ("run", "check", "list"):
        p = run_cli(command, "--config", config, "--json", cwd=tmp_path)
        doc = _one_json_document(p.stdout)
        assert p.returncode == doc["exit_code"] == EXIT_CREDENTIALS, (command, p.stderr[-1000:])
        assert doc["errors"][0]["kind"] == "credentials" and doc["schema"] == f"aep-export/{command}/1"
        assert _stderr_lines(p)[-1].startswith("aep-export: credentials rejected: ")
    p = run_cli("run", "--config", config, "--concurrency", "0", "--json", cwd=tmp_path)
    doc = _one_json_document(p.stdout)
    assert p.returncode == doc["exit_code"] == EXIT_USAGE and doc["errors"][0]["kind"] == "config"


def test_long_options_are_never_abbreviated() -> None:
    """`run --json` was silently taken for `--json-logs`: no prefix of a long option is accepted."""
    from engine.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert not parser.allow_abbrev and all(not p.allow_abbrev for p in commands.values())
    for argv in (["run", "--json-l"], ["run", "--conc", "4"], ["check", "--data", "x"], ["status", "d", "--js"],
                 ["--vers"], ["verify", "d", "--de"]):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2, argv
    assert parser.parse_args(["run", "--json"]).json is True and parser.parse_args(["run", "--json"]).json_logs is None


@pytest.mark.parametrize("argv, expect", [
    (["-q", "run"], {"quiet": True}), (["run", "-q"], {"quiet": True}),
    (["-v", "check"], {"verbose": True}), (["check", "--verbose"], {"verbose": True}),
    (["--json-logs", "status", "d"], {"json_logs": True}), (["status", "d", "--json-logs"], {"json_logs": True}),
    (["--console-logs", "verify", "d"], {"json_logs": False}), (["-q", "list", "--json-logs"], {"quiet": True, "json_logs": True}),
    (["--json-logs", "run", "--no-progress"], {"json_logs": True, "quiet": False, "verbose": False}),
])
def test_global_flags_before_or_after_the_command(argv: list[str], expect: dict) -> None:
    from engine.cli import build_parser

    args = build_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expect} == expect


def test_quiet_before_the_command_quiets_the_run(fake, tmp_path: Path) -> None:
    p = run_cli("-q", "--json-logs", "run", "--config", _config(fake, tmp_path, fake.dataset_ids[:1]), cwd=tmp_path)
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    assert {json.loads(ln)["level"] for ln in _stderr_lines(p)} <= {"warning", "error"}  # no info lines
    assert p.stdout.startswith("aep-export: ok")


def test_the_command_alone_prints_the_help(tmp_path: Path) -> None:
    p = run_cli(cwd=tmp_path)
    assert p.returncode == EXIT_USAGE and p.stdout.startswith("usage: aep-export"), (p.stdout, p.stderr)
    assert all(f"\n    {c} " in p.stdout for c in ("run", "check", "list", "verify", "status")), p.stdout


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["list", "-h"], ["status", "--help"]])
def test_help_does_not_import_the_engine(tmp_path: Path, argv: list[str]) -> None:
    """Help is answered by the parser alone: the engine's ~0.5 s of imports (aiohttp, pydantic,
    structlog) are not paid for it."""
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", *argv], capture_output=True, text=True, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert p.returncode == 0 and "usage: aep-export" in p.stdout, p.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line}
    assert "engine.cli" in imported  # the measurement saw the parser being built
    assert not imported & HEAVY, sorted(imported & HEAVY)
    print(f"{' '.join(argv)}: {elapsed:.2f} s with -X importtime")


def _run_with_a_terminal_on(stream: str, args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run with `stream` (stdout or stderr) on a pty and the other one on a pipe; (exit, pty text, pipe text)."""
    master, slave = pty.openpty()
    on_pty = {stream: slave}
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], stdin=subprocess.DEVNULL,
                            stdout=on_pty.get("stdout", subprocess.PIPE), stderr=on_pty.get("stderr", subprocess.PIPE),
                            cwd=cwd, env=clean_env(TERM="dumb"), text=True)
    os.close(slave)
    seen = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        seen.append(data)
    piped = (proc.stderr if stream == "stdout" else proc.stdout).read()  # type: ignore[union-attr]
    code = proc.wait(timeout=60)
    os.close(master)
    return code, b"".join(seen).decode("utf-8", "replace"), piped


def test_the_log_format_follows_stderrs_terminal(fake, tmp_path: Path) -> None:
    args = ["run", "--config", _config(fake, tmp_path, fake.dataset_ids[:1]), "--no-progress"]
    # `run > summary.txt` on a terminal: console logs on the terminal, the table in the file
    code, terminal, summary = _run_with_a_terminal_on("stderr", args, tmp_path)
    assert code == EXIT_OK and summary.startswith("aep-export: ok"), (terminal[-1000:], summary)
    assert "batch_done" in terminal and not any(ln.lstrip().startswith("{") for ln in terminal.splitlines()), terminal[-1000:]
    # stderr to a log collector, stdout on a terminal: JSON lines
    code, table, logged = _run_with_a_terminal_on("stdout", args, tmp_path)
    assert code == EXIT_OK and "aep-export: ok" in table
    assert [json.loads(ln)["event"] for ln in logged.splitlines() if ln.strip()][-1] == "run_summary", logged[-1000:]


@pytest.mark.parametrize("flag, value", [("--concurrency", "0"), ("--concurrency", "1000"), ("--url", "ftp://example.com")])
def test_a_flag_error_names_the_flag_not_the_config_file(fake, tmp_path: Path, flag: str, value: str) -> None:
    p = run_cli("run", "--config", _config(fake, tmp_path), flag, value, cwd=tmp_path)
    lines = _stderr_lines(p)
    assert p.returncode == EXIT_USAGE and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"aep-export: configuration error: {flag} {value}: ") and "c.toml" not in lines[0], lines[0]


def test_demo_flag_error_is_one_line(tmp_path: Path) -> None:
    p = run_cli("demo", "--out", str(tmp_path / "d"), "--concurrency", "0", cwd=tmp_path)
    assert p.returncode == EXIT_USAGE and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert _stderr_lines(p) == [p.stderr.strip()] and "--concurrency 0" in p.stderr and not (tmp_path / "d").exists()


# -- 3. list, and names ------------------------------------------------------------------------------


def test_list_shows_every_dataset_with_its_last_successful_batch(fake, tmp_path: Path) -> None:
    config = _config(fake, tmp_path, [])  # `list` needs no dataset in the config
    p = run_cli("list", "--config", config, "--json", cwd=tmp_path)
    assert p.returncode == EXIT_OK, p.stderr[-2000:]
    doc = _one_json_document(p.stdout)
    assert doc["sandbox"] == fake.sandbox and [d["name"] for d in doc["datasets"]] == sorted(NAMES)
    for d in doc["datasets"]:
        model = fake.model.datasets[d["id"]]
        latest = model.latest_success
        parts = [p for _, p in latest.parts if not p.is_marker]
        assert d["name"] == model.name and d["last_batch"]["id"] == latest.key
        assert d["last_batch"]["bytes"] == sum(p.size for p in parts) and d["last_batch"]["records"] == sum(p.rows for p in parts)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d["created"]) and d["error"] is None

    p = run_cli("list", "--config", config, "--name", "PROPENSITY", cwd=tmp_path)  # substring, any case
    assert p.returncode == EXIT_OK and p.stdout.splitlines()[0].split()[:3] == ["id", "name", "created"]
    assert all(name in p.stdout for name in NAMES)
    assert p.stdout.rstrip().endswith(f"3 datasets whose name contains 'PROPENSITY' in sandbox {fake.sandbox}")
    p = run_cli("list", "--config", config, "--name", "churn", "--json", cwd=tmp_path)
    assert [d["name"] for d in json.loads(p.stdout)["datasets"]] == ["Churn propensity"]
    p = run_cli("list", "--config", config, "--name", "no such thing", cwd=tmp_path)
    assert p.returncode == EXIT_OK
    assert p.stdout.rstrip().endswith(f"0 datasets whose name contains 'no such thing' in sandbox {fake.sandbox}")


async def test_the_sandbox_listing_pages_until_a_short_page_and_keeps_each_dataset_once() -> None:
    """More than one Catalog page (100 a page): every dataset once, even when a page edge repeats one."""
    from types import SimpleNamespace

    from engine.platform.listing import sandbox_datasets

    every = [f"{i:024x}" for i in range(230)]
    asked = []

    async def get_json(path: str, params: dict[str, str]) -> dict:
        asked.append(params)
        start, limit = int(params["start"]), int(params["limit"])
        page = every[max(0, start - 1):start + limit - (1 if start else 0)]  # each page repeats the last one's edge
        return {key: {"name": f"n{key[-3:]}"} for key in page}

    found = await sandbox_datasets(SimpleNamespace(client=SimpleNamespace(get_json=get_json)), "name")
    assert [k for k, _ in found] == every and [p["start"] for p in asked] == ["0", "100", "200"]
    assert all(p["limit"] == "100" and p["orderBy"] == "asc:created" for p in asked)


def test_a_name_that_matches_nothing_suggests_the_closest(fake, tmp_path: Path) -> None:
    config = _config(fake, tmp_path)
    p = run_cli("check", "--config", config, "--dataset", "Churn propensty", "--dataset", "upsell", cwd=tmp_path)
    assert p.returncode == EXIT_FAILED
    lines = {ln.split(":")[1]: ln for ln in p.stdout.splitlines() if ln.startswith("name:")}
    assert "did you mean 'Churn propensity'?" in lines["Churn propensty"], lines
    assert "did you mean 'Upsell propensity'?" in lines["upsell"], lines  # the case differs: still found


def test_close_names() -> None:
    from engine.platform.listing import close_names

    names = ["Customer AI Scores - Churn (paged)", "Customer AI Scores - Nested", "Customer AI Scores - Web Conversion",
             "Audience export - High value"]
    assert close_names("Customer AI Scores - Chrn", names) == ["Customer AI Scores - Churn (paged)"]
    assert close_names("web conversion", names) == ["Customer AI Scores - Web Conversion"]
    assert close_names("Audience export High value", names) == ["Audience export - High value"]
    assert close_names("something else entirely", names) == []


def test_names_beside_ids_in_the_summary_the_report_and_the_manifests(fake, exported) -> None:
    base = exported
    out = base / "out"
    by_id = {d["dataset_id"]: d["name"] for d in read_report(out)["datasets"]}
    assert by_id == {ds: fake.model.datasets[ds].name for ds in fake.dataset_ids}
    for manifest in out.rglob("_manifest.json"):
        m = read_manifest(manifest.parent)
        assert m["dataset_name"] == by_id[m["dataset_id"]]
    fake.reset_stats()
    p = run_cli("run", "--config", "c.toml", "--no-progress", cwd=base)  # a rerun: everything already verified
    rows = {ln.split()[0]: ln for ln in p.stdout.splitlines()[3:-1]}
    assert p.returncode == EXIT_OK and all(f"{ds}  {name} " in rows[ds] for ds, name in by_id.items()), p.stdout
    # the names cost one listing of the sandbox, not one Catalog call per dataset
    assert fake.stats.requests["catalog.dataSets"] == 1 and fake.stats.requests["catalog.dataSet"] == 0


# -- 4. rejected credentials on `run`: what `check` says ----------------------------------------------


def test_run_with_rejected_credentials_says_what_check_says(fake, tmp_path: Path) -> None:
    config = _config(fake, tmp_path, client_secret="wrong-secret-19")
    run = run_cli("run", "--config", config, "--console-logs", "-q", cwd=tmp_path)
    check = run_cli("check", "--config", config, "--console-logs", "-q", cwd=tmp_path)
    assert run.returncode == check.returncode == EXIT_CREDENTIALS
    assert run.stdout == check.stdout == ""  # no empty table with the error inside it
    said = check.stderr.strip()
    assert said.startswith("aep-export: credentials rejected: IMS rejected") and "wrong-secret-19" not in said
    assert run.stderr == check.stderr, run.stderr
    logged = run_cli("run", "--config", config, "--json-logs", cwd=tmp_path)  # at info: the closing run_summary event too
    assert logged.stdout == "" and _stderr_lines(logged)[-1] == said and json.loads(_stderr_lines(logged)[0])["event"] == "run_summary"
    assert read_report(tmp_path / "out")["status"] == "credentials_rejected"


# -- 5. make demo installs only the package; make test the extras -------------------------------------


def _make_n(target: str, venv: Path) -> str:
    p = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_make_demo_installs_only_the_package_and_make_test_still_gets_its_extras(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    demo = _make_n("demo", venv)
    installs = [ln for ln in demo.splitlines() if "pip install" in ln and "--upgrade pip" not in ln]
    assert installs and all(re.search(r"install --quiet -e \.$", ln) for ln in installs), installs
    test = _make_n("test", venv)
    assert re.search(r"pip install --quiet -e '\.\[test,bench\]'", test), test
    # after `make demo`: its set-up is done; `make test` must still install the extras
    (venv / "bin").mkdir(parents=True)
    for line in demo.splitlines():
        if line.startswith("touch "):
            Path(line.split()[1]).touch()
    again = _make_n("demo", venv)
    assert "pip install" not in again, again
    test = _make_n("test", venv)
    assert re.search(r"pip install --quiet -e '\.\[test,bench\]'", test) and "python -m pytest" in test, test


def test_the_readme_documents_every_key_of_every_document() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `aep-export/([a-z]+)/1` \|.*$", readme, re.M)}
    check = CHECK_KEYS | CHECK_ENTRY_KEYS | CHECK_BATCH_KEYS | FILE_STATE_KEYS
    documented = {"run": RUN_KEYS | RUN_DATASET_KEYS | RUN_BATCH_KEYS, "check": check,
                  "list": LIST_KEYS | LIST_DATASET_KEYS, "verify": VERIFY_KEYS, "status": STATUS_KEYS}
    assert set(rows) == set(documented)
    for command, keys in documented.items():
        missing = {k for k in keys - COMMON if f"`{k}`" not in rows[command]}
        assert not missing, (command, missing)


# -- plans and progress that mislead: status, the summary of an interrupted run --------------------


async def test_status_says_not_started_for_batches_a_fatal_error_stopped_before(make_fake, tmp_path: Path) -> None:
    """Credentials revoked on the first download (concurrency 1): that batch failed; the other
    batch, listed but never attempted, is not started (it was "failed" like the first)."""
    from conftest import run_export, settings_for
    from test_engine_abort import _revoke_on_first_download

    from engine.output.status import export_status, render_status
    from engine.results import status_document

    fp = make_fake(FakeConfig.small(n_datasets=2, files=2, rows=20, seed=72))
    _revoke_on_first_download(fp, listings_needed=2)
    async with fp:
        out = tmp_path / "out"
        run = await run_export(settings_for(fp, out, concurrency=1))
    assert run.exit_code == EXIT_CREDENTIALS and fp.stats.requests["export.listing"] >= 2  # both listed, then revoked
    status = export_status(out)
    assert sorted(r.state for r in status.rows) == ["failed", "not_started"], status.rows
    text = render_status(status)
    assert re.search(r"^\S+\s+\S+\s+\S+\s+not started\s+the run stopped before it began", text, re.M), text
    assert text.splitlines()[-1].startswith("INCOMPLETE: 0 done, 1 failed, 1 not started, 0 missing"), text
    doc = status_document(status, 1)
    assert doc["counts"] == {"done": 0, "failed": 1, "not_started": 1, "missing": 0}


def test_an_interrupted_run_reports_what_it_kept_and_status_what_it_never_started(threaded_fake, tmp_path: Path) -> None:
    """SIGINT while the first batch's files are in flight (concurrency 1, one dataset listed at a
    time): the summary says what was kept (verified and partly held), not "N failed; 0 B"; status
    calls the batches never reached not started, the one in flight missing (interrupted)."""
    import signal

    from conftest import parts_under

    fp = threaded_fake(FakeConfig(seed=73, faults=Faults(bandwidth_bps=200e3), datasets=[
        DatasetSpec(batches=1, failed_batch=False, processing_batch=False, files_per_dataset_file=3, file_mb=0.2)
        for _ in range(3)]))
    out = tmp_path / "out"
    (tmp_path / "c.toml").write_text(toml_config(fp, out, extra_export="discovery_concurrency = 1\n").replace(
        "concurrency = 4\n", "concurrency = 1\n", 1))
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", "c.toml", "--no-progress"], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    finals = [out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name for e in fp.expected_files()]
    while time.monotonic() < deadline:  # one file verified, the next partly held
        if any(f.exists() for f in finals) and any(p.stat().st_size > 0 for p in parts_under(out)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    kept = [f for f in finals if f.exists()]
    held = sum(p.stat().st_size for p in parts_under(out))
    assert kept and held and len(kept) < len(finals), "the signal did not land mid-run"

    last = stdout.strip().splitlines()[-1]
    totals = read_report(out)["totals"]
    assert re.search(rf"; interrupted after [\d.]+ s: kept {len(kept)} verified files? \(", last), last
    assert re.search(rf"and {re.escape(human_bytes(totals['bytes_unfinished']))} in \d+ unfinished files?, rerun to resume", last), last
    assert " 0 failed;" in last and 0 < totals["bytes_unfinished"] <= held, (last, totals)
    status = json.loads(run_cli("status", "out", "--json", cwd=tmp_path).stdout)
    states = sorted(r["state"] for r in status["rows"])
    assert status["counts"]["not_started"] == 2 and status["counts"]["failed"] == 0, status["rows"]
    assert states == ["missing", "not_started", "not_started"], status["rows"]


def test_resumed_bytes_count_as_done_so_the_eta_is_for_the_rest() -> None:
    """A file resumed from 600 of its 1000 bytes, 100 more fetched: 700 of 1000 done, the ETA is
    for the 300 left at the fetch rate (not for 900, as when only fetched bytes counted)."""
    from engine.model import Counters
    from engine.progress import InFlight, Reader, done_line, pace_line

    counters = Counters(files_total=2, bytes_total=2000, bytes_done=1000, files_done=1, bytes_fetched=1100, bytes_resumed=600)
    reader = Reader(counters, lambda: [InFlight("part-00001.parquet", 700, 1000)])
    reader.meter.rate = 100.0
    reader.meter._last = (time.monotonic(), counters.bytes_fetched)  # a sample just taken: the rate stands
    f = reader.read()
    assert (f.done, f.total, f.resumed) == (1700, 2000, 600) and f.eta == pytest.approx(3.0)
    assert done_line(f) == "85% · 1.7 KiB / 2.0 KiB · 1/2 files" and pace_line(f).endswith("ETA 0:03")


async def test_progress_events_without_a_terminal_carry_the_live_figures(make_fake, tmp_path: Path) -> None:
    """Not on a terminal: the periodic `progress` event says %, done of total, rate, elapsed, ETA,
    failures and the files in flight."""
    from conftest import settings_for
    from structlog.testing import capture_logs

    from engine.exporter import Exporter

    fp = make_fake(FakeConfig(seed=74, faults=Faults(bandwidth_bps=400e3), datasets=[
        DatasetSpec(batches=1, failed_batch=False, processing_batch=False, files_per_dataset_file=4, file_mb=0.3)]))
    async with fp:
        with capture_logs() as logs:
            run = await Exporter(settings_for(fp, tmp_path / "out", concurrency=2), handle_signals=False,
                                 progress_interval=0.3).execute()
    assert run.exit_code == EXIT_OK
    events = [e for e in logs if e["event"] == "progress"]
    assert events, "no progress event"
    keys = {"percent", "files_done", "files_total", "bytes_done", "bytes_total", "bytes_resumed", "rate_bytes_s",
            "elapsed_s", "eta_s", "files_failed", "files_in_flight", "in_flight"}
    assert all(keys <= set(e) for e in events), events[0]
    moving = [e for e in events if e["files_in_flight"]]
    assert moving and all(0 <= e["percent"] <= 100 for e in events)
    names = {e.name for e in fp.expected_files()}
    assert any(e["in_flight"] and set(e["in_flight"]) <= names for e in moving)
    assert [e["elapsed_s"] for e in events] == sorted(e["elapsed_s"] for e in events)
