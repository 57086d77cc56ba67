"""``rpcwatch rules list`` and ``rules validate`` output (table or JSON)."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import IO

from rich.console import Console
from rich.table import Table

from rpcwatch.hunt import HuntPlan
from rpcwatch.outputs.table import safe_text
from rpcwatch.sigma.loader import describe_logsource


def rule_rows(plan: HuntPlan) -> list[dict]:
    tables: dict[str, list[str]] = {}
    for table, bound in plan.by_table.items():
        for item in bound:
            tables.setdefault(item.rule.key, []).append(table)
    rows = [{"title": r.title, "id": r.id, "level": r.level, "logsource": describe_logsource(dict(r.logsource)),
             "kind": "rule", "status": "runnable", "tables": tables.get(r.key, []), "path": r.path,
             "alerts_on_its_own": r.emit} for r in plan.rule_set.rules]
    rows += [{"title": c.title, "id": c.id, "level": c.level, "logsource": "", "kind": f"correlation:{c.type}",
              "status": "runnable", "tables": [], "path": c.path, "alerts_on_its_own": c.emit}
             for c in plan.rule_set.correlations]
    rows += [{"title": p.title, "id": p.id, "level": p.level, "logsource": p.logsource, "kind": "rule",
              "status": p.reason, "tables": [], "path": p.path, "alerts_on_its_own": False}
             for p in plan.problems]
    return rows


def write_rule_list(plan: HuntPlan, stream: IO[str], fmt: str) -> None:
    rows = rule_rows(plan)
    if fmt == "json":
        json.dump(rows, stream, indent=1)
        stream.write("\n")
        return
    table = Table(title=f"{sum(r['status'] == 'runnable' for r in rows)} runnable of {len(rows)}",
                  title_justify="left")
    for name in ("title", "id", "level", "logsource", "status"):
        table.add_column(name, overflow="fold")
    for row in rows:
        status = row["status"] if row["kind"] == "rule" else f"{row['status']} ({row['kind']})"
        table.add_row(*(safe_text(v) for v in (row["title"], row["id"], row["level"], row["logsource"], status)))
    Console(file=stream, highlight=False).print(table)


def write_findings(findings, stream: IO[str], fmt: str) -> None:
    if fmt == "json":
        json.dump([asdict(f) for f in findings], stream, indent=1)
        stream.write("\n")
        return
    console = Console(file=stream, highlight=False)
    if not findings:
        console.print("No findings.")
        return
    table = Table(title=f"{len(findings)} findings", title_justify="left")
    for name in ("path", "title", "check", "severity", "message"):
        table.add_column(name, overflow="fold")
    for f in findings:
        table.add_row(*(safe_text(v) for v in (f.path, f.title, f.check, f.severity, f.message)))
    console.print(table)
