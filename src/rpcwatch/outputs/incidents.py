"""Incidents and internet-scanning findings as a terminal table, a JSON document or JSON lines.

JSON: ``{"incidents": [...], "scanning": [...]}``; JSON lines: one finding per line, each
with its ``kind`` (``incident`` or ``scanning``), incidents first (docs/triage.md).
"""
from __future__ import annotations

import json
from typing import IO

from rich.console import Console
from rich.text import Text

from rpcwatch.outputs.table import LEVEL_STYLES, Column, lines, print_table, risk_text, safe_text, when
from rpcwatch.triage.incidents import Findings, Incident
from rpcwatch.triage.scanning import ScanningFinding

#: victims named per incident in the overview
LISTED_VICTIMS = 3


def write_table(findings: Findings, stream: IO[str]) -> int:
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if not findings.incidents:
        console.print(Text("No incidents.", style="bold green"))
    else:
        print_table(console, "Incidents", (Column("incident"), Column("stage", 16), Column("severity", 8),
                                           Column("victims"), Column("first seen", 10)),
                    [_overview(i) for i in findings.incidents])
        for incident in findings.incidents:
            _chain(console, incident)
    if findings.scanning:
        print_table(console, "Internet scanning (refused or unanswered probes, folded per target)",
                    (Column("target"), Column("probes", 12), Column("top sources"), Column("seen (UTC)", 10)),
                    [_scanning(s) for s in findings.scanning])
    return len(findings.incidents) + len(findings.scanning)


def _overview(incident: Incident) -> list[Text]:
    victims = [safe_text(f"{v.address} ({v.stage})") for v in incident.victims[:LISTED_VICTIMS]]
    if len(incident.victims) > LISTED_VICTIMS:
        victims.append(safe_text(f"+{len(incident.victims) - LISTED_VICTIMS} more", "dim"))
    return [lines(safe_text(incident.id, "bold"), safe_text(incident.source)),
            lines(safe_text(f"{incident.stage} {incident.stage_name}"),
                  safe_text(f"direct: {incident.direct_stage}", "dim")),
            lines(safe_text(incident.severity, LEVEL_STYLES.get(incident.severity, "")),
                  Text.assemble("risk ", risk_text(incident.risk_score))),
            lines(*victims), when(incident.first_seen)]


def _chain(console: Console, incident: Incident) -> None:
    rows = []
    for finding in incident.stages:
        details = [safe_text(finding.summary)]
        details += [safe_text(f"why: {reason}", "dim") for reason in finding.judgement]
        details += [safe_text(f"missing: {note}", "yellow") for note in finding.missing]
        style = "bold" if finding.reached else "dim"
        rows.append([lines(safe_text(f"{finding.number} {finding.name}", style),
                           safe_text(finding.strength, "dim") if finding.strength else None),
                     safe_text(len(finding.evidence)), lines(*details)])
    title = f"{incident.id} {incident.source}: attack chain ({incident.severity_reason})"
    print_table(console, title, (Column("stage", 16), Column("records", 7), Column("what the logs show")), rows)


def _scanning(finding: ScanningFinding) -> list[Text]:
    record = finding.to_dict()
    outcomes = [safe_text(f"{n} {outcome}") for outcome, n in record["outcomes"].items()]
    sources = [safe_text(f"{s['address']} ({s['probes']})") for s in record["top_sources"][:3]]
    if record["sources"] > 3:
        sources.append(safe_text(f"of {record['sources']} sources", "dim"))
    target = [safe_text(finding.id, "bold"), safe_text(finding.target)]
    if record["hosts"] > 1:
        target.append(safe_text(f"{record['hosts']} hosts", "dim"))
    return [lines(*target), lines(safe_text(record["probes"]), *outcomes), lines(*sources),
            lines(when(finding.first_seen), when(finding.last_seen))]


def write_json(findings: Findings, stream: IO[str]) -> int:
    """One JSON document, one finding per line (compact lines: thousands of incidents are
    written by the C encoder; an indented document would take seconds)."""
    for name, items in (("incidents", findings.incidents), ("scanning", findings.scanning)):
        stream.write(('{"' if name == "incidents" else ',\n"') + name + '": [')
        stream.write(",".join("\n" + _dumps(item.to_dict()) for item in items))
        stream.write("\n]" if items else "]")
    stream.write("}\n")
    return len(findings.incidents) + len(findings.scanning)


def _dumps(document: dict) -> str:
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def write_jsonl(findings: Findings, stream: IO[str]) -> int:
    every: list[Incident | ScanningFinding] = [*findings.incidents, *findings.scanning]
    for finding in every:
        stream.write(_dumps(finding.to_dict()) + "\n")
    return len(findings.incidents) + len(findings.scanning)


WRITERS = {"table": write_table, "json": write_json, "jsonl": write_jsonl}
