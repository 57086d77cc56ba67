"""Suricata EVE JSON: one event object per line (``eve.json``), every event type.

Every event becomes a row of table ``suricata.eve`` with EVE's own field names, nested
objects flattened to dotted names (``flow.state``, ``alert.signature``). Which event types
are connections (``flow``, ``netflow``, ``alert``) is for the log-source routes to say,
not the reader: the other types (``dns``, ``tls``, ``stats`` ...) stay readable by rules
written for them. Blocks are parsed by Arrow's JSON reader.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

from rpcwatch.sources.base import ReadStats, TableBatch, register
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.jsonlines import JSON_LINES_MARKER, JsonLinesParser
from rpcwatch.sources.lines import LineParser, LineReader
from rpcwatch.sources.prefilter import PrefilterPlan

SURICATA_TABLE = "suricata.eve"
#: Suricata writes ``timestamp`` first; a first line too long for the head is told by it
_EVE_START = re.compile(rb'\A\{\s*"timestamp"\s*:\s*"[^"]*"\s*,.*"event_type"\s*:')


def is_eve_event(line: bytes) -> bool:
    """An EVE event: ``event_type`` and ``timestamp`` at the top of the object (Filebeat's
    ECS documents nest them under ``suricata.eve`` and carry ``@timestamp``)."""
    try:
        event = json.loads(line)
    except ValueError:
        return bool(_EVE_START.match(line))
    return isinstance(event, dict) and isinstance(event.get("event_type"), str) \
        and "timestamp" in event and "@timestamp" not in event


@register
class SuricataEveReader(LineReader):
    format_name = "suricata-eve"
    marker = JSON_LINES_MARKER

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        first = head.lstrip().split(b"\n", 1)[0]
        return first.startswith(b"{") and is_eve_event(first)

    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        # EVE writes values as the sensor saw them (ports as numbers, addresses as text):
        # the literals of the rules' values are in the raw bytes, so the prefilter is sound.
        scan_filter = prefilter.for_table(SURICATA_TABLE, self.format_name) if prefilter else None
        return _EveParser(source, stream, stats, scan_filter)


class _EveParser(JsonLinesParser):
    table = SURICATA_TABLE

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        table = self.json.parse(lines)
        if table is not None and table.num_rows:
            yield TableBatch(SURICATA_TABLE, table, self.source.path, SuricataEveReader.format_name)
