"""One alert per line as JSON (the machine-readable contract, see docs/alerts.md)."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO, Any

from rpcwatch.alerts import Alert


def dumps(document: dict[str, Any]) -> str:
    # ensure_ascii keeps any control or bidi character from a log escaped on the way out
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"), default=str)


def write(alerts: Iterable[Alert], stream: IO[str], guides: bool = False) -> int:
    count = 0
    for alert in alerts:
        stream.write(dumps(alert.to_dict(guides)) + "\n")
        count += 1
    return count
