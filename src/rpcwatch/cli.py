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
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rpcwatch import __version__
from rpcwatch.engines import ENGINES
from rpcwatch.escaping import terminal_text
from rpcwatch.outputs import WRITERS

if TYPE_CHECKING:  # imported where used: the command line starts fast
    from rich.progress import Progress

    from rpcwatch.hunt import Engine, HuntPlan
    from rpcwatch.sources.inputs import InputFile

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
    _add_paths(hunt)
    _add_rule_options(hunt)
    hunt.add_argument("--format", choices=WRITERS.names(),
                      help="alert output (default: table on a terminal, else jsonl)")
    hunt.add_argument("-o", "--output", metavar="FILE", help="write alerts to FILE instead of standard output")
    _add_force(hunt)
    hunt.add_argument("--with-guides", action="store_true",
                      help="include each rule's investigation guide in JSON alerts (default: rule.reference)")
    _add_run_options(hunt)
    hunt.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    _add_suppression_options(hunt)
    hunt.add_argument("--incidents", action="store_true",
                      help="print incidents along the attack chain instead of alerts (as 'rpcwatch triage')")
    hunt.set_defaults(handler=_hunt)

    triage = commands.add_parser("triage", help="incidents along the attack chain, with evidence",
                                 description="Hunt, then place each internet source on the attack chain "
                                             "with the evidence from every input (docs/triage.md).")
    _add_paths(triage)
    _add_rule_options(triage)
    triage.add_argument("--format", choices=("table", "json", "jsonl"),
                        help="incident output (default: table on a terminal, else json)")
    triage.add_argument("-o", "--output", metavar="FILE", help="write incidents to FILE")
    _add_force(triage)
    _add_run_options(triage)
    triage.set_defaults(handler=_triage)

    exposure = commands.add_parser("exposure", help="internal hosts that accepted TCP/135 from the internet",
                                   description="List internal hosts with an established TCP/135 session from "
                                               "the internet: the systems to review and harden.")
    _add_paths(exposure)
    _add_rule_options(exposure)
    exposure.add_argument("--format", choices=("table", "json"),
                          help="output (default: table on a terminal, else json)")
    exposure.add_argument("-o", "--output", metavar="FILE", help="write the inventory to FILE")
    _add_force(exposure)
    _add_run_options(exposure)
    exposure.set_defaults(handler=_exposure)

    report = commands.add_parser("report", help="a self-contained offline HTML report",
                                 description="Hunt and triage, then write one HTML file that works offline.")
    _add_paths(report)
    _add_rule_options(report)
    report.add_argument("-o", "--output", metavar="FILE", required=True, help="the HTML file to write")
    _add_force(report)
    _add_run_options(report)
    _add_suppression_options(report)
    report.set_defaults(handler=_report)

    watch = commands.add_parser("watch", help="follow logs as they are written and deliver alerts to sinks",
                                description="Follow log files and directories as they grow and rotate; alert "
                                            "within a second; checkpoints survive crashes (docs/live.md).")
    watch.add_argument("paths", nargs="+", metavar="PATH", help="log files or directories (followed recursively)")
    _add_rule_options(watch)
    watch.add_argument("--state", metavar="DIR", help="checkpoints, correlation state and spool "
                       "(default: $STATE_DIRECTORY, else ~/.local/state/rpcwatch)")
    watch.add_argument("--to", action="append", default=[], metavar="SINK",
                       help="file:PATH, syslog+tcp://H:P, syslog+tls://H:P, elasticsearch+https://H:P/INDEX, "
                            "splunk-hec+https://H:P, webhook+https://... (repeatable; default: JSON lines on "
                            "standard output); secrets come from the environment or rpcwatch.toml")
    watch.add_argument("--syslog-format", choices=("rfc5424", "cef"), help="syslog message format (default rfc5424)")
    watch.add_argument("--once", action="store_true", help="read what is new since the checkpoint, deliver, exit")
    watch.add_argument("--poll", type=_seconds, metavar="S", help="seconds between looks at the files (default 0.25)")
    watch.set_defaults(handler=_watch)

    export = commands.add_parser("export-parquet", help="logs to a Parquet dataset partitioned by table and date",
                                 description="Read logs with rpcwatch's readers and write them as Parquet, "
                                             "partitioned by table and day, for a cluster to hunt in.")
    export.add_argument("paths", nargs="+", metavar="PATH", help="log files or directories; '-' reads standard input")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset directory (created)")
    _add_force(export)
    export.set_defaults(handler=_export_parquet)

    rules = commands.add_parser("rules", help="list, validate, convert Sigma rules")
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
    from rpcwatch.sigma.targets import KNOWN_BACKENDS, OWN_TARGETS, SIEM_EXTRA

    conversion = rule_commands.add_parser(
        "convert", help="rules as SIEM queries, with the configured internal networks",
        description="Convert the bundled rules and RULES to a SIEM's query language. Targets: "
                    + "; ".join(f"{t.name} ({t.description}; pipelines: {', '.join(t.pipelines)})"
                                for t in [*OWN_TARGETS.values(), *KNOWN_BACKENDS.values()])
                    + f"; and any other installed pySigma backend. SIEM targets need {SIEM_EXTRA}.")
    conversion.add_argument("rules", nargs="*", metavar="RULES", help="Sigma rule files or directories")
    # no fixed choices: the SIEM targets are the pySigma backends installed (found when converting)
    conversion.add_argument("--target", "-t", required=True)
    conversion.add_argument("--pipeline", "-p", help="field mapping (default: the target's first)")
    conversion.add_argument("--no-bundled-rules", action="store_true", help="convert only RULES")
    conversion.add_argument("--internal", action="append", default=[], metavar="CIDR",
                            help="an internal network (repeatable; replaces the configured list)")
    conversion.add_argument("--config", metavar="FILE", help="configuration file (default: ./rpcwatch.toml)")
    conversion.add_argument("-o", "--output", metavar="FILE", help="write the queries to FILE")
    _add_force(conversion)
    conversion.set_defaults(handler=_rules_convert)
    return parser


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="write -o even when it is a symbolic link (refused by default)")


def _add_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="log files or directories (recursive); '-' reads standard input")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-prefilter", action="store_true",
                        help="parse every record (the literal prefilter skips lines no rule can match)")
    parser.add_argument("--workers", type=_worker_count, metavar="N",
                        help="reader processes (default: one per core; 0 reads everything in this process)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no run summary on standard error")
    parser.add_argument("-v", "--verbose", action="store_true", help="list where each skipped record was")
    parser.add_argument("--engine", choices=ENGINES.names(), default="duckdb",
                        help="where the compiled rules run (default: duckdb, embedded)")
    parser.add_argument("--master", metavar="URL",
                        help="Spark master for --engine spark (default: local[2], or the cluster spark-submit chose)")


def _worker_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _add_suppression_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suppress", metavar="FIELD[,FIELD...]",
                        help="one alert per value of up to 3 alert fields (e.g. source.ip,destination.ip) "
                             "per --window, with count, first_seen and last_seen")
    parser.add_argument("--window", metavar="DURATION",
                        help="suppression window, e.g. 30s, 5m, 1h, 1d (default: the whole run)")


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


def _run_context(args):
    """The run's worker pool and limits (the limits from the configuration file)."""
    from rpcwatch.context import RunContext
    from rpcwatch.workers import WorkerPool

    limits = _config(args).limits if hasattr(args, "config") else None
    workers = WorkerPool(getattr(args, "workers", None))
    return RunContext(workers=workers) if limits is None else RunContext(limits=limits, workers=workers)


def _config(args):
    from rpcwatch.config import ConfigError, load_config

    try:
        return load_config(args.config).with_internal(args.internal)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


@dataclass
class _Run:
    """What every command that hunts starts from."""

    inputs: list[InputFile]
    plan: HuntPlan
    engine: Engine
    #: export-parquet datasets the Spark engine scans where they live
    datasets: list[str]


def _prepare(args) -> _Run:
    """Configuration, inputs, the rule plan and the engine shared by every command that hunts."""
    from rpcwatch.context import current

    _check_output(args)
    config = _config(args)
    _check_rule_paths(args)
    local = [path for path in args.paths if args.engine != "spark" or not _for_spark(path)]
    workers = current().workers
    workers.start(local)  # they import the readers on another core while this process loads the rules
    from rpcwatch.hunt import plan_hunt
    from rpcwatch.sources import InputError, expand_inputs

    try:
        inputs = list(expand_inputs(local)) if local else []
    except InputError as exc:
        raise UsageError(str(exc)) from None
    plan = plan_hunt(args.rules, config, bundled=not args.no_bundled_rules, prefilter=not args.no_prefilter,
                     filters=args.filters)
    if not plan.rule_set.rules:
        raise UsageError("no runnable rules" + "".join(f"\n  {p.path}: {p.reason}" for p in plan.problems))
    workers.ready()
    engine = _engine(args)
    uri_logs, datasets = _spark_inputs(engine, [path for path in args.paths if path not in local])
    return _Run(inputs + uri_logs, plan, engine, datasets)


def _suppression(args):
    from rpcwatch.triage.suppress import Suppression, SuppressionError

    if args.suppress is None:
        if args.window is not None:
            raise UsageError("--window needs --suppress")
        return None
    try:
        return Suppression.parse(args.suppress, args.window)
    except SuppressionError as exc:
        raise UsageError(str(exc)) from None


def _output_format(args, terminal: str, piped: str) -> str:
    return args.format or (terminal if sys.stdout.isatty() and not args.output else piped)


def _check_output(args, directory: bool = False) -> None:
    """Refuse an unsafe -o before any input is read (see outputs/files.py)."""
    from rpcwatch.outputs.files import OutputError, check_output

    if getattr(args, "output", None):
        try:
            check_output(args.output, [*getattr(args, "paths", []), *getattr(args, "rules", [])],
                         force=args.force, directory=directory)
        except OutputError as exc:
            raise UsageError(str(exc)) from None


def _output(stack: ExitStack, args):
    from rpcwatch.outputs.files import OutputError, open_output

    if not args.output:
        return sys.stdout
    try:
        return stack.enter_context(open_output(args.output, force=args.force))
    except OutputError as exc:
        raise UsageError(str(exc)) from None


def _exit_code(report) -> int:
    if report.stats and all(s.error for s in report.stats):
        return EXIT_NO_INPUT
    return EXIT_OK


def _hunt(args) -> int:
    from rpcwatch.hunt import Hunt
    from rpcwatch.outputs.summary import print_summary
    from rpcwatch.triage.enrich import enrich
    from rpcwatch.triage.suppress import suppress

    if args.incidents:
        if args.format == "csv":
            raise UsageError("--incidents writes table, json or jsonl, not csv")
        return _triage(args)
    suppression = _suppression(args)
    run = _prepare(args)
    output_format = _output_format(args, "table", "jsonl")
    with ExitStack() as stack:
        stream = _output(stack, args)
        advance = stack.enter_context(_progress(run.inputs, enabled=not args.no_progress and sys.stderr.isatty()))
        hunt = Hunt(run.inputs, run.plan, run.engine, on_bytes=advance,
                    sources=_dataset_scans(run.engine, run.datasets, run.plan))
        alerts = enrich(hunt, run.plan.config)
        WRITERS.load(output_format)(suppress(alerts, suppression) if suppression else alerts, stream,
                                    guides=args.with_guides)
    if not args.quiet:
        print_summary(hunt.report, run.plan, sys.stderr, verbose=args.verbose)
    return _exit_code(hunt.report)


def _run_triage(args, incidents: bool, suppression=None):
    from rpcwatch.outputs.summary import print_evidence_summary, print_summary
    from rpcwatch.triage.run import run_triage

    run = _prepare(args)
    if run.datasets:
        raise UsageError("triage reads logs (local or at a URI), not export-parquet datasets: "
                         + ", ".join(run.datasets))
    result = run_triage(run.inputs, run.plan, run.engine, incidents=incidents, suppression=suppression)
    if not args.quiet:
        print_summary(result.report, run.plan, sys.stderr, verbose=args.verbose)
        print_evidence_summary(result, sys.stderr)
    return result


def _triage(args) -> int:
    from rpcwatch.outputs.incidents import WRITERS

    result = _run_triage(args, incidents=True)
    with ExitStack() as stack:
        WRITERS[_output_format(args, "table", "json")](result.incidents, _output(stack, args))
    return _exit_code(result.report)


def _exposure(args) -> int:
    from rpcwatch.outputs.exposure import WRITERS

    result = _run_triage(args, incidents=False)
    with ExitStack() as stack:
        WRITERS[_output_format(args, "table", "json")](result.exposure, _output(stack, args))
    return _exit_code(result.report)


def _report(args) -> int:
    from rpcwatch.outputs.report import write_report

    result = _run_triage(args, incidents=True, suppression=_suppression(args))
    with ExitStack() as stack:
        write_report(result, _output(stack, args))
    return _exit_code(result.report)


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
    from rpcwatch.engines import EngineUnavailable, open_engine

    try:
        return open_engine(args.engine, args.master)
    except EngineUnavailable as exc:
        raise UsageError(str(exc)) from None


def _watch(args) -> int:
    from rpcwatch.watch import WatchError, run_watch

    _check_rule_paths(args)
    for path in args.paths:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file or directory")
    try:
        return run_watch(_config(args), args.paths, args.rules, args.filters, not args.no_bundled_rules,
                         args.state, args.to, args.syslog_format, args.once, args.poll)
    except WatchError as exc:
        raise UsageError(str(exc)) from None


def _export_parquet(args) -> int:
    from rpcwatch.escaping import terminal_text
    from rpcwatch.outputs.parquet import export_parquet
    from rpcwatch.sources import InputError, expand_inputs

    _check_output(args, directory=True)
    try:
        inputs = list(expand_inputs(args.paths))
    except InputError as exc:
        raise UsageError(str(exc)) from None
    export = export_parquet(inputs, Path(args.output))
    for stats in export.stats:
        for problem in ([stats.error] if stats.error else []) + stats.lost + [
                f"{count} records skipped: {reason}" for reason, count in stats.skipped.items()]:
            print(f"rpcwatch: {terminal_text(stats.path)}: {terminal_text(problem)}", file=sys.stderr)
    print(f"{export.rows} rows in {export.files} files under {terminal_text(args.output)}", file=sys.stderr)
    return EXIT_NO_INPUT if export.stats and all(s.error for s in export.stats) else EXIT_OK


def _rules_convert(args) -> int:
    from rpcwatch.escaping import terminal_text
    from rpcwatch.outputs.conversion import write_conversion
    from rpcwatch.sigma.convert import convert

    for path in args.rules:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file or directory")
    _check_output(args)
    try:
        result = convert(args.rules, args.target, args.pipeline, _config(args), bundled=not args.no_bundled_rules)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with ExitStack() as stack:
        write_conversion(result, _output(stack, args))
    for item in result.conversions:
        if item.problem:
            print(f"rpcwatch: not converted: {terminal_text(item.title)}: {terminal_text(item.problem)}",
                  file=sys.stderr)
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
        self._bar: Progress | None = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self._enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        bar = self._bar = Progress("reading", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                   TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
        bar.__enter__()
        task = bar.add_task("read", total=self._total)
        return lambda size: bar.advance(task, size)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _run_context(args):
            return args.handler(args)
    except UsageError as exc:
        print(f"rpcwatch: error: {terminal_text(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rpcwatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug: say so plainly, traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"rpcwatch: internal error: {type(exc).__name__}: {terminal_text(str(exc))}"
              " (run with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
