"""ECS documents as Elasticsearch, Filebeat and Elastic Agent export them: one document (or
search hit with ``_source``) per line, or one JSON text holding them: an Elasticsearch
``_search`` response (``hits.hits``), a JSON array, Elastic's ``{"expected": [...]}`` test
files, or pretty-printed documents one after another.

Every document becomes a row of table ``ecs`` with its dotted ECS names (``source.ip``,
``destination.port``); a hit's ``_source`` fields are the document's, ``_index`` and
``_id`` stay. ``network.transport`` is filled from ``network.iana_number`` where only the
number was written (VPC flow documents). Windows events in ECS (Winlogbeat) are read by
:mod:`rpcwatch.sources.winjson`, whose reader is asked first.

A JSON text that is not one document per line is cut into documents by
:class:`DocumentStream` as it streams: a structural scan of each block (vectorised with
NumPy: quotes, escapes, nesting depth) finds the documents' braces and writes each
document on a line of its own, so the line reader parses them as NDJSON in bounded
blocks, however large the text. No JSON library offers this: streaming parsers give a
Python object per document, the thing the readers avoid.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.sources.base import ReadStats, TableBatch, register
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.jsonlines import (
    JSON_LINES_MARKER,
    JsonLinesParser,
    flatten_dict,
    flatten_structs,
)
from rpcwatch.sources.lines import LineParser, LineReader, RewrittenStream
from rpcwatch.sources.prefilter import PrefilterPlan
from rpcwatch.sources.suricata import is_eve_event

ECS_TABLE = "ecs"
HIT_SOURCE = "_source."
#: IANA protocol numbers -> ECS network.transport
TRANSPORTS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp", "132": "sctp"}
_ECS_KEYS = re.compile(rb'"(?:source|destination)"\s*:\s*\{\s*"(?:ip|address|port)"|"(?:source|destination)\.ip"\s*:'
                       rb'|"ecs"\s*:\s*\{\s*"version"|"ecs\.version"\s*:')
_WINDOWS = re.compile(rb'"winlog"\s*:|"winlog\.')
#: where the documents of a JSON text are: the array at the end of these key paths
_CONTAINERS = (("expected",), ("hits", "hits"))
SCAN_BLOCK = 16 << 20


def is_ecs_document(document: object) -> bool:
    if not isinstance(document, dict):
        return False
    source = document.get("_source")
    names = flatten_dict(source if isinstance(source, dict) else document)
    if any(name == "winlog" or name.startswith("winlog.") for name in names):
        return False
    addressed = {"source.ip", "destination.ip", "source.address", "destination.address"} & set(names)
    return bool(addressed) or ("@timestamp" in names and any(n.startswith(("event.", "ecs.")) for n in names))


def _first_document(head: bytes) -> dict | None:
    """The first line as a document, when the text has one document per line."""
    try:
        first = json.loads(head.lstrip().split(b"\n", 1)[0])
    except ValueError:
        return None
    if not isinstance(first, dict) or isinstance(first.get("expected"), list) or isinstance(first.get("hits"), dict):
        return None  # a JSON text on one line: an array, a test file, a search response
    return first


@register
class EcsReader(LineReader):
    format_name = "ecs-json"
    marker = JSON_LINES_MARKER

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        text = head.lstrip()
        if not text.startswith((b"{", b"[")) or _WINDOWS.search(text):
            return False
        first = _first_document(text)
        if first is not None:
            return is_ecs_document(first) and not is_eve_event(text.split(b"\n", 1)[0])
        return bool(_ECS_KEYS.search(text))  # a JSON text holding documents

    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        # No prefilter: network.transport is filled from network.iana_number, so a rule's
        # "tcp" need not be in a matching document's bytes.
        head = stream.peek(1 << 16)
        if _first_document(head) is None:
            stats.format = "ecs-json-text"
            stream = io.BufferedReader(DocumentStream(stream, container_of(head.lstrip()),
                                                      len(head) - len(head.lstrip())), buffer_size=1 << 20)
            source = replace(source, disk_path=None)
        return _EcsParser(source, stream, stats)


class _EcsParser(JsonLinesParser):
    table = ECS_TABLE

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        table = self.json.parse(lines)
        if table is not None and table.num_rows:
            yield TableBatch(ECS_TABLE, with_transport(hits_as_documents(table, self.stats)), self.source.path,
                             self.stats.format)


def hits_as_documents(table: pa.Table, stats: ReadStats) -> pa.Table:
    """A search hit's ``_source`` fields under the document's own names (a document and a
    hit in one block give one column per name)."""
    if not any(name.startswith(HIT_SOURCE) for name in table.column_names):
        return table
    return flatten_structs(table.rename_columns([name.removeprefix(HIT_SOURCE) for name in table.column_names]),
                           stats)


def with_transport(table: pa.Table) -> pa.Table:
    """``network.transport`` from ``network.iana_number`` where only the number is set."""
    if "network.iana_number" not in table.column_names:
        return table
    numbers = pc.cast(table.column("network.iana_number"), pa.string())
    named = pc.take(pa.array(list(TRANSPORTS.values())), pc.index_in(numbers, value_set=pa.array(list(TRANSPORTS))))
    if "network.transport" not in table.column_names:
        return table.append_column("network.transport", named)
    index = table.column_names.index("network.transport")
    given = pc.cast(table.column(index), pa.string())
    return table.set_column(index, "network.transport", pc.coalesce(given, named))


# --- JSON texts to one document per line ---------------------------------------------

@dataclass(frozen=True)
class Container:
    """Where a JSON text's documents are: from byte ``start`` on, the objects whose ``{``
    is at nesting ``depth`` (0: documents one after another; 1: a top-level array; 2:
    ``{"expected": [...]}``; 3: a search response's ``hits.hits``)."""

    depth: int
    start: int = 0


def container_of(head: bytes) -> Container:
    """The container of the documents, found in the text's first bytes."""
    if head.startswith(b"["):
        return Container(1)
    scan = _Scan()
    data = np.frombuffer(head, np.uint8)
    after, before = scan.depths(head)
    outside = scan.outside
    for path in _CONTAINERS:
        for match in re.finditer(rb'"%s"\s*:\s*\[' % path[-1].encode(), head):
            bracket = match.end() - 1
            if before[bracket] != len(path) or not outside[bracket]:
                continue
            # the objects around the array must be the values of the path's other keys
            opened = [np.flatnonzero(outside[:bracket] & (data[:bracket] == 0x7B) & (after[:bracket] == depth))
                      for depth in range(2, len(path) + 1)]
            if all(len(at) and re.search(rb'"%s"\s*:\s*\Z' % key.encode(), head[:at[-1]])
                   for at, key in zip(opened, path)):
                return Container(len(path) + 1, bracket + 1)
    return Container(0)


class _Scan:
    """The structure of a JSON text, block by block: which bytes are outside strings and
    how deeply nested each is, carried over block boundaries."""

    def __init__(self) -> None:
        self.in_string = False
        self.escaped = False  # the block ended inside a string on an odd run of backslashes
        self.depth = 0
        self.outside = np.zeros(0, bool)

    def depths(self, block: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Nesting depth after and before each byte; ``outside`` marks bytes outside strings."""
        data = np.frombuffer(block, np.uint8)
        quotes = self._real_quotes(data)
        inside = np.cumsum(quotes, dtype=np.int64) & 1
        inside = inside ^ 1 if self.in_string else inside
        self.outside = (inside == 0) & ~quotes
        delta = np.zeros(len(data), np.int64)
        delta[self.outside & ((data == 0x7B) | (data == 0x5B))] = 1
        delta[self.outside & ((data == 0x7D) | (data == 0x5D))] = -1
        after = self.depth + np.cumsum(delta)
        if len(data):
            self.in_string, self.depth = bool(inside[-1]), int(after[-1])
            self.escaped = self._ends_escaping(data)
        return after, after - delta

    def _real_quotes(self, data: np.ndarray) -> np.ndarray:
        """Quotes not escaped: not preceded by an odd run of backslashes."""
        quotes = data == 0x22
        if not quotes.any():
            return quotes
        positions = np.arange(len(data))
        last_other = np.maximum.accumulate(np.where(data == 0x5C, -1, positions))
        before = np.concatenate(([-1], last_other[:-1]))  # the last non-backslash before each byte
        run = positions - 1 - before
        carried = (before == -1) & self.escaped  # a run that goes on from the block before
        return quotes & (((run + carried) & 1) == 0)

    def _ends_escaping(self, data: np.ndarray) -> bool:
        others = np.flatnonzero(data != 0x5C)
        run = len(data) - 1 - (others[-1] if len(others) else -1)
        if len(others) == 0:
            return (run + self.escaped) % 2 == 1
        return run % 2 == 1


class DocumentStream(RewrittenStream):
    """A JSON text rewritten as its documents, one per line (newlines inside a document
    become spaces: JSON allows none inside strings). Bytes outside the documents are
    dropped; the text after the container closes is not read."""

    def __init__(self, raw: BinaryIO, container: Container, skipped: int = 0):
        super().__init__(raw)
        self._container = container
        self._scan = _Scan()
        self._offset = -skipped  # offsets are counted from the text's first non-blank byte
        self._inside = False  # a document goes on from the block before
        self._done = False

    def next_block(self) -> bytes | None:
        if self._done:
            return None
        block = self._raw.read(SCAN_BLOCK)
        if not block:
            self._done = True
            return b"\n" if self._inside else None
        return self._documents(block)

    def _documents(self, block: bytes) -> bytes:
        data = np.frombuffer(block, np.uint8)
        after, before = self._scan.depths(block)
        outside, depth = self._scan.outside, self._container.depth
        positions = np.arange(len(data)) + self._offset
        self._offset += len(data)
        in_container = positions >= self._container.start
        if depth:
            closed = np.flatnonzero(outside & (data == 0x5D) & (after == depth - 1) & in_container)
            if len(closed):  # the container ends here: nothing after it is read
                in_container &= positions < positions[closed[0]]
                self._done = True
        opens = np.flatnonzero(outside & (data == 0x7B) & (before == depth) & in_container)
        closes = np.flatnonzero(outside & (data == 0x7D) & (after == depth) & in_container)
        marks = np.zeros(len(data) + 1, np.int64)
        marks[opens] += 1
        marks[closes + 1] -= 1
        kept = (np.cumsum(marks[:-1]) + self._inside) > 0
        self._inside = bool(kept[-1]) and not (len(closes) and closes[-1] == len(data) - 1)
        text = np.where((data == 0x0A) | (data == 0x0D), np.uint8(0x20), data)
        ends = np.cumsum(kept)[closes]  # where each document ends in the kept bytes
        return np.insert(text[kept], ends, np.uint8(0x0A)).tobytes()
