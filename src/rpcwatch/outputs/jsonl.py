"""One alert per line as JSON (the machine-readable contract, see docs/alerts.md)."""
from __future__ import annotations

import json
from typing import IO, Iterable


def dumps(alert: dict) -> str:
    # ensure_ascii keeps any control or bidi character from a log escaped on the way out
    return json.dumps(alert, ensure_ascii=True, separators=(",", ":"), default=str)


def write(alerts: Iterable[dict], stream: IO[str]) -> int:
    count = 0
    for alert in alerts:
        stream.write(dumps(alert))
        stream.write("\n")
        count += 1
    return count
