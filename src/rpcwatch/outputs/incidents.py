"""Incidents as a terminal table, a JSON document or JSON lines."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rpcwatch.outputs.table import LEVEL_STYLES, safe_text
from rpcwatch.triage.incidents import Incident


def write_table(incidents: Sequence[Incident], stream: IO[str]) -> int:
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if not incidents:
        console.print(Text("No incidents.", style="bold green"))
        return 0
    overview = Table(title="Incidents", title_justify="left")
    for name in ("id", "source", "stage", "severity", "risk", "victims", "first seen (UTC)", "alerts"):
        overview.add_column(name, overflow="fold")
    for incident in incidents:
        overview.add_row(
            safe_text(incident.id), safe_text(incident.source),
            safe_text(f"{incident.stage} {incident.stage_name}"),
            safe_text(incident.severity, LEVEL_STYLES.get(incident.severity, "")),
            safe_text(incident.risk_score),
            safe_text(", ".join(f"{v.address} ({v.stage})" for v in incident.victims[:4])
                      + (f" +{len(incident.victims) - 4}" if len(incident.victims) > 4 else "")),
            safe_text((incident.first_seen or "")[:19].replace("T", " ")), safe_text(incident.alerts))
    console.print(overview)
    for incident in incidents:
        if incident.stage >= 2:
            console.print(_chain(incident))
    return len(incidents)


def _chain(incident: Incident) -> Table:
    table = Table(title=f"{incident.id} {incident.source}: attack chain", title_justify="left")
    for name in ("stage", "evidence", "what the logs show", "missing"):
        table.add_column(name, overflow="fold")
    for finding in incident.stages:
        table.add_row(safe_text(f"{finding.number} {finding.name}", "bold" if finding.reached else "dim"),
                      safe_text(len(finding.evidence)), safe_text(finding.summary),
                      safe_text("; ".join(finding.missing) or "-"))
    return table


def write_json(incidents: Sequence[Incident], stream: IO[str]) -> int:
    json.dump([i.to_dict() for i in incidents], stream, ensure_ascii=True, indent=2)
    stream.write("\n")
    return len(incidents)


def write_jsonl(incidents: Sequence[Incident], stream: IO[str]) -> int:
    for incident in incidents:
        stream.write(json.dumps(incident.to_dict(), ensure_ascii=True, separators=(",", ":")))
        stream.write("\n")
    return len(incidents)


WRITERS = {"table": write_table, "json": write_json, "jsonl": write_jsonl}
