"""Turns a triage run into the report's view and renders the template."""
from __future__ import annotations

import base64
import hashlib
from collections import Counter
from datetime import UTC, datetime
from importlib import resources
from typing import IO, Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from markupsafe import Markup

from rpcwatch import __version__
from rpcwatch.alerts import Alert
from rpcwatch.outputs.report.charts import ranking, timeline
from rpcwatch.triage.run import TriageResult

#: alerts listed in the report (the charts and counts use all of them)
MAX_ALERT_ROWS = 2000
TOP = 10


def _environment() -> Environment:
    # autoescape everything: every value from a log or a rule is text, never markup
    return Environment(autoescape=select_autoescape(default=True, default_for_string=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _package_text(name: str) -> str:
    return (resources.files("rpcwatch.outputs.report") / name).read_text(encoding="utf-8")


def render_report(result: TriageResult) -> str:
    css = _package_text("report.css")
    digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode("ascii")
    template = _environment().from_string(_package_text("report.html.j2"))
    return template.render(css=Markup(css), css_hash=f"sha256-{digest}", view=_view(result))


def write_report(result: TriageResult, stream: IO[str]) -> None:
    stream.write(render_report(result))


def _view(result: TriageResult) -> dict[str, Any]:
    alerts = result.alerts
    sources = Counter(a.source_ip or "-" for a in alerts)
    victims = Counter(a.destination_ip or "-" for a in alerts)
    report = result.report
    return {
        "version": __version__,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "counts": {"alerts": len(alerts), "shown": len(result.shown), "incidents": len(result.incidents),
                   "exposed": len(result.exposure), "records": report.records, "inputs": len(report.stats),
                   "skipped": sum(s.skipped_total for s in report.stats)},
        "stages": Counter(i.stage for i in result.incidents),
        "timeline": timeline(alerts),
        "top_sources": ranking(sources.most_common(TOP)),
        "top_victims": ranking(victims.most_common(TOP)),
        "exposure": [host.to_dict() for host in result.exposure],
        "incidents": [incident.to_dict() for incident in result.incidents],
        "alerts": [_alert_row(a) for a in result.shown[:MAX_ALERT_ROWS]],
        "alerts_cut": max(len(result.shown) - MAX_ALERT_ROWS, 0),
        "rules": _rules(result),
        "inputs": [_input_row(s) for s in report.stats],
        "rule_problems": [{"rule": p.title or p.path, "reason": p.reason} for p in result.plan.problems],
        "elapsed": report.elapsed,
    }


def _alert_row(alert: Alert) -> dict[str, Any]:
    return {"time": alert.timestamp, "rule": alert.rule.name, "level": alert.rule.level,
            "risk": alert.risk_score, "reason": alert.reason, "outcome": alert.outcome,
            "count": (alert.folded or {}).get("count"), "record": alert.record_id, "file": alert.file}


def _rules(result: TriageResult) -> list[dict[str, Any]]:
    fired = Counter(a.rule.name for a in result.alerts)
    return [{"title": rule.title, "id": rule.id, "level": rule.level, "tags": list(rule.tags),
             "alerts": fired.get(rule.title, 0), "guide": rule.guide, "description": rule.description}
            for rule in result.plan.rule_set.rules]


def _input_row(stats) -> dict[str, Any]:
    reasons = [f"{count:,} skipped: {reason}" for reason, count in stats.skipped.items()]
    reasons += [f"{count:,} repaired: {reason}" for reason, count in stats.warnings.items()]
    reasons += [f"data lost: {reason}" for reason in stats.lost]
    return {"path": stats.path, "format": stats.format, "records": stats.records, "error": stats.error,
            "tables": sorted(stats.tables), "problems": reasons}
