"""The exposure inventory as a terminal table or a JSON document."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.text import Text

from rpcwatch.outputs.table import Column, lines, print_table, safe_text, when
from rpcwatch.triage.exposure import ExposedHost

#: sources named per host in the table (JSON lists them all)
LISTED_SOURCES = 3


def write_table(inventory: Sequence[ExposedHost], stream: IO[str]) -> int:
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if not inventory:
        console.print(Text("No internal host accepted TCP/135 from the internet.", style="bold green"))
        return 0
    rows = []
    for host in inventory:
        record = host.to_dict()
        sources = [safe_text(f"{s['address']} ({s['sessions']})") for s in record["sources"][:LISTED_SOURCES]]
        if len(record["sources"]) > LISTED_SOURCES:
            sources.append(safe_text(f"+{len(record['sources']) - LISTED_SOURCES} more", "dim"))
        rows.append([lines(safe_text(host.address, "bold"), *(safe_text(name, "dim") for name in host.hosts)),
                     safe_text(record["sessions"]), lines(*sources),
                     lines(when(host.first_seen), when(host.last_seen))])
    print_table(console, "Hosts that accepted TCP/135 from the internet",
                (Column("host"), Column("sessions", 8), Column("sources (sessions)"), Column("seen (UTC)", 10)), rows)
    return len(inventory)


def write_json(inventory: Sequence[ExposedHost], stream: IO[str]) -> int:
    json.dump([host.to_dict() for host in inventory], stream, ensure_ascii=True, indent=2)
    stream.write("\n")
    return len(inventory)


WRITERS = {"table": write_table, "json": write_json}
