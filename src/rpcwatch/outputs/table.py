"""Alerts as a terminal table (rich), readable at 80 columns.

Log values are shown as plain text: every string passes
:func:`rpcwatch.escaping.terminal_text` and is wrapped in ``rich.text.Text``, so rich
markup and terminal control sequences from a log can neither style nor move the
terminal. Tables are laid out for the terminal's width: text wraps between words, and a
column that holds addresses is never narrower than its longest word, so no address is
broken across lines; when the terminal is too narrow for that, each row is printed as a
block of lines instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rpcwatch.alerts import Alert
from rpcwatch.escaping import terminal_text

LEVEL_STYLES = {"critical": "bold white on red", "high": "bold red", "medium": "yellow",
                "low": "cyan", "informational": "dim"}
#: risk scores from these values up are shown in the style of that severity
RISK_STYLES = ((85, "bold white on red"), (65, "bold red"), (40, "yellow"), (0, "cyan"))


def safe_text(value: Any, style: str = "") -> Text:
    """Printable text only: control characters become ``\\xNN`` like Zeek writes them."""
    if value is None:
        return Text("-", style="dim")
    return Text(terminal_text(value), style=style)


def lines(*parts: Text | None) -> Text:
    """Several values in one cell, one per line."""
    return Text("\n").join(part for part in parts if part is not None)


def risk_text(score: int | None) -> Text:
    if score is None:
        return safe_text(None)
    return Text(str(score), style=next(style for floor, style in RISK_STYLES if score >= floor))


def when(timestamp: str | None) -> Text:
    """``2024-11-30`` over ``10:01:40``: narrow, and a line break that splits no value."""
    if not timestamp:
        return safe_text(None)
    day, _, clock = timestamp.partition("T")
    return lines(safe_text(day), safe_text(clock[:8]))


def file_name(path: str | None) -> str | None:
    """The last path element (and zip member); the JSON output has the full path."""
    return None if path is None else path.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Column:
    header: str
    #: a fixed width; None: the column takes the width that is left
    width: int | None = None


def print_table(console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[Text]]) -> None:
    """A table at the console's width whose flexible columns are at least as wide as the
    longest word in them; else every row as a block of ``header: value`` lines. Cells are
    :class:`Text` made by :func:`safe_text`; the title is escaped here."""
    flexible = [i for i, c in enumerate(columns) if c.width is None]
    fixed = sum(c.width or 0 for c in columns)
    left = console.width - fixed - 2 * len(columns)
    share = left // max(len(flexible), 1)
    longest = max((_longest_word(row[i]) for row in rows for i in flexible), default=0)
    if share < longest or share < 8:
        _print_blocks(console, title, columns, rows)
        return
    table = Table(title=safe_text(title, "bold"), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True, expand=False)
    for column in columns:
        table.add_column(column.header, width=column.width or share, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _print_blocks(console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[Text]]) -> None:
    console.print(safe_text(title, "bold"), soft_wrap=True)
    for row in rows:
        for column, cell in zip(columns, row):
            console.print(Text.assemble(Text(f"  {column.header}: ", style="bold"),
                                        Text(" / ").join(cell.split("\n"))), soft_wrap=True)
        console.print()


def _longest_word(text: Text) -> int:
    return max((len(word) for word in text.plain.split()), default=0)


def alert_row(alert: Alert) -> list[Text]:
    where = " ".join(filter(None, (file_name(alert.file), alert.record_id)))
    return [when(alert.timestamp), risk_text(alert.risk_score), safe_text(alert.rule.name),
            lines(safe_text(alert.reason or alert.rule.name), safe_text(where, "dim") if where else None)]


ALERT_COLUMNS = (Column("time (UTC)", 10), Column("risk", 4), Column("rule", 14), Column("reason"))


def write(alerts: Iterable[Alert], stream: IO[str], guides: bool = False) -> int:
    rows = sorted(alerts, key=lambda a: (a.timestamp or "", a.rule.name))
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if rows:
        print_table(console, "Alerts", ALERT_COLUMNS, [alert_row(a) for a in rows])
    else:
        console.print(Text("No alerts.", style="bold green"))
    return len(rows)
