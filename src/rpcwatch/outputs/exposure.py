"""The exposure inventory as a terminal table or a JSON document."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rpcwatch.outputs.table import safe_text
from rpcwatch.triage.exposure import ExposedHost


def write_table(inventory: Sequence[ExposedHost], stream: IO[str]) -> int:
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if not inventory:
        console.print(Text("No internal host accepted TCP/135 from the internet.", style="bold green"))
        return 0
    table = Table(title="Hosts that accepted TCP/135 from the internet", title_justify="left")
    for name in ("host", "names", "first seen (UTC)", "last seen (UTC)", "sessions", "sources", "records"):
        table.add_column(name, overflow="fold")
    for host in inventory:
        record = host.to_dict()
        table.add_row(
            safe_text(host.address), safe_text(", ".join(host.hosts) or None),
            safe_text((host.first_seen or "")[:19].replace("T", " ")),
            safe_text((host.last_seen or "")[:19].replace("T", " ")), safe_text(record["sessions"]),
            safe_text(", ".join(f"{s['address']} ({s['sessions']})" for s in record["sources"][:5])),
            safe_text(", ".join(str(e["record_id"]) for e in record["evidence"][:3])))
    console.print(table)
    return len(inventory)


def write_json(inventory: Sequence[ExposedHost], stream: IO[str]) -> int:
    json.dump([host.to_dict() for host in inventory], stream, ensure_ascii=True, indent=2)
    stream.write("\n")
    return len(inventory)


WRITERS = {"table": write_table, "json": write_json}
