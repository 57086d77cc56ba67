"""Turns a triage run into the report's view, renders the template, and writes in full
beside the page whatever a section had to leave out.

The page stays small on big inputs: every section shows its first rows (the most
important first) and, when it had to stop, names the JSON lines file beside the report
that holds all of them (``report.alerts.jsonl`` next to ``report.html``).
"""
from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from markupsafe import Markup

from rpcwatch import __version__
from rpcwatch.alerts import Alert
from rpcwatch.outputs.files import open_output
from rpcwatch.outputs.jsonl import dumps
from rpcwatch.outputs.report.actions import actions
from rpcwatch.outputs.report.charts import ranking, timeline
from rpcwatch.triage.incidents import Incident
from rpcwatch.triage.risk import SEVERITIES
from rpcwatch.triage.run import TriageResult

#: rows shown per section; the rest is written beside the report
LIMITS = {"alerts": 500, "incidents": 50, "scanning": 50, "exposure": 100}
#: evidence records shown per stage of an incident (the totals are always given)
EVIDENCE_SHOWN = 10
TOP = 10


def _environment() -> Environment:
    # autoescape everything: every value from a log or a rule is text, never markup
    return Environment(autoescape=select_autoescape(default=True, default_for_string=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _package_text(name: str) -> str:
    return (resources.files("rpcwatch.outputs.report") / name).read_text(encoding="utf-8")


def render_report(result: TriageResult, beside: dict[str, str] | None = None) -> str:
    """The page; ``beside`` names, per cut section, the file that holds all of it."""
    css = _package_text("report.css")
    digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode("ascii")
    template = _environment().from_string(_package_text("report.html.j2"))
    return template.render(css=Markup(css), css_hash=f"sha256-{digest}", view=_view(result, beside or {}))


def write_report(result: TriageResult, path: Path, force: bool = False) -> dict[str, Path]:
    """Write the page to ``path``, and each section that does not fit in full beside it;
    returns the files written beside. Every file is opened as ``-o`` is (a symbolic link
    only with ``force``; :func:`rpcwatch.outputs.files.open_output`)."""
    sections = _sections(result)
    beside = {name: path.with_name(f"{path.stem}.{name}.jsonl") for name, records in sections.items()
              if len(records) > LIMITS[name]}
    for name, file in beside.items():
        with open_output(str(file), force=force) as stream:
            stream.writelines(dumps(record) + "\n" for record in _records(sections[name]))
    with open_output(str(path), force=force) as stream:
        stream.write(render_report(result, {name: file.name for name, file in beside.items()}))
    return beside


def _sections(result: TriageResult) -> dict[str, list]:
    return {"alerts": _time_ordered(result.shown), "incidents": result.incidents, "scanning": result.scanning,
            "exposure": result.exposure}


def _records(items: Iterable[Any]) -> Iterable[dict[str, Any]]:
    return (item.to_dict() for item in items)


def _time_ordered(alerts: list[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (a.timestamp is None, a.timestamp or "", a.rule.name))


def _view(result: TriageResult, beside: dict[str, str]) -> dict[str, Any]:
    alerts = result.alerts
    report = result.report
    findings = _finding_of_alerts(result)
    shown = _time_ordered(result.shown)
    return {
        "version": __version__,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "actions": actions(result),
        "counts": {"alerts": len(alerts), "shown": len(result.shown), "incidents": len(result.incidents),
                   "scanning": len(result.scanning), "exposed": len(result.exposure), "records": report.records,
                   "inputs": len(report.stats), "skipped": sum(s.skipped_total for s in report.stats)},
        "severities": [(severity, n) for severity in reversed(SEVERITIES)
                       if (n := sum(1 for i in result.incidents if i.severity == severity))],
        "timeline": timeline(alerts),
        "top_sources": ranking(Counter(a.source_ip for a in alerts if a.source_ip).most_common(TOP)),
        "top_victims": ranking(Counter(a.destination_ip for a in alerts if a.destination_ip).most_common(TOP)),
        "exposure": [host.to_dict() for host in result.exposure[:LIMITS["exposure"]]],
        "incidents": [_incident(i) for i in result.incidents[:LIMITS["incidents"]]],
        "scanning": [s.to_dict() for s in result.scanning[:LIMITS["scanning"]]],
        "alerts": [_alert_row(a, findings) for a in shown[:LIMITS["alerts"]]],
        "more": {name: {"count": len(records) - LIMITS[name], "file": beside[name]}
                 for name, records in _sections(result).items() if name in beside},
        "rules": _rules(result),
        "inputs": [_input_row(s) for s in report.stats],
        "rule_problems": [{"rule": p.title or p.path, "reason": p.reason} for p in result.plan.problems],
        "limits": result.evidence.limits,
        "elapsed": report.elapsed,
    }


def _incident(incident: Incident) -> dict[str, Any]:
    record = incident.to_dict()
    for stage in record["stages"]:
        stage["evidence"] = stage["evidence"][:EVIDENCE_SHOWN]
    return record


def _finding_of_alerts(result: TriageResult) -> dict[str, tuple[str, str]]:
    """Source address -> (finding id, severity): an alert's badge is its finding's."""
    found = {incident.source: (incident.id, incident.severity) for incident in result.incidents}
    for finding in result.scanning:
        for source in finding.sources:
            found.setdefault(source, (finding.id, "low"))
    return found


def _alert_row(alert: Alert, findings: dict[str, tuple[str, str]]) -> dict[str, Any]:
    finding, severity = findings.get(alert.source_ip or "", (None, _severity_of_risk(alert.risk_score)))
    return {"time": alert.timestamp, "rule": alert.rule.name, "finding": finding, "severity": severity,
            "risk": alert.risk_score, "reason": alert.reason, "count": (alert.folded or {}).get("count"),
            "record": alert.record_id, "file": alert.file}


def _severity_of_risk(score: int | None) -> str:
    """The band of an alert's own risk, for alerts no finding holds (0-39 low, 40-64 medium,
    65-84 high, 85 and more critical)."""
    score = score or 0
    return "critical" if score >= 85 else "high" if score >= 65 else "medium" if score >= 40 else "low"


def _rules(result: TriageResult) -> list[dict[str, Any]]:
    """Every rule and correlation that alerted (with its guide), then the others that ran."""
    fired = Counter(a.rule.name for a in result.alerts)
    rule_set = result.plan.rule_set
    rows = [{"title": rule.title, "id": rule.id, "level": rule.level, "tags": list(rule.tags),
             "kind": kind, "alerts": fired.get(rule.title, 0), "guide": rule.guide,
             "description": rule.description}
            for kind, rules in (("rule", rule_set.rules), ("correlation", rule_set.correlations)) for rule in rules]
    return sorted(rows, key=lambda r: (not r["alerts"], -r["alerts"], r["title"]))


def _input_row(stats) -> dict[str, Any]:
    reasons = [f"{count:,} skipped: {reason}" for reason, count in stats.skipped.items()]
    reasons += [f"{count:,} repaired: {reason}" for reason, count in stats.warnings.items()]
    reasons += [f"data lost: {reason}" for reason in stats.lost]
    return {"path": stats.path, "format": stats.format, "records": stats.records, "error": stats.error,
            "tables": sorted(stats.tables), "problems": reasons}

