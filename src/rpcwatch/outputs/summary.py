"""The run summary on standard error: inputs, records read and skipped (with reasons),
rules, alerts, speed; for triage, the evidence pass and what it found.

One line per fact and one line per problem, with the input's full path, never wrapped
(a terminal wraps long lines itself; a log file or CI output keeps them whole). On a
terminal the labels are bold; otherwise it is plain text. Every value passes
:func:`~rpcwatch.outputs.table.safe_text`: paths, reasons and rule titles are shown,
never interpreted as markup or terminal control.
"""
from __future__ import annotations

from collections import Counter
from typing import IO, TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from rpcwatch.outputs.table import safe_text

if TYPE_CHECKING:  # types only: a hunt's summary must not import triage's pipeline
    from rpcwatch.hunt import HuntPlan, HuntReport
    from rpcwatch.triage.run import TriageResult

LABEL_WIDTH = 17


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GB"


def _console(stream: IO[str]) -> Console:
    return Console(file=stream, highlight=False, soft_wrap=True)


def _line(console: Console, label: str, value: Text | str) -> None:
    console.print(Text.assemble(Text(label.ljust(LABEL_WIDTH), style="bold"),
                                value if isinstance(value, Text) else safe_text(value)))


def print_summary(report: HuntReport, plan: HuntPlan, stream: IO[str], verbose: bool = False) -> None:
    console = _console(stream)
    formats = Counter(s.format for s in report.stats if not s.error)
    failed = [s for s in report.stats if s.error]
    elapsed = max(report.elapsed, 1e-9)
    console.print(Text("rpcwatch hunt", style="bold"))
    _line(console, "inputs", f"{len(report.stats)} ({', '.join(f'{n} {f}' for f, n in formats.most_common())}"
          + (f"; {len(failed)} not read" if failed else "") + ")")
    _line(console, "records read", f"{report.records:,}")
    _line(console, "records skipped", f"{sum(s.skipped_total for s in report.stats):,}")
    _line(console, "rules", f"{len(plan.rule_set.rules)} running"
          + (f", {len(plan.problems)} not runnable" if plan.problems else ""))
    _line(console, "alerts", ", ".join(f"{n:,} {title}" for title, n in report.alerts_by_rule.most_common()) or "0")
    _line(console, "time", f"{elapsed:.2f} s ({report.records / elapsed:,.0f} records/s, "
          f"{_size(report.bytes_on_disk / elapsed)}/s)")
    _problems(console, report, verbose)
    for loss in report.correlation_losses:
        console.print(Text.assemble(Text("correlation limit reached: ", style="yellow"), safe_text(loss)))
    for problem in plan.problems:
        console.print(Text.assemble(Text("rule not runnable: ", style="yellow"),
                                    safe_text(problem.title or problem.path), " - ", safe_text(problem.reason)))


def _problems(console: Console, report: HuntReport, verbose: bool) -> None:
    """One line per problem: the input's full path, what happened, why (and where, with -v)."""
    for stats in report.stats:
        problems = [("not read", stats.error, "")] if stats.error else []
        problems += [("data lost", reason, "") for reason in stats.lost]
        problems += [(f"{count:,} skipped", reason, ", ".join(stats.examples.get(reason, [])))
                     for reason, count in stats.skipped.items()]
        problems += [(f"{count:,} repaired", reason, ", ".join(stats.examples.get(reason, [])))
                     for reason, count in stats.warnings.items()]
        for what, reason, where in problems:
            parts: list[str | Text] = [safe_text(stats.path), ": ", Text(what, style="yellow"), ": ",
                                       safe_text(reason)]
            if verbose and where:
                parts += [" (at ", safe_text(where), ")"]
            console.print(Text.assemble(*parts))


def print_evidence_summary(result: TriageResult, stream: IO[str]) -> None:
    """The evidence pass and what triage made of the run."""
    console = _console(stream)
    report = result.evidence.report
    if report is not None:
        _line(console, "evidence pass", f"{result.evidence.count:,} records of the alerts' sources and victims kept, "
              f"{len(result.evidence.baselines):,} victims' baselines ({report.records:,} records read, "
              f"{report.elapsed:.2f} s)")
    if result.incidents:
        stages = Counter((i.stage, i.direct_stage) for i in result.incidents)
        _line(console, "incidents", f"{len(result.incidents):,} (stage reached, direct: " + ", ".join(
            f"{n} at {stage} ({direct})" for (stage, direct), n in sorted(stages.items())) + ")")
    elif report is not None:
        _line(console, "incidents", "0")
    if result.scanning:
        unknown = sum(s.unknown_outcome for s in result.scanning)
        refused = sum(s.probes for s in result.scanning) - unknown
        _line(console, "scanning", f"{len(result.scanning):,} target(s), {refused:,} refused or unanswered probe(s)"
              + (f" and {unknown:,} of unknown outcome" if unknown else "")
              + f" from {len({a for s in result.scanning for a in s.sources}):,} source(s)")
    _line(console, "exposed hosts", f"{len(result.exposure):,}")
    for limit in result.evidence.limits:
        console.print(Text.assemble(Text("limit reached: ", style="yellow"), safe_text(limit)))
