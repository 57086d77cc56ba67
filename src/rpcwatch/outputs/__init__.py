"""Alert writers. Each module offers ``write(alerts, stream)``; :data:`WRITERS` names them."""
from __future__ import annotations

from rpcwatch.outputs import csv, jsonl, table

WRITERS = {"jsonl": jsonl.write, "csv": csv.write, "table": table.write}
