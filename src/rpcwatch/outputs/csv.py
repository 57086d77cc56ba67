"""Alerts as CSV for spreadsheets. Log content is attacker-controlled: a cell that a
spreadsheet would read as a formula is prefixed with a quote (OWASP CSV injection)."""
from __future__ import annotations

import csv as _csv
import json
from typing import IO, Any, Iterable

COLUMNS = (
    "@timestamp", "rule.name", "rule.level", "rule.id", "source.ip", "source.port",
    "destination.ip", "destination.port", "network.transport", "event.outcome", "event.dataset",
    "log.file.path", "record",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False) \
        if isinstance(value, (dict, list)) else str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _get(alert: dict, dotted: str) -> Any:
    if dotted == "record":
        original = alert.get("original", {})
        return original.get("uid") or original.get("EventRecordID")
    value: Any = alert
    for part in dotted.split(".") if dotted != "@timestamp" else [dotted]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def write(alerts: Iterable[dict], stream: IO[str]) -> int:
    writer = _csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for alert in alerts:
        writer.writerow([neutralise(_get(alert, column)) for column in COLUMNS])
        count += 1
    return count
