"""Command line: parses arguments and calls the layers; no detection logic lives here.

Exit codes (docs/cli.md):
  0  the run completed, with or without alerts (skipped records are reported, not fatal)
  1  internal error (a bug; ``--debug`` shows the traceback)
  2  usage error: bad arguments, a path that does not exist, a bad configuration or CIDR
  3  nothing could be read: every input was unreadable or in no supported format
  4  ``rules validate`` found problems (for CI)
"""
from __future__ import annotations

import argparse
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

from rpcwatch import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_NO_INPUT, EXIT_FINDINGS = 0, 1, 2, 3, 4


class UsageError(Exception):
    """A problem with what the user asked for; exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpcwatch",
        description="Find RPC (TCP/135, DCE/RPC) reached from the internet in Zeek, Windows and PCAP logs.")
    parser.add_argument("--version", action="version", version=f"rpcwatch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    hunt = commands.add_parser("hunt", help="run Sigma rules over logs; one alert per matched record",
                               description="Run the bundled Sigma rules (and --rules) over logs.")
    hunt.add_argument("paths", nargs="+", metavar="PATH",
                      help="log files or directories (recursive); '-' reads standard input")
    _add_rule_options(hunt)
    hunt.add_argument("--format", choices=("table", "jsonl", "csv"),
                      help="alert output (default: table on a terminal, else jsonl)")
    hunt.add_argument("-o", "--output", metavar="FILE", help="write alerts to FILE instead of standard output")
    hunt.add_argument("--no-prefilter", action="store_true",
                      help="parse every record (the literal prefilter skips lines no rule can match)")
    hunt.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    hunt.add_argument("-q", "--quiet", action="store_true", help="no run summary on standard error")
    hunt.add_argument("-v", "--verbose", action="store_true", help="list where each skipped record was")
    hunt.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                      help="where the compiled rules run (default: duckdb, embedded)")
    hunt.add_argument("--master", metavar="URL",
                      help="Spark master for --engine spark (default: local[2], or the session spark-submit made)")
    hunt.set_defaults(handler=_hunt)

    export = commands.add_parser("export-parquet", help="logs to a Parquet dataset partitioned by table and date",
                                 description="Read logs with rpcwatch's readers and write them as Parquet, "
                                             "partitioned by table and day, for a cluster to hunt in.")
    export.add_argument("paths", nargs="+", metavar="PATH", help="log files or directories; '-' reads standard input")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset directory (created)")
    export.set_defaults(handler=_export_parquet)

    rules = commands.add_parser("rules", help="list, validate Sigma rules")
    rule_commands = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    rule_commands.required = True
    listing = rule_commands.add_parser("list", help="every rule with its status: runnable, or why not")
    _add_rule_options(listing)
    listing.add_argument("--format", choices=("table", "json"), default=None,
                         help="default: table on a terminal, else json")
    listing.set_defaults(handler=_rules_list)
    validate = rule_commands.add_parser("validate", help="check rules with pySigma's validators (exit 4 on findings)")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="rule files or directories")
    validate.add_argument("--format", choices=("table", "json"), default=None)
    validate.set_defaults(handler=_rules_validate)
    from rpcwatch.sigma.convert import TARGETS

    conversion = rule_commands.add_parser(
        "convert", help="rules as SIEM queries, with the configured internal networks",
        description="Convert the bundled rules and RULES to a SIEM's query language. Targets: "
                    + "; ".join(f"{t.name} ({t.description}; pipelines: {', '.join(t.pipelines)})"
                                for t in TARGETS.values()))
    conversion.add_argument("rules", nargs="*", metavar="RULES", help="Sigma rule files or directories")
    conversion.add_argument("--target", "-t", required=True, choices=sorted(TARGETS))
    conversion.add_argument("--pipeline", "-p", help="field mapping (default: the target's first)")
    conversion.add_argument("--no-bundled-rules", action="store_true", help="convert only RULES")
    conversion.add_argument("--internal", action="append", default=[], metavar="CIDR",
                            help="an internal network (repeatable; replaces the configured list)")
    conversion.add_argument("--config", metavar="FILE", help="configuration file (default: ./rpcwatch.toml)")
    conversion.add_argument("-o", "--output", metavar="FILE", help="write the queries to FILE")
    conversion.set_defaults(handler=_rules_convert)
    return parser


def _add_rule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", action="append", default=[], metavar="PATH",
                        help="Sigma rule file or directory to run as well (repeatable)")
    parser.add_argument("--filters", action="append", default=[], metavar="PATH",
                        help="Sigma filter documents that tune rules for this environment (repeatable)")
    parser.add_argument("--no-bundled-rules", action="store_true",
                        help="run only the rules given with --rules")
    parser.add_argument("--internal", action="append", default=[], metavar="CIDR",
                        help="an internal network (repeatable; replaces the configured list)")
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: ./rpcwatch.toml)")


def _config(args):
    from rpcwatch.config import ConfigError, load_config

    try:
        return load_config(args.config).with_internal(args.internal)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _hunt(args) -> int:
    from rpcwatch.hunt import Hunt, plan_hunt
    from rpcwatch.outputs import WRITERS
    from rpcwatch.outputs.summary import print_summary
    from rpcwatch.sources import InputError, expand_inputs
    from rpcwatch.sources.scan import prepare_workers

    config = _config(args)
    _check_rule_paths(args)
    plan = plan_hunt(args.rules, config, bundled=not args.no_bundled_rules, prefilter=not args.no_prefilter,
                     filters=args.filters)
    if not plan.rule_set.rules:
        raise UsageError("no runnable rules" + "".join(f"\n  {p.path}: {p.reason}" for p in plan.problems))
    local = [path for path in args.paths if args.engine != "spark" or not _for_spark(path)]
    try:
        inputs = list(expand_inputs(local)) if local else []
    except InputError as exc:
        raise UsageError(str(exc)) from None
    prepare_workers(inputs)  # before the engine starts threads
    engine = _engine(args)
    uri_logs, datasets = _spark_inputs(engine, [path for path in args.paths if path not in local])
    inputs += uri_logs
    output_format = args.format or ("table" if sys.stdout.isatty() and not args.output else "jsonl")
    with ExitStack() as stack:
        stream = stack.enter_context(open(args.output, "w", encoding="utf-8", newline="")) \
            if args.output else sys.stdout
        advance = stack.enter_context(_progress(inputs, enabled=not args.no_progress and sys.stderr.isatty()))
        hunt = Hunt(inputs, plan, engine, on_bytes=advance, sources=_dataset_scans(engine, datasets, plan))
        WRITERS[output_format](hunt, stream)
    if not args.quiet:
        print_summary(hunt.report, plan, sys.stderr, verbose=args.verbose)
    if hunt.report.stats and all(s.error for s in hunt.report.stats):
        return EXIT_NO_INPUT
    return EXIT_OK


def _for_spark(path: str) -> bool:
    """URIs and local export-parquet datasets go through Spark (--engine spark)."""
    from rpcwatch.engines.spark_scan import is_dataset, is_uri

    return is_uri(path) or is_dataset(path)


def _spark_inputs(engine, paths: list[str]) -> tuple[list, list[str]]:
    """Log files at URIs (read through Hadoop by rpcwatch's readers), and the export-parquet
    datasets Spark scans itself."""
    from rpcwatch.engines.spark_scan import is_dataset, uri_inputs
    from rpcwatch.sources import InputError

    datasets = [path for path in paths if is_dataset(path, engine.session)]
    try:
        logs = [item for path in paths if path not in datasets for item in uri_inputs(engine.session, path)]
    except InputError as exc:
        raise UsageError(str(exc)) from None
    return logs, datasets


def _dataset_scans(engine, datasets: list[str], plan) -> list:
    if not datasets:
        return []
    from rpcwatch.engines.spark_scan import SparkDatasetScan

    return [SparkDatasetScan(engine, datasets, plan.by_table)]


def _engine(args):
    if args.engine == "duckdb":
        if args.master:
            raise UsageError("--master is for --engine spark")
        from rpcwatch.engines.duckdb import DuckDBEngine

        return DuckDBEngine()
    from rpcwatch.engines.spark import SparkEngine, SparkUnavailable

    try:
        return SparkEngine(master=args.master)
    except SparkUnavailable as exc:
        raise UsageError(str(exc)) from None


def _export_parquet(args) -> int:
    from rpcwatch.outputs.parquet import export_parquet
    from rpcwatch.sources import InputError, expand_inputs

    try:
        inputs = list(expand_inputs(args.paths))
    except InputError as exc:
        raise UsageError(str(exc)) from None
    export = export_parquet(inputs, Path(args.output))
    for stats in export.stats:
        for problem in ([stats.error] if stats.error else []) + stats.lost + [
                f"{count} records skipped: {reason}" for reason, count in stats.skipped.items()]:
            print(f"rpcwatch: {stats.path}: {problem}", file=sys.stderr)
    print(f"{export.rows} rows in {export.files} files under {args.output}", file=sys.stderr)
    return EXIT_NO_INPUT if export.stats and all(s.error for s in export.stats) else EXIT_OK


def _rules_convert(args) -> int:
    from rpcwatch.outputs.conversion import write_conversion
    from rpcwatch.sigma.convert import convert

    for path in args.rules:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file or directory")
    try:
        result = convert(args.rules, args.target, args.pipeline, _config(args), bundled=not args.no_bundled_rules)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with ExitStack() as stack:
        stream = stack.enter_context(open(args.output, "w", encoding="utf-8")) if args.output else sys.stdout
        write_conversion(result, stream)
    for item in result.conversions:
        if item.problem:
            print(f"rpcwatch: not converted: {item.title}: {item.problem}", file=sys.stderr)
    return EXIT_OK if any(item.queries for item in result.conversions) else EXIT_USAGE


def _check_rule_paths(args) -> None:
    for option, paths in (("--rules", args.rules), ("--filters", args.filters)):
        for path in paths:
            if not Path(path).exists():
                raise UsageError(f"{option} {path}: no such file or directory")


def _rules_list(args) -> int:
    from rpcwatch.hunt import plan_hunt
    from rpcwatch.outputs.rules import write_rule_list

    _check_rule_paths(args)
    plan = plan_hunt(args.rules, _config(args), bundled=not args.no_bundled_rules, filters=args.filters)
    write_rule_list(plan, sys.stdout, args.format or ("table" if sys.stdout.isatty() else "json"))
    return EXIT_OK


def _rules_validate(args) -> int:
    from rpcwatch.outputs.rules import write_findings
    from rpcwatch.sigma.validate import validate_rules

    for path in args.paths:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file or directory")
    findings = validate_rules(args.paths)
    write_findings(findings, sys.stdout, args.format or ("table" if sys.stdout.isatty() else "json"))
    return EXIT_FINDINGS if any(f.severity != "informational" for f in findings) else EXIT_OK


class _progress:
    """A transient byte progress bar on standard error (a no-op when disabled)."""

    def __init__(self, inputs, enabled: bool):
        self._total = sum(i.size or 0 for i in inputs)
        self._enabled = enabled and self._total > (8 << 20)
        self._bar = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self._enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        self._bar = Progress("reading", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
        self._bar.__enter__()
        task = self._bar.add_task("read", total=self._total)
        bar = self._bar
        return lambda size: bar.advance(task, size)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"rpcwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rpcwatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug: say so plainly, traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"rpcwatch: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
