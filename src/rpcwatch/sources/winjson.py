"""Windows events exported as JSON, recognised by their content:

* ``evtx-json``: ``evtx_dump`` output, ``{"Event": {"System": ..., "EventData": ...}}``,
  one object per line or pretty-printed objects one after another (optionally with
  ``evtx_dump``'s ``Record N`` lines between them);
* ``ndjson-flat``: flat objects with ``EventID`` and ``Channel`` at the top level, as
  NXLog writes them (the OTRF / Mordor data sets);
* ``winlogbeat``: Winlogbeat / Elastic Agent ECS documents (``winlog.*``), raw or
  passed through the Sysmon module.

All three become rows of the ``windows`` table with Sigma's names for Windows XML
events (see :mod:`rpcwatch.sources.windows` and ``docs/windows.md``). Blocks of lines
are parsed in bulk by Arrow; Python reads single lines only in broken blocks.
"""
from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.datafiles import load_yaml
from rpcwatch.sources.base import ReadStats, TableBatch, register
from rpcwatch.sources.inputs import UTF8_BOM, InputFile
from rpcwatch.sources.jsonlines import JSON_LINES_MARKER, JsonBlockParser, JsonLinesParser
from rpcwatch.sources.lines import LineParser, LineReader, RewrittenStream
from rpcwatch.sources.prefilter import LineFilter, PrefilterPlan
from rpcwatch.sources.windows import WINDOWS_TABLE, EventJsonTables, conform_system_fields, is_system_field

EVTX_JSON = "evtx-json"
FLAT_JSON = "ndjson-flat"
WINLOGBEAT = "winlogbeat"

_RECORD_LINE = re.compile(rb"^Record [0-9]+\r?\n", re.MULTILINE)  # evtx_dump's separators
_EVENT_OBJECT = re.compile(rb'\A\{\s*"Event(?:_attributes)?"\s*:')
_WINLOG_KEY = re.compile(rb'"winlog"\s*:\s*\{|"winlog\.[a-z_]+"\s*:')
_FLAT_KEYS = (re.compile(rb'[{,]\s*"EventID"\s*:'), re.compile(rb'[{,]\s*"Channel"\s*:'))
#: XML's predefined entities; ``&amp;`` last so that ``&amp;lt;`` becomes ``&lt;``
_XML_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&"))
#: NXLog's rendered message text, not escaped like the fields (see docs/windows.md)
_NXLOG_MESSAGE = "Message"


def detect_shape(head: bytes) -> str | None:
    """The export shape of a stream from its first bytes, or None."""
    text = _strip_preamble(head)
    if _EVENT_OBJECT.match(text):
        return EVTX_JSON
    first_line = text.split(b"\n", 1)[0]
    if not first_line.startswith(b"{"):
        return None
    if _WINLOG_KEY.search(first_line):
        return WINLOGBEAT
    if all(key.search(first_line) for key in _FLAT_KEYS):
        return FLAT_JSON
    return None


def _strip_preamble(head: bytes) -> bytes:
    text = head.removeprefix(UTF8_BOM).lstrip()
    return _RECORD_LINE.sub(b"", text, count=1).lstrip() if text.startswith(b"Record ") else text


@register
class WindowsJsonReader(LineReader):
    """The JSON export shapes above; ``stats.format`` names the shape found."""

    format_name = "windows-json"
    marker = JSON_LINES_MARKER

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        return detect_shape(head) is not None

    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        head = stream.peek(1 << 16)
        shape = detect_shape(head) or FLAT_JSON
        stats.format = shape
        if shape == EVTX_JSON and _is_pretty(head):
            stream = io.BufferedReader(_OneObjectPerLine(stream), buffer_size=1 << 20)
            source = replace(source, disk_path=None)
        # Only evtx-json keeps the producer's values byte for byte; the other shapes'
        # values change on the way (escapes, ECS value maps), so the literal prefilter,
        # which looks at raw bytes, would not be sound for them.
        scan_filter = prefilter.for_table(WINDOWS_TABLE, EVTX_JSON) if prefilter and shape == EVTX_JSON else None
        return _WindowsJsonParser(source, stream, stats, scan_filter, shape)


class _WindowsJsonParser(JsonLinesParser):
    table = WINDOWS_TABLE

    def __init__(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats, scan_filter: LineFilter | None,
                 shape: str):
        super().__init__(source, stream, stats, scan_filter)
        self.shape = shape
        self._convert = _converter(shape, stats, self.json)

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        table = self._convert(lines)
        if table is not None and table.num_rows:
            yield TableBatch(WINDOWS_TABLE, table, self.source.path, self.shape)


class _OneObjectPerLine(RewrittenStream):
    """evtx_dump's pretty-printed objects as one object per line (see :func:`_pretty_records`)."""

    def __init__(self, raw: BinaryIO):
        super().__init__(raw)
        self._records = _pretty_records(iter(lambda: raw.read(1 << 24), b""))

    def next_block(self) -> bytes | None:
        return next(self._records, None)


def _is_pretty(first: bytes) -> bool:
    """``evtx_dump -o json`` pretty-prints; ``-o jsonl`` writes one object per line."""
    return _strip_preamble(first).split(b"\n", 1)[0].strip() == b"{"


def _pretty_records(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Pretty-printed objects, one after another, rewritten one object per line.

    A raw newline cannot occur inside a JSON string, and nested lines are indented, so
    a line starting with ``{`` starts a record: blocks are cut there (except the last,
    which ends with the input) and every other newline becomes a space."""
    carry = b""
    block = next(blocks, None)
    while block is not None:
        following = next(blocks, None)
        data = carry + block
        cut = len(data) if following is None else data.rfind(b"\n{") + 1
        carry = data[cut:]
        if data[:cut].strip():
            yield _one_object_per_line(data[:cut])
        block = following


def _one_object_per_line(data: bytes) -> bytes:
    if b"Record " in data:
        data = _RECORD_LINE.sub(b"", data)
    # NUL cannot occur in valid JSON text, so it can hold the record breaks for a moment
    data = data.replace(b"\n{", b"\x00").replace(b"\r\n", b" ").replace(b"\n", b" ")
    return data.replace(b"\x00", b"\n{").strip() + b"\n"


def _converter(shape: str, stats: ReadStats, parser: JsonBlockParser) -> Callable[[bytes], pa.Table | None]:
    if shape == EVTX_JSON:
        return EventJsonTables(stats).build
    normalise = _flat_to_sigma if shape == FLAT_JSON else _ecs_to_sigma

    def convert(block: bytes) -> pa.Table | None:
        table = parser.parse(block)
        return None if table is None else conform_system_fields(normalise(table), stats)

    return convert


# --- field mapping data -------------------------------------------------------------

@dataclass(frozen=True)
class SysmonModuleMapping:
    """How the Winlogbeat Sysmon module renamed Sysmon fields to ECS."""

    channel: str
    rename: dict[str, str]
    by_event_id: dict[int, dict[str, str]]
    values: dict[str, dict]
    joins: dict[str, dict]


@dataclass(frozen=True)
class FieldMappings:
    nxlog_rename: dict[str, str]
    winlogbeat_rename: dict[str, str]
    #: prefix of data fields -> the XML section they come from
    data_prefixes: dict[str, str]
    sysmon: SysmonModuleMapping
    #: ECS field -> [(Sysmon field, EventIDs or None for every other Sysmon event)]
    sysmon_targets: dict[str, list[tuple[str, frozenset[int] | None]]] = field(default_factory=dict)


@lru_cache(maxsize=1)
def field_mappings() -> FieldMappings:
    data = load_yaml("rpcwatch.sources", "data", "windows_fields.yml")
    beat = data["winlogbeat"]
    sysmon = SysmonModuleMapping(**beat["sysmon"])
    return FieldMappings(
        nxlog_rename=data["nxlog"]["rename"],
        winlogbeat_rename=beat["rename"],
        data_prefixes=beat["data_prefixes"],
        sysmon=sysmon,
        sysmon_targets=_sysmon_targets(sysmon),
    )


def _sysmon_targets(sysmon: SysmonModuleMapping) -> dict[str, list[tuple[str, frozenset[int] | None]]]:
    """Per ECS field, which Sysmon field it came from: per-EventID exceptions first,
    then the module's usual source for all other Sysmon events."""
    exceptions: dict[str, dict[str, set[int]]] = {}
    for event_id, renames in sysmon.by_event_id.items():
        for ecs, native in renames.items():
            exceptions.setdefault(ecs, {}).setdefault(native, set()).add(int(event_id))
    targets: dict[str, list[tuple[str, frozenset[int] | None]]] = {}
    for ecs in sorted(set(sysmon.rename) | set(exceptions)):
        targets[ecs] = [(native, frozenset(ids)) for native, ids in exceptions.get(ecs, {}).items()]
        if ecs in sysmon.rename:
            targets[ecs].append((sysmon.rename[ecs], None))
    return targets


# --- NXLog / Mordor flat -----------------------------------------------------------

def _flat_to_sigma(table: pa.Table) -> pa.Table:
    rename = field_mappings().nxlog_rename
    table = table.rename_columns([rename.get(name, name) for name in table.column_names])
    table = _keywords_as_hex(table)
    return _unescape_nxlog_fields(table)


def _keywords_as_hex(table: pa.Table) -> pa.Table:
    """NXLog writes Keywords as a signed 64-bit number; the XML (and the evtx parser)
    write the same bits as ``0x...`` hex."""
    if "Keywords" not in table.column_names or not pa.types.is_integer(table.schema.field("Keywords").type):
        return table
    column = table.column("Keywords")
    distinct = pc.unique(column)  # a log has a handful of keyword masks: format each once
    texts = pa.array([None if v is None else f"0x{v & 0xFFFF_FFFF_FFFF_FFFF:x}" for v in distinct.to_pylist()],
                     type=pa.string())
    hexed = pc.take(texts, pc.index_in(column, value_set=distinct))
    return table.set_column(table.column_names.index("Keywords"), "Keywords", hexed)


def _unescape_nxlog_fields(table: pa.Table) -> pa.Table:
    """NXLog's im_msvistalog leaves the XML escapes of the event's rendering in every
    field value (``&lt;Anonymous Pipe&gt;``, ``&amp;``) while its ``Message``, rendered
    by Windows from the same values, has the real characters. Undo them on rows that
    say they came from im_msvistalog."""
    if "SourceModuleType" not in table.column_names:
        return table
    from_nxlog = pc.fill_null(pc.equal(table.column("SourceModuleType"), "im_msvistalog"), False)
    if not pc.any(from_nxlog).as_py():
        return table
    for index, name in enumerate(table.column_names):
        column = table.column(index)
        if name == _NXLOG_MESSAGE or not pa.types.is_string(column.type):
            continue
        if not pc.any(pc.match_substring(column, "&")).as_py():
            continue
        unescaped = column
        for entity, char in _XML_ENTITIES:
            unescaped = pc.replace_substring(unescaped, entity, char)
        table = table.set_column(index, name, pc.if_else(from_nxlog, unescaped, column))
    return table


# --- Winlogbeat / ECS --------------------------------------------------------------

def _ecs_to_sigma(table: pa.Table) -> pa.Table:
    """Sigma columns derived from the ECS ones, placed so that an original
    ``winlog.event_data`` value wins over a value recovered from an ECS rename
    (:func:`conform_system_fields` merges same-named columns, first value first).
    ECS columns without a Sigma counterpart stay under their ECS names."""
    mappings = field_mappings()
    names: list[str] = []
    columns: list[pa.ChunkedArray] = []
    rest_names: list[str] = []
    rest_columns: list[pa.ChunkedArray] = []
    for name, column in zip(table.column_names, table.columns):
        native = _native_name(name, mappings)
        (names if native else rest_names).append(native or name)
        (columns if native else rest_columns).append(column)
    for name, column in _undo_sysmon_module(table, mappings):
        names.append(name)
        columns.append(column)
    return pa.table(columns + rest_columns, names=names + rest_names)


def _native_name(name: str, mappings: FieldMappings) -> str | None:
    if name in mappings.winlogbeat_rename:
        return mappings.winlogbeat_rename[name]
    for prefix, section in mappings.data_prefixes.items():
        if name.startswith(prefix):
            native = name[len(prefix):]
            return f"{section}_{native}" if is_system_field(native) else native
    return None


def _undo_sysmon_module(table: pa.Table, mappings: FieldMappings) -> Iterator[tuple[str, pa.ChunkedArray]]:
    sysmon = mappings.sysmon
    if "winlog.channel" not in table.column_names:
        return
    is_sysmon = pc.fill_null(pc.equal(table.column("winlog.channel"), sysmon.channel), False)
    if not pc.any(is_sysmon).as_py():
        return
    event_id = _event_ids(table)
    for ecs, targets in mappings.sysmon_targets.items():
        if ecs in table.column_names:
            yield from _renamed_back(table.column(ecs), targets, is_sysmon, event_id)
    for ecs, rule in sysmon.values.items():
        if ecs in table.column_names:
            mapped = _mapped_values(table.column(ecs), rule["map"])
            for native in rule["fields"]:
                yield native, _where(is_sysmon, mapped)
    for native, rule in sysmon.joins.items():
        if all(part in table.column_names for part in rule["fields"]):
            joined = pc.binary_join_element_wise(*(table.column(p) for p in rule["fields"]), rule["separator"])
            yield native, _where(is_sysmon, joined)


def _event_ids(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """``winlog.event_id`` as numbers (Winlogbeat writes it as a string)."""
    if "winlog.event_id" not in table.column_names:
        return pa.nulls(table.num_rows, pa.int64())
    column = table.column("winlog.event_id")
    if pa.types.is_integer(column.type):
        return column
    numeric = pc.match_substring_regex(pc.cast(column, pa.string()), r"^[0-9]+$")
    return pc.cast(pc.if_else(numeric, pc.cast(column, pa.string()), pa.scalar(None, pa.string())), pa.int64())


def _renamed_back(column, targets: list[tuple[str, frozenset[int] | None]], is_sysmon,
                  event_id) -> Iterator[tuple[str, pa.ChunkedArray]]:
    exceptions: set[int] = set()
    for native, ids in targets:
        if ids is not None:
            exceptions |= ids
            rows = pc.and_(is_sysmon, pc.fill_null(pc.is_in(event_id, value_set=pa.array(sorted(ids))), False))
        else:
            others = pc.invert(pc.fill_null(pc.is_in(event_id, value_set=pa.array(sorted(exceptions), pa.int64())),
                                            False))
            rows = pc.and_(is_sysmon, others)
        yield native, _where(rows, column)


def _mapped_values(column, value_map: dict[str, str]):
    keys = pa.array(list(value_map))
    values = pa.array(list(value_map.values()))
    return pc.take(values, pc.index_in(pc.utf8_lower(pc.cast(column, pa.string())), value_set=keys))


def _where(rows, column):
    return pc.if_else(rows, column, pa.scalar(None, column.type))
