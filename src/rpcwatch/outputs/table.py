"""Alerts as a terminal table (rich). Log values are shown as plain text: rich markup and
terminal control sequences from a log can neither style nor move the terminal."""
from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rpcwatch.alerts import Alert
from rpcwatch.escaping import terminal_text

LEVEL_STYLES = {"critical": "bold white on red", "high": "bold red", "medium": "yellow",
                "low": "cyan", "informational": "dim"}
OUTCOME_STYLES = {"established": "bold red", "rejected": "green", "no-reply": "green",
                  "blocked": "green"}


def safe_text(value: Any, style: str = "") -> Text:
    """Printable text only: control characters become ``\\xNN`` like Zeek writes them."""
    if value is None:
        return Text("-", style="dim")
    return Text(terminal_text(value), style=style)


def _endpoint(ip: str | None, port: int | None) -> Text:
    if ip is None:
        return safe_text(None)
    shown = f"[{ip}]" if ":" in str(ip) else str(ip)
    return safe_text(f"{shown}:{port}" if port is not None else shown)


def _file_name(path: str | None) -> str | None:
    """The last path element (and zip member) keeps the column narrow; jsonl has the full path."""
    return None if path is None else path.replace("\\", "/").rsplit("/", 1)[-1]


def alerts_table(alerts: Iterable[Alert]) -> Table:
    table = Table(title="Alerts", title_justify="left", expand=False, show_lines=False)
    for name in ("time (UTC)", "rule", "level", "source", "destination", "outcome", "record", "file"):
        table.add_column(name, overflow="fold")
    for alert in alerts:
        rule, outcome = alert.rule, alert.outcome
        table.add_row(
            safe_text((alert.timestamp or "")[:23].replace("T", " ")),
            safe_text(rule.name),
            safe_text(rule.level, LEVEL_STYLES.get(rule.level, "")),
            _endpoint(alert.source_ip, alert.source_port),
            _endpoint(alert.destination_ip, alert.destination_port),
            safe_text(outcome, OUTCOME_STYLES.get(outcome or "", "")),
            safe_text(alert.record_id),
            safe_text(_file_name(alert.file)),
        )
    return table


def write(alerts: Iterable[Alert], stream: IO[str], guides: bool = False) -> int:
    rows = sorted(alerts, key=lambda a: (a.timestamp or "", a.rule.name))
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if rows:
        console.print(alerts_table(rows))
    else:
        console.print(Text("No alerts.", style="bold green"))
    return len(rows)
