"""Alert writers: each module offers ``write(alerts, stream, guides=False)``; :data:`WRITERS`
names them for ``hunt --format`` (imported when chosen). Network and file destinations
for live mode are sinks (:mod:`rpcwatch.outputs.sinks`)."""
from __future__ import annotations

from rpcwatch.registry import Registry

WRITERS = Registry("output format", {
    "jsonl": "rpcwatch.outputs.jsonl:write",
    "csv": "rpcwatch.outputs.csv:write",
    "table": "rpcwatch.outputs.table:write",
})
