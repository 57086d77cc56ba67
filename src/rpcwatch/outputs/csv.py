"""Alerts as CSV for spreadsheets. Log content is attacker-controlled: every cell passes
:func:`rpcwatch.escaping.csv_cell` (formula neutralisation), and rows end in CRLF so a
cell holding a lone CR is quoted instead of starting a new row."""
from __future__ import annotations

import csv as _csv
from collections.abc import Iterable
from typing import IO

from rpcwatch.alerts import Alert
from rpcwatch.escaping import csv_cell

COLUMNS = (
    "@timestamp", "rule.name", "rule.level", "rule.id", "source.ip", "source.port",
    "destination.ip", "destination.port", "network.transport", "event.outcome", "event.dataset",
    "log.file.path", "record",
)


def row(alert: Alert) -> list[str]:
    document = alert.to_dict()
    values = [alert.record_id if column == "record" else alert.value(column) if column in alert.fields
              else _get(document, column) for column in COLUMNS]
    return [csv_cell(value) for value in values]


def _get(document: dict, dotted: str) -> object:
    value: object = document
    for part in [dotted] if dotted == "@timestamp" else dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def write(alerts: Iterable[Alert], stream: IO[str], guides: bool = False) -> int:
    writer = _csv.writer(stream, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    count = 0
    for alert in alerts:
        writer.writerow(row(alert))
        count += 1
    return count
