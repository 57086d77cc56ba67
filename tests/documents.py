"""Alerts as the JSON documents users get (``hunt --format jsonl``): enriched, serialised."""
from __future__ import annotations

from collections.abc import Iterable

from rpcwatch.alerts import Alert
from rpcwatch.config import Config
from rpcwatch.triage.enrich import enrich


def documents(alerts: Iterable[Alert], config: Config | None = None, guides: bool = False) -> list[dict]:
    return [alert.to_dict(guides) for alert in enrich(alerts, config or Config())]
