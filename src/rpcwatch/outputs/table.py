"""Alerts as a terminal table (rich). Log values are shown as plain text: rich markup and
terminal control sequences from a log can neither style nor move the terminal."""
from __future__ import annotations

from typing import IO, Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

LEVEL_STYLES = {"critical": "bold white on red", "high": "bold red", "medium": "yellow",
                "low": "cyan", "informational": "dim"}
OUTCOME_STYLES = {"established": "bold red", "rejected": "green", "no-reply": "green",
                  "blocked": "green"}


def safe_text(value: Any, style: str = "") -> Text:
    """Printable text only: control characters become ``\\xNN`` like Zeek writes them."""
    if value is None:
        return Text("-", style="dim")
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                       for c in text)
    return Text(text, style=style)


def _endpoint(part: dict | None) -> Text:
    part = part or {}
    ip, port = part.get("ip"), part.get("port")
    if ip is None:
        return safe_text(None)
    shown = f"[{ip}]" if ":" in str(ip) else str(ip)
    return safe_text(f"{shown}:{port}" if port is not None else shown)


def _file_name(path: str | None) -> str | None:
    """The last path element (and zip member) keeps the column narrow; jsonl has the full path."""
    return None if path is None else path.replace("\\", "/").rsplit("/", 1)[-1]


def alerts_table(alerts: Iterable[dict]) -> Table:
    table = Table(title="Alerts", title_justify="left", expand=False, show_lines=False)
    for name in ("time (UTC)", "rule", "level", "source", "destination", "outcome", "record", "file"):
        table.add_column(name, overflow="fold")
    for alert in alerts:
        rule = alert.get("rule", {})
        original = alert.get("original", {})
        outcome = alert.get("event", {}).get("outcome")
        table.add_row(
            safe_text((alert.get("@timestamp") or "")[:23].replace("T", " ")),
            safe_text(rule.get("name")),
            safe_text(rule.get("level"), LEVEL_STYLES.get(rule.get("level"), "")),
            _endpoint(alert.get("source")),
            _endpoint(alert.get("destination")),
            safe_text(outcome, OUTCOME_STYLES.get(outcome, "")),
            safe_text(original.get("uid") or original.get("EventRecordID")),
            safe_text(_file_name(alert.get("log", {}).get("file", {}).get("path"))),
        )
    return table


def write(alerts: Iterable[dict], stream: IO[str]) -> int:
    rows = sorted(alerts, key=lambda a: (a.get("@timestamp") or "", a.get("rule", {}).get("name") or ""))
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if rows:
        console.print(alerts_table(rows))
    else:
        console.print(Text("No alerts.", style="bold green"))
    return len(rows)
