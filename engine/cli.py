"""Command line: `aep-export run|check|list|demo|verify|status|fake-platform`.

Exit codes (a contract): 0 everything exported and verified; 1 the run finished but something
failed (_report.json says what); 2 usage or configuration error, nothing attempted;
3 credentials rejected; 4 the platform (gateway or IMS) or the object store cannot be reached;
5 another run holds the output folder (or this shard of it), nothing attempted; 130/143
interrupted by SIGINT/SIGTERM (rerun to resume).

This module imports only the standard library at the top: the parser is built, and `--help` and
usage errors answered, before the engine (aiohttp, pydantic, structlog: ~0.5 s) is imported.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .early import restore_default_signals
from .errors import ConfigError, ExportError, RunFatal, StoreError
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_SIGNAL
from .shard import Shard, parse_shard

# The imports inside the command functions below are deliberate (start-up time): each command loads
# only what it uses (the fake's numpy, the plan, verify, status, the bucket reader).

if TYPE_CHECKING:
    from .config import Settings
    from .output.report import RunOutcome
    from .platform.early_token import EarlyToken

SAID_AS = {"config": "configuration error", "credentials": "credentials rejected", "unreachable": "platform unreachable",
           "store": "object store error", "busy": "output folder busy", "disk_full": "disk full"}
JSON_HELP = "one JSON document on stdout instead of text (schema aep-export/{}/1; README: JSON results)"


class _Parser(argparse.ArgumentParser):
    """No abbreviated long options, in every sub-command too (`run --json` was taken for `--json-logs`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aep-export", description="Export Adobe Experience Platform datasets: fast, resumable, verified.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    _add_global_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # none: the help (main)

    run = sub.add_parser("run", help="export the datasets a config file lists")
    _add_run_flags(run)
    run.add_argument("--dry-run", action="store_true", help="print what would be exported (like `check`), download and write nothing")
    run.add_argument("--shard", type=_shard_arg, metavar="I/N",
                     help="export only the datasets and audiences of shard I of N (I from 0: $(JOB_COMPLETION_INDEX)/N); "
                          "shards may share one --out")
    run.add_argument("--json", action="store_true", help=JSON_HELP.format("run") + "; with --dry-run, check's")
    _add_operating_flags(run)
    check = sub.add_parser("check", help="check credentials and config against the platform; print what a run would export")
    _add_run_flags(check)
    check.add_argument("--json", action="store_true", help=JSON_HELP.format("check"))

    listing = sub.add_parser("list", help="list the sandbox's datasets: id, name, created, last successful batch and its size")
    _add_platform_flags(listing)
    listing.add_argument("--name", metavar="TEXT", help="only datasets whose name contains TEXT (any case)")
    listing.add_argument("--json", action="store_true", help=JSON_HELP.format("list"))
    _add_global_flags(listing, log_level="warning")

    demo = sub.add_parser("demo", help="export from an embedded fake platform, to see it work")
    demo.add_argument("--out", type=Path, default=Path("demo-export"), help="output directory (default: ./demo-export)")
    demo.add_argument("--concurrency", type=int, default=8)
    _add_output_flags(demo)

    verify = sub.add_parser("verify", help="re-check an export (a folder or s3://bucket/prefix) against its manifests")
    verify.add_argument("dir", help="the export's out_dir: a folder or s3://bucket/prefix")
    verify.add_argument("--deep", action="store_true", help="also read every parquet page (page checksums)")
    verify.add_argument("--json", action="store_true", help=JSON_HELP.format("verify"))
    _add_global_flags(verify, log_level="warning")

    status = sub.add_parser("status", help="say per dataset and batch whether an export (all its shards) is complete")
    status.add_argument("dir", help="the export's out_dir: a folder or s3://bucket/prefix")
    status.add_argument("--json", action="store_true", help=JSON_HELP.format("status"))
    _add_global_flags(status, log_level="warning")

    from .fake import cli as fake_cli

    _add_global_flags(fake_cli.add_parser(sub))
    return parser


def _add_platform_flags(p: argparse.ArgumentParser) -> None:
    """Where the platform is and who asks: every command that talks to it."""
    p.add_argument("--config", "-c", type=Path, help="TOML file (see config.example.toml; default: $AEP_EXPORT_CONFIG); "
                                                      "env AEP_EXPORT_* and flags override it")
    p.add_argument("--org-id", help="platform.org_id")
    p.add_argument("--sandbox", help="platform.sandbox")
    p.add_argument("--url", help="platform.url (gateway)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags `run` and `check` share: the same config sources, the same overrides."""
    _add_platform_flags(p)
    p.add_argument("--out", help="output directory or s3://bucket/prefix (export.out_dir)")
    p.add_argument("--concurrency", type=int, help="parallel downloads (export.concurrency)")
    p.add_argument("--layout", help="plain ({dataset}/{batch}/…, the default) or hive (dataset=…/batch=…/…) (export.layout)")
    p.add_argument("--bwlimit", metavar="RATE", help="bytes/s over all connections, e.g. 20M, 512K, 1.5GiB (export.bwlimit)")
    p.add_argument("--tps-limit", type=float, metavar="N", help="requests/s to the gateway (export.tps_limit)")
    p.add_argument("--tps-burst", type=int, metavar="N", help="requests --tps-limit lets through at once (export.tps_burst)")
    p.add_argument("--dataset", action="append", metavar="ID|NAME",
                   help="dataset to export: an id (24 hex digits) or a name (repeatable; replaces the config's datasets)")
    p.add_argument("--datasets-file", type=Path, metavar="FILE",
                   help="datasets to export, one id or name a line (# comments; adds to --dataset, replaces the config's)")
    p.add_argument("--via", choices=("data-access", "dlz"),
                   help="the source of the --dataset/--datasets-file entries: the Data Access API (default) or a "
                        "dataset export run into the Data Landing Zone")
    _add_output_flags(p)


def _add_operating_flags(p: argparse.ArgumentParser) -> None:
    """Running as a batch Job (README: Running it in production): metrics and completion hooks."""
    p.add_argument("--metrics-addr", metavar="HOST:PORT", help="serve Prometheus metrics on http://HOST:PORT/metrics while the run "
                                                               "lasts (metrics.addr)")
    p.add_argument("--metrics-push", metavar="URL", help="push the metrics to this Pushgateway periodically and at the end, "
                                                         "grouped by job and shard (metrics.push)")
    p.add_argument("--on-batch-complete", metavar="CMD", help="run CMD (no shell: write sh -c '…' for one) for each batch "
                                                              "exported and verified, told about it in AEP_EXPORT_HOOK_* "
                                                              "variables (hooks.on_batch_complete)")
    p.add_argument("--on-batch-failed", metavar="CMD", help="the same for each batch that failed (hooks.on_batch_failed)")
    p.add_argument("--hook-timeout", type=float, metavar="SECONDS", help="kill a hook running longer (hooks.timeout)")


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    _add_global_flags(p, log_level="info")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")


def _add_global_flags(p: argparse.ArgumentParser, *, top: bool = False, log_level: str | None = None) -> None:
    """-v, -q, --json-logs and --console-logs, before the command or after it. On a command's parser
    they have no default (SUPPRESS): argparse copies a command's defaults over what was given
    before the command, which would undo `aep-export -q run`."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    level = p.add_mutually_exclusive_group()
    if log_level is not None:
        level.add_argument("--log-level", default=log_level, choices=["debug", "info", "warning", "error"])
    level.add_argument("-v", "--verbose", action="store_true", default=default(False), help="debug logs: every request, retry and decision")
    level.add_argument("-q", "--quiet", action="store_true", default=default(False), help="warnings and errors only, no progress line")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json-logs", dest="json_logs", action="store_true", default=default(None),
                     help="JSON log lines (default when stderr is not a terminal)")
    fmt.add_argument("--console-logs", dest="json_logs", action="store_false", default=default(None), help="readable console logs")


def entry() -> NoReturn:
    """Console entry point: run, flush and leave without tearing the interpreter down.

    By the time main() returns every file is closed and fsynced; what is left is freeing the
    objects of ~400 modules, ~0.1 s measured (strace: from the summary's last write to
    exit_group), which short runs and schedulers polling exit codes need not wait for.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `aep-export` alone: the help, and the usage error's exit code
        parser.print_help()
        return 2
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    if not (args.command == "run" and not args.dry_run):  # only an export has handlers of its own
        restore_default_signals()
        collect_again()  # only an export's start-up is timed to its first request (export() does it there)
    if args.command == "fake-platform":
        from .fake import cli as fake_cli

        return fake_cli.run(args)
    if not (args.command == "run" and not args.dry_run):
        configure_logs(args)  # an export configures them once its token request is on its way (export())
    try:
        return _dispatch(args)
    except (ConfigError, RunFatal, StoreError) as exc:  # before the run could start (a run's own ends in its report)
        return _stopped(args, exc)
    except KeyboardInterrupt:
        return EXIT_SIGNAL[signal.SIGINT]


def configure_logs(args: argparse.Namespace) -> None:
    from . import logs  # structlog (and the asyncio it imports): after an export's token request has left

    logs.configure(json_logs=args.json_logs, level=_log_level(args))


def collect_again() -> None:
    """Garbage collection on again after start-up (engine/launch.py turned it off): what start-up
    built (modules, classes, settings) lives as long as the run, so it is frozen out of every later
    collection rather than scanned by each. (Frozen without a collection first: the ~2,000 objects
    of start-up's cycles, a few hundred KiB, stay; a full collection would cost what was saved.)"""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _dispatch(args: argparse.Namespace) -> int:
    commands = {"run": cmd_run, "check": cmd_check, "list": cmd_list, "demo": cmd_demo, "status": cmd_status, "verify": cmd_verify}
    return commands[args.command](args)


def _stopped(args: argparse.Namespace, exc: ExportError) -> int:
    """A command that could not run: one line on stderr (and its --json document), the kind's exit code."""
    from .outcome import EXIT_FAILED, EXIT_USAGE

    code = exc.exit_code if isinstance(exc, RunFatal) else EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    say_stopped(exc.kind, str(exc))
    if getattr(args, "json", False):
        from .errors import Failure
        from .results import document, emit

        emit(document(_schema_command(args), code, [Failure(exc.kind, str(exc))]))
    return code


def say_stopped(kind: str, message: str) -> None:
    """The one line a command that could not run leaves on stderr (the same for `run` and `check`)."""
    print(f"aep-export: {SAID_AS.get(kind, kind)}: {message}", file=sys.stderr)


def _schema_command(args: argparse.Namespace) -> str:
    return "check" if args.command == "run" and args.dry_run else args.command


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.dry_run:
        return check(settings, as_json=args.json, shard=str(args.shard) if args.shard else None)
    run = export(settings, live=_live(args), shard=args.shard, logs_of=args)
    return show_run(run, settings.export.out_dir, as_json=args.json)


def cmd_check(args: argparse.Namespace) -> int:
    return check(settings_from_args(args), as_json=args.json)


def check(settings: Settings, *, as_json: bool = False, shard: str | None = None) -> int:
    """Resolve everything a run would export and print it; nothing is downloaded or written. An
    out_dir the run would refuse for its layout is refused the same way (ConfigError: exit 2)."""
    import anyio

    from .outcome import EXIT_FAILED, EXIT_OK
    from .plan import format_plan, make_plan

    plans = anyio.run(make_plan, settings, shard)
    code = EXIT_OK if all(p.ok for p in plans) else EXIT_FAILED
    if as_json:
        from .results import check_document, emit

        emit(check_document(plans, code, destination=str(settings.export.out_dir), layout=settings.export.layout))
    else:
        for line in format_plan(plans, settings.export.out_dir):
            print(line)
    return code


def cmd_list(args: argparse.Namespace) -> int:
    """The sandbox's datasets, by name; with --name, those whose name contains it."""
    import anyio

    from .platform.listing import list_datasets
    from .results import emit, iso, list_document
    from .units import human_bytes

    settings = settings_from_args(args, entries_required=False)
    rows = anyio.run(list_datasets, settings, args.name)
    if args.json:
        emit(list_document(rows, settings.platform.sandbox, args.name))
        return 0
    table = [("id", "name", "created", "last successful batch", "size")]
    for r in rows:
        size = "-" if r.batch_id is None else human_bytes(r.bytes) if r.bytes is not None else "?"
        batch = r.batch_id or (f"? ({r.error})" if r.error else "-")
        table.append((r.id, r.name or "-", iso(r.created) or "-", batch, size))
    print_table(table)
    which = f" whose name contains {args.name!r}" if args.name else ""
    print(f"{len(rows)} dataset{'' if len(rows) == 1 else 's'}{which} in sandbox {settings.platform.sandbox}")
    return 0


# The flags that set a setting: flag -> (dest in the arguments, section, key).
FLAG_SETTINGS = {"--out": ("out", "export", "out_dir"), "--concurrency": ("concurrency", "export", "concurrency"),
                 "--layout": ("layout", "export", "layout"),
                 "--org-id": ("org_id", "platform", "org_id"), "--sandbox": ("sandbox", "platform", "sandbox"),
                 "--url": ("url", "platform", "url"),
                 "--metrics-addr": ("metrics_addr", "metrics", "addr"), "--metrics-push": ("metrics_push", "metrics", "push"),
                 "--on-batch-complete": ("on_batch_complete", "hooks", "on_batch_complete"),
                 "--on-batch-failed": ("on_batch_failed", "hooks", "on_batch_failed"),
                 "--hook-timeout": ("hook_timeout", "hooks", "timeout"),
                 "--bwlimit": ("bwlimit", "export", "bwlimit"),
                 "--tps-limit": ("tps_limit", "export", "tps_limit"), "--tps-burst": ("tps_burst", "export", "tps_burst")}


def settings_from_args(args: argparse.Namespace, *, entries_required: bool = True) -> Settings:
    from .config import ENV_PREFIX, config_path_from_env, load_settings, looks_like_dataset_id

    overrides = flag_settings(args)
    named = list(getattr(args, "dataset", None) or [])
    if getattr(args, "datasets_file", None):
        named += _datasets_file(args.datasets_file)
    if getattr(args, "via", None) and not named:
        raise ConfigError("--via chooses the source of --dataset and --datasets-file entries; in a config file, "
                          "set via = \"dlz\" in a [[datasets]] entry")
    if named:
        via = {"via": args.via} if getattr(args, "via", None) else {}
        overrides["datasets"] = [{"id": d, **via} if looks_like_dataset_id(d) else {"name": d, **via} for d in named]
    config = args.config or config_path_from_env()
    if config is None and not any(k.startswith(ENV_PREFIX) for k in os.environ):
        raise ConfigError("no configuration: pass --config FILE (see config.example.toml), set AEP_EXPORT_CONFIG, "
                          "or set AEP_EXPORT_* variables")
    return load_settings(config, overrides, entries_required=entries_required)


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags give, each checked on its own first, so that a bad value is said to
    be the flag's (not the config file's, where the message would send the user looking)."""
    overrides: dict[str, Any] = {}
    for flag, (dest, section, key) in FLAG_SETTINGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            _check_flag(flag, section, key, value)
            overrides.setdefault(section, {})[key] = value
    return overrides


def _check_flag(flag: str, section: str, key: str, value: Any) -> None:
    from pydantic import ValidationError

    from .config import Settings

    try:
        Settings.model_fields[section].annotation.model_validate({key: value})  # type: ignore[union-attr]
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            if tuple(err["loc"]) == (key,):  # the other fields of the section are not given here
                raise ConfigError(f"{flag} {value}: {err['msg'].removeprefix('Value error, ')} (the flag sets {section}.{key})") from None


def _datasets_file(path: Path) -> list[str]:
    """One dataset id or name a line; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--datasets-file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--datasets-file {path} cannot be read: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    values = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not values:
        raise ConfigError(f"--datasets-file {path} lists no dataset (one id or name a line)")
    return values


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import Settings
    from .fake import FakeConfig, FakePlatform
    from .output.paths import prepare_out_dir

    flag_settings(args)  # --concurrency 0: the flag's error, before the platform starts
    prepare_out_dir(args.out)
    say("aep-export demo: starting the embedded fake platform (generating parquet on first use)…")
    platform = FakePlatform.run_in_thread(FakeConfig.demo())
    try:
        via = {platform.dataset_ids[0]: "dlz"}  # one dataset through each source: the first as a DLZ export run
        settings = Settings.model_validate({
            "platform": {"url": platform.url, "org_id": platform.org_id, "sandbox": platform.sandbox},
            "auth": {"client_id": platform.client_id, "client_secret": platform.client_secret, "ims_url": platform.ims_url},
            "export": {"out_dir": args.out, "concurrency": args.concurrency},
            "datasets": [{"id": d, "via": via.get(d, "data-access")} for d in platform.dataset_ids],
            "audiences": [{"export_job_id": j} for j in platform.export_job_ids],
        })
        say(f"fake platform at {platform.url}; exporting {len(platform.dataset_ids)} datasets ({len(via)} through a "
            f"Data Landing Zone export run, the others through Data Access) and {len(platform.export_job_ids)} audience "
            f"export job(s) into {args.out}/")
        code = show_run(export(settings, live=_live(args)), settings.export.out_dir)
        _demo_proof(platform, args.out)
        return code
    finally:
        platform.stop()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _demo_proof(platform: Any, out: Path) -> None:
    """Compare what landed on disk with what the fake platform serves, byte for byte (by SHA-256)."""
    from .checks.integrity import file_digest

    dlz = platform.dlz_expected_files()
    expected = [e for e in platform.expected_files() if e.dataset_id not in {d.dataset_id for d in dlz}] + dlz
    mismatched = [e for e in expected if e.name.endswith(".parquet") and _exported_digest(out, e, file_digest) != e.sha256]
    total = sum(1 for e in expected if e.name.endswith(".parquet"))
    if mismatched:
        print(f"{len(mismatched)} of {total} files DIFFER from the source")
    else:
        print(f"all {total} files are byte-identical to the source; check any batch with: "
              f"cd {out}/<dataset>/<batch> && sha256sum -c _SHA256SUMS")


def _exported_digest(out: Path, e: Any, file_digest: Any) -> str | None:
    path = out / e.dataset_id / e.batch_id / e.dataset_file_id / e.name
    return file_digest(path).hex() if path.is_file() else None


def cmd_verify(args: argparse.Namespace) -> int:
    from .output.status import export_layout
    from .output.verify import VerifyResult, verify_export
    from .units import human_bytes

    def checked(tree: Any) -> tuple[VerifyResult, str]:
        return verify_export(tree, deep=args.deep), export_layout(tree)

    if "://" in args.dir:
        from .output.buckettree import on_bucket

        result, layout = on_bucket(args.dir, checked)
    elif not Path(args.dir).is_dir():
        raise ConfigError(f"{args.dir} is not a directory")
    else:
        result, layout = checked(Path(args.dir))
    if result.batches == 0:
        raise ConfigError(f"no batch manifests (_manifest.json) under {args.dir}: is this an aep-export output directory?")
    code = 0 if not result.problems else 1
    if args.json:
        from .results import emit, verify_document

        emit(verify_document(result, args.dir, code, layout))
        return code
    for problem in result.problems or []:
        print(f"FAIL {problem}")
    verdict = "OK" if not result.problems else f"{len(result.problems)} problem(s)"
    print(f"{verdict}: {result.batches} batches, {result.files} files, {human_bytes(result.bytes)} checked")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from .output.status import export_status, render_status
    from .results import status_document

    def report(tree: Any) -> tuple[bool, str | None]:
        status = export_status(tree)
        if not status.reports and not status.rows:
            return False, None
        if args.json:
            return status.complete, json.dumps(status_document(status, 0 if status.complete else 1), indent=2)
        return status.complete, render_status(status)

    if "://" in args.dir:
        from .output.buckettree import on_bucket

        complete, text = on_bucket(args.dir, report)  # read while the bucket is open
    elif not Path(args.dir).is_dir():
        raise ConfigError(f"{args.dir} is not a directory")
    else:
        complete, text = report(Path(args.dir))
    if text is None:
        raise ConfigError(f"no run report (report*.json) or batch manifest under {args.dir}: is this an aep-export output directory?")
    print(text)
    return EXIT_OK if complete else EXIT_FAILED


def export(settings: Settings, *, live: bool, shard: Shard | None = None, logs_of: argparse.Namespace | None = None) -> RunOutcome:
    """`logs_of`: the arguments whose logs are configured here, right after the token request has
    left (start-up time: `run` has logged nothing before; `demo` configured them already)."""
    import importlib.util

    from .output.paths import prepare_out_dir

    if isinstance(settings.export.out_dir, Path):  # a bucket is checked when the destination opens
        prepare_out_dir(settings.export.out_dir)
    use_uvloop = settings.export.event_loop == "uvloop"
    if use_uvloop and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("export.event_loop = \"uvloop\" but uvloop is not installed (pip install uvloop)")
    early_token = _early_token(settings, shard)  # after the checks above, before the imports below
    if logs_of is not None:
        configure_logs(logs_of)

    import anyio

    from .exporter import Exporter

    exporter = Exporter(settings, live_progress=live, shard=shard, early_token=early_token)
    collect_again()  # the run's modules are in
    return anyio.run(exporter.execute, backend_options={"use_uvloop": use_uvloop})


def _early_token(settings: Settings, shard: Shard | None) -> EarlyToken | None:
    """Start-up time (issue #20): the run's IMS token requested now, its round trip overlapping the
    imports of aiohttp and the exporter (engine/platform/early_token.py: when its answer is used).
    Only for a run the exporter will not refuse before its own token request (exit 2 and 5 say
    "nothing attempted"): another run holds the folder, or it holds the other layout; and not for a
    bucket, which is checked only once it is open."""
    from .output.earlier import FolderReports, layout_refusal
    from .output.runlock import held_by_another
    from .platform.early_token import start_early_token

    ex, shard_name = settings.export, str(shard) if shard else None
    if not isinstance(ex.out_dir, Path):  # a bucket is checked once it is open: a run refused there sends nothing either
        return None
    if held_by_another(ex.out_dir, shard_name) or layout_refusal(FolderReports(ex.out_dir), ex.layout, shard_name):
        return None  # refused later (exit 5, exit 2): nothing attempted
    return start_early_token(settings.auth)


def show_run(run: RunOutcome, out_dir: Any, *, as_json: bool = False) -> int:
    """The run's outcome on stdout (the table, or the --json document); a run that could not start
    (credentials rejected, platform unreachable, nothing exported) is one line on stderr, as `check` says it."""
    from .outcome import EXIT_CREDENTIALS, EXIT_UNREACHABLE
    from .output.report import report_path

    if as_json:
        from .results import emit, run_document

        emit(run_document(run, report_path(out_dir, run)))
    if run.exit_code in (EXIT_CREDENTIALS, EXIT_UNREACHABLE) and not run.batches():
        error = run.errors[0] if run.errors else ""
        say_stopped(getattr(error, "kind", "unreachable" if run.exit_code == EXIT_UNREACHABLE else "credentials"), str(error))
    elif not as_json:
        print_summary(run, out_dir)
    if run.report_error:
        print(f"aep-export: {run.status}; the report could not be written: {run.report_error}", file=sys.stderr)
    return run.exit_code


def print_summary(run: RunOutcome, out_dir: Any) -> None:
    """A plain table on stdout (readable in a terminal and in a container log alike)."""
    from .output.report import report_path, summary_rows
    from .units import human_bytes

    print(f"aep-export: {run.status}")
    print_table([("dataset", "name", "batch", "status", "files", "bytes", "note"), *summary_rows(run)], right=frozenset({4}))
    for error in run.errors:
        print(f"error: {error}")
    t = run.totals
    failed = t.get("files_failed", 0) - t.get("files_interrupted", 0)  # an interrupted file is kept, not failed
    print(
        f"{t.get('files', 0)} files ({t.get('files_downloaded', 0)} downloaded, {t.get('files_reused', 0)} already verified), "
        f"{human_bytes(t.get('bytes', 0))}; {_elapsed_and_rate(run)}; {failed} failed; {t.get('retries', 0)} retries; "
        f"report: {'not written' if run.report_error else report_path(out_dir, run)}; exit {run.exit_code}"
    )
    if t.get("hooks_failed"):
        print(f"{t['hooks_failed']} of {t['hooks']} hooks failed (each batch's `hook` in the report says how)")


def _elapsed_and_rate(run: RunOutcome) -> str:
    """'1.3 MiB fetched in 4.2 s, 310.5 KiB/s on average'; an interrupted run first says what it kept."""
    import time

    from .units import human_bytes

    t = run.totals
    elapsed = max(time.monotonic() - run.started, 1e-3)
    fetched = t.get("bytes_fetched", 0)
    said = f"{human_bytes(fetched)} fetched in {elapsed:.1f} s, {human_bytes(fetched / elapsed)}/s on average"
    if run.status != "interrupted":
        return said
    unfinished = t.get("files_unfinished", 0)
    held = f" and {human_bytes(t.get('bytes_unfinished', 0))} in {unfinished} unfinished file{'' if unfinished == 1 else 's'}"
    files = t.get("files", 0)
    return (f"interrupted after {elapsed:.1f} s: kept {files} verified file{'' if files == 1 else 's'} "
            f"({human_bytes(t.get('bytes', 0))}){held if unfinished else ''}, rerun to resume; {said}")


def print_table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> None:
    """Rows under their header and a rule, columns as wide as their widest cell (at most 60); the
    last column is left as it is. `right`: the columns aligned to the right (numbers)."""
    header = rows[0]
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    for i, row in enumerate(rows):
        cells = [cell.rjust(w) if j in right else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths, strict=False))]
        print("  ".join([*cells, row[-1]]).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  ----")


def _live(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() and not args.no_progress and not args.quiet


def _log_level(args: argparse.Namespace) -> str:
    if args.verbose:
        return "debug"
    return "warning" if args.quiet else args.log_level


def _shard_arg(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Version(argparse.Action):
    """`--version` after other arguments (alone, engine/launch.py answers it before any import)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> None:
        from . import __version__

        print(f"aep-export {__version__} (Python {sys.version.split()[0]})")
        parser.exit()


if __name__ == "__main__":
    sys.exit(main())
