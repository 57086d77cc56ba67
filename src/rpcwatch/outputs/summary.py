"""The run summary: inputs, records read and skipped (with reasons), rules, alerts, speed."""
from __future__ import annotations

from collections import Counter
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rpcwatch.hunt import HuntPlan, HuntReport
from rpcwatch.outputs.table import safe_text
from rpcwatch.triage.run import TriageResult


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GB"


def print_summary(report: HuntReport, plan: HuntPlan, stream: IO[str], verbose: bool = False) -> None:
    console = Console(file=stream, highlight=False, soft_wrap=True)
    formats = Counter(s.format for s in report.stats if not s.error)
    failed = [s for s in report.stats if s.error]
    elapsed = max(report.elapsed, 1e-9)
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("inputs", f"{len(report.stats)} ({', '.join(f'{n} {f}' for f, n in formats.most_common())}"
                     + (f"; {len(failed)} not read" if failed else "") + ")")
    overview.add_row("records read", f"{report.records:,}")
    skipped = sum(s.skipped_total for s in report.stats)
    overview.add_row("records skipped", f"{skipped:,}")
    overview.add_row("rules", f"{len(plan.rule_set.rules)} running"
                     + (f", {len(plan.problems)} not runnable" if plan.problems else ""))
    overview.add_row("alerts", ", ".join(f"{n:,} {t}" for t, n in report.alerts_by_rule.most_common()) or "0")
    overview.add_row("time", f"{elapsed:.2f} s ({report.records / elapsed:,.0f} records/s, "
                     f"{_size(report.bytes_on_disk / elapsed)}/s)")
    console.print(Text("rpcwatch hunt", style="bold"))
    console.print(overview)
    _problems_table(console, report, verbose)
    for loss in report.correlation_losses:
        console.print(Text("correlation limit reached: ", style="yellow") + safe_text(loss))
    for problem in plan.problems:
        console.print(Text("rule not runnable: ", style="yellow") + safe_text(problem.title or problem.path)
                      + Text(" - ") + safe_text(problem.reason))


def _problems_table(console: Console, report: HuntReport, verbose: bool) -> None:
    rows = []
    for stats in report.stats:
        if stats.error:
            rows.append((stats.path, "not read", stats.error, ""))
        for reason in stats.lost:
            rows.append((stats.path, "data lost", reason, ""))
        for reason, count in stats.skipped.items():
            rows.append((stats.path, f"{count:,} skipped", reason, ", ".join(stats.examples.get(reason, []))))
        for reason, count in stats.warnings.items():
            rows.append((stats.path, f"{count:,} repaired", reason, ", ".join(stats.examples.get(reason, []))))
    if not rows:
        return
    table = Table(title="Input problems", title_justify="left")
    for name in ("input", "what", "reason", "where" if verbose else ""):
        if name:
            table.add_column(name, overflow="fold")
    for path, what, reason, where in rows:
        cells = [safe_text(path), safe_text(what), safe_text(reason)] + ([safe_text(where)] if verbose else [])
        table.add_row(*cells)
    console.print(table)


def print_evidence_summary(result: TriageResult, stream: IO[str]) -> None:
    """The second (evidence) pass and what triage made of the run."""
    console = Console(file=stream, highlight=False, soft_wrap=True)
    report = result.evidence.report
    found = sum(len(records) for records in result.evidence.found.values())
    if report is not None:
        console.print(Text(f"evidence pass    {found:,} records of the alerts' sources and victims "
                           f"({report.records:,} read, {report.elapsed:.2f} s)"))
    if result.incidents:
        stages = Counter(incident.stage for incident in result.incidents)
        console.print(Text(f"incidents        {len(result.incidents):,} (by stage reached: "
                           + ", ".join(f"{n} at {stage}" for stage, n in sorted(stages.items())) + ")"))
    console.print(Text(f"exposed hosts    {len(result.exposure):,}"))
