"""Command line: `aep-export run|check|demo|verify|status|fake-platform`.

Exit codes (a contract): 0 everything exported and verified; 1 the run finished but something
failed (report.json says what); 2 usage or configuration error, nothing attempted;
3 credentials rejected; 4 the platform (gateway or IMS) cannot be reached; 5 another run holds
the output folder (or this shard of it), nothing attempted; 130/143 interrupted by SIGINT/SIGTERM
(rerun to resume).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import anyio

from . import logs
from .config import ENV_PREFIX, Settings, StoreURL, config_path_from_env, load_settings, looks_like_dataset_id
from .errors import ConfigError, RunFatal
from .exporter import Exporter
from .launch import restore_default_signals
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_SIGNAL, EXIT_UNREACHABLE, EXIT_USAGE
from .output.paths import prepare_out_dir
from .output.report import RunOutcome, report_path, summary_rows
from .shard import Shard, parse_shard
from .units import human_bytes

# The imports inside the command functions below are deliberate (start-up time): each command loads
# only what it uses (the fake's numpy, the plan, verify, status, the bucket reader).


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aep-export", description="Export Adobe Experience Platform datasets: fast, resumable, verified.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="export the datasets a config file lists")
    _add_run_flags(run)
    run.add_argument("--dry-run", action="store_true", help="print what would be exported (like `check`), download and write nothing")
    run.add_argument("--shard", type=_shard_arg, metavar="I/N",
                     help="export only the datasets and audiences of shard I of N (I from 0: $(JOB_COMPLETION_INDEX)/N); "
                          "shards may share one --out")
    check = sub.add_parser("check", help="check credentials and config against the platform; print what a run would export")
    _add_run_flags(check)

    demo = sub.add_parser("demo", help="export from an embedded fake platform, to see it work")
    demo.add_argument("--out", type=Path, default=Path("demo-export"), help="output directory (default: ./demo-export)")
    demo.add_argument("--concurrency", type=int, default=8)
    _add_output_flags(demo)

    verify = sub.add_parser("verify", help="re-check an export (a folder or s3://bucket/prefix) against its manifests")
    verify.add_argument("dir", help="the export's out_dir: a folder or s3://bucket/prefix")
    verify.add_argument("--deep", action="store_true", help="also read every parquet page (page checksums)")
    verify.add_argument("--log-level", default="warning")

    status = sub.add_parser("status", help="say per dataset and batch whether an export (all its shards) is complete")
    status.add_argument("dir", help="the export's out_dir: a folder or s3://bucket/prefix")
    status.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    status.add_argument("--log-level", default="warning")

    from .fake import cli as fake_cli

    fake_cli.add_parser(sub)
    return parser


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags `run` and `check` share: the same config sources, the same overrides."""
    p.add_argument("--config", "-c", type=Path, help="TOML file (see config.example.toml; default: $AEP_EXPORT_CONFIG); "
                                                      "env AEP_EXPORT_* and flags override it")
    p.add_argument("--out", help="output directory or s3://bucket/prefix (export.out_dir)")
    p.add_argument("--concurrency", type=int, help="parallel downloads (export.concurrency)")
    p.add_argument("--dataset", action="append", metavar="ID|NAME",
                   help="dataset to export: an id (24 hex digits) or a name (repeatable; replaces the config's datasets)")
    p.add_argument("--datasets-file", type=Path, metavar="FILE",
                   help="datasets to export, one id or name a line (# comments; adds to --dataset, replaces the config's)")
    p.add_argument("--org-id", help="platform.org_id")
    p.add_argument("--sandbox", help="platform.sandbox")
    p.add_argument("--url", help="platform.url (gateway)")
    _add_output_flags(p)


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    level = p.add_mutually_exclusive_group()
    level.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    level.add_argument("-v", "--verbose", action="store_true", help="debug logs: every request, retry and decision")
    level.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress line")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json-logs", dest="json_logs", action="store_true", default=None,
                     help="JSON lines (default when stdout is not a terminal)")
    fmt.add_argument("--console-logs", dest="json_logs", action="store_false", help="readable console logs")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")


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
    args = build_parser().parse_args(argv)
    if not (args.command == "run" and not args.dry_run):  # only an export has handlers of its own
        restore_default_signals()
    if args.command == "fake-platform":
        from .fake import cli as fake_cli

        return fake_cli.run(args)
    logs.configure(json_logs=getattr(args, "json_logs", None), level=_log_level(args))
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "status":
            return cmd_status(args)
        return cmd_verify(args)
    except ConfigError as exc:
        print(f"aep-export: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunFatal as exc:  # before the run could start (a run's own ends in its report)
        print(f"aep-export: {exc.label}: {exc}" if exc.label else f"aep-export: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_SIGNAL[signal.SIGINT]


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.dry_run:
        return check(settings)
    return export(settings, live=_live(args), shard=args.shard)


def cmd_check(args: argparse.Namespace) -> int:
    return check(settings_from_args(args))


def check(settings: Settings) -> int:
    """Resolve everything a run would export and print it; nothing is downloaded or written."""
    from .plan import format_plan, make_plan

    plans = anyio.run(make_plan, settings)
    for line in format_plan(plans):
        print(line)
    return EXIT_OK if all(p.ok for p in plans) else EXIT_FAILED


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    _put(overrides, ("export", "out_dir"), args.out)
    _put(overrides, ("export", "concurrency"), args.concurrency)
    _put(overrides, ("platform", "org_id"), args.org_id)
    _put(overrides, ("platform", "sandbox"), args.sandbox)
    _put(overrides, ("platform", "url"), args.url)
    named = list(args.dataset or []) + (_datasets_file(args.datasets_file) if args.datasets_file else [])
    if named:
        overrides["datasets"] = [{"id": d} if looks_like_dataset_id(d) else {"name": d} for d in named]
    config = args.config or config_path_from_env()
    if config is None and not any(k.startswith(ENV_PREFIX) for k in os.environ):
        raise ConfigError("no configuration: pass --config FILE (see config.example.toml), set AEP_EXPORT_CONFIG, "
                          "or set AEP_EXPORT_* variables")
    return load_settings(config, overrides)


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
    from .fake import FakeConfig, FakePlatform

    prepare_out_dir(args.out)
    say("aep-export demo: starting the embedded fake platform (generating parquet on first use)…")
    platform = FakePlatform.run_in_thread(FakeConfig.demo())
    try:
        settings = Settings.model_validate({
            "platform": {"url": platform.url, "org_id": platform.org_id, "sandbox": platform.sandbox},
            "auth": {"client_id": platform.client_id, "client_secret": platform.client_secret, "ims_url": platform.ims_url},
            "export": {"out_dir": args.out, "concurrency": args.concurrency},
            "datasets": [{"id": d} for d in platform.dataset_ids],
            "audiences": [{"export_job_id": j} for j in platform.export_job_ids],
        })
        say(f"fake platform at {platform.url}; exporting {len(platform.dataset_ids)} datasets "
            f"and {len(platform.export_job_ids)} audience export job(s) into {args.out}/")
        code = export(settings, live=_live(args))
        _demo_proof(platform, args.out)
        return code
    finally:
        platform.stop()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _demo_proof(platform: Any, out: Path) -> None:
    """Compare what landed on disk with what the fake platform serves, byte for byte (by SHA-256)."""
    from .checks.integrity import file_digest

    expected = platform.expected_files()
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
    from .output.verify import verify_export

    if "://" in args.dir:
        from .output.buckettree import on_bucket

        result = on_bucket(args.dir, lambda tree: verify_export(tree, deep=args.deep))
    elif not Path(args.dir).is_dir():
        raise ConfigError(f"{args.dir} is not a directory")
    else:
        result = verify_export(Path(args.dir), deep=args.deep)
    if result.batches == 0:
        raise ConfigError(f"no batch manifests (_manifest.json) under {args.dir}: is this an aep-export output directory?")
    for problem in result.problems or []:
        print(f"FAIL {problem}")
    verdict = "OK" if not result.problems else f"{len(result.problems)} problem(s)"
    print(f"{verdict}: {result.batches} batches, {result.files} files, {human_bytes(result.bytes)} checked")
    return EXIT_OK if not result.problems else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    from .output.status import export_status, render_status

    def report(tree: Any) -> tuple[bool, str | None]:
        status = export_status(tree)
        if not status.reports and not status.rows:
            return False, None
        return status.complete, json.dumps(status.as_dict(), indent=2) if args.json else render_status(status)

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


def export(settings: Settings, *, live: bool, shard: Shard | None = None) -> int:
    if isinstance(settings.export.out_dir, Path):  # a bucket is checked when the destination opens
        prepare_out_dir(settings.export.out_dir)
    exporter = Exporter(settings, live_progress=live, shard=shard)
    use_uvloop = settings.export.event_loop == "uvloop"
    if use_uvloop and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("export.event_loop = \"uvloop\" but uvloop is not installed (pip install uvloop)")
    run = anyio.run(exporter.execute, backend_options={"use_uvloop": use_uvloop})
    if run.exit_code == EXIT_UNREACHABLE and not run.batches():  # one clear line, no empty table
        print(f"aep-export: platform unreachable: {run.errors[0] if run.errors else ''}", file=sys.stderr)
        return run.exit_code
    print_summary(run, settings.export.out_dir)
    if run.report_error:
        print(f"aep-export: {run.status}; the report could not be written: {run.report_error}", file=sys.stderr)
    return run.exit_code


def print_summary(run: RunOutcome, out_dir: Path | StoreURL) -> None:
    """A plain table on stdout (readable in a terminal and in a container log alike)."""
    header = ("dataset", "batch", "status", "files", "bytes", "note")
    rows = [header, *summary_rows(run)]
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    print(f"aep-export: {run.status}")
    for i, row in enumerate(rows):
        cells = [cell.ljust(w) if j != 3 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths, strict=False))]
        print("  ".join([*cells, row[-1]]).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  ----")
    for error in run.errors:
        print(f"error: {error}")
    t = run.totals
    print(
        f"{t.get('files', 0)} files ({t.get('files_downloaded', 0)} downloaded, {t.get('files_reused', 0)} already verified), "
        f"{human_bytes(t.get('bytes', 0))}; {t.get('files_failed', 0)} failed; {t.get('retries', 0)} retries; "
        f"report: {'not written' if run.report_error else report_path(out_dir, run)}; exit {run.exit_code}"
    )


def _live(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() and not args.no_progress and not args.quiet


def _log_level(args: argparse.Namespace) -> str:
    if getattr(args, "verbose", False):
        return "debug"
    return "warning" if getattr(args, "quiet", False) else args.log_level


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


def _put(d: dict[str, Any], path: tuple[str, str], value: Any) -> None:
    if value is not None:
        d.setdefault(path[0], {})[path[1]] = value


if __name__ == "__main__":
    sys.exit(main())
