"""Zeek logs: the ASCII writer's TSV (with or without ``#`` header) and JSON lines.

Every Zeek log loads as table ``zeek.<path>`` with Zeek's own field names (``id.orig_h``)
and Arrow types derived from Zeek's (``port``/``count`` -> int64, ``time``/``interval``
-> float64 seconds, ``bool`` -> bool, ``set``/``vector`` -> list<string>).
Parsing is done block-wise by Arrow's CSV/JSON parsers; Python only looks at the
rare lines that are broken.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import PurePath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from rpcwatch.schema import RAW_COLUMN, ZEEK_FLOAT_TYPES, ZEEK_INT_TYPES
from rpcwatch.sources.base import ReadStats, TableBatch, register, representable_seconds
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.jsonlines import JSON_LINES_MARKER, JsonLinesParser, excerpt, flatten_dict
from rpcwatch.sources.lines import LineParser, LineReader
from rpcwatch.sources.prefilter import LineFilter, PrefilterPlan
from rpcwatch.sources.scan import Run

_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"

#: Zeek field types for logs written with ``tsv=T`` (no ``#types`` line)
KNOWN_FIELD_TYPES = {
    "ts": "time", "id.orig_p": "port", "id.resp_p": "port", "duration": "interval",
    "orig_bytes": "count", "resp_bytes": "count", "missed_bytes": "count",
    "orig_pkts": "count", "orig_ip_bytes": "count", "resp_pkts": "count",
    "resp_ip_bytes": "count", "local_orig": "bool", "local_resp": "bool", "rtt": "interval",
    "tunnel_parents": "set[string]", "ip_proto": "count", "vlan": "int", "inner_vlan": "int",
}

#: how to recognise a log when neither ``#path`` nor ``_path`` names it
PATH_SIGNATURES = (
    ("dce_rpc", {"endpoint", "operation"}),
    ("conn", {"proto", "conn_state"}),
    ("conn", {"proto", "history"}),
    ("conn", {"proto", "id.resp_p", "orig_bytes"}),
)

_FIELD_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]*")


def log_path_for(fields: Iterable[str], file_path: str) -> str:
    """Name a Zeek log from its field names, else from Zeek's file naming
    (``conn.log``, ``conn.10:00:00-11:00:00.log.gz``, ``dce_rpc.json.gz``)."""
    names = set(fields)
    for path, signature in PATH_SIGNATURES:
        if signature <= names:
            return path
    stem = PurePath(file_path.split("!")[-1]).name.split(".")[0]
    return stem if re.fullmatch(r"[a-z0-9_]+", stem or "") else "unknown"


def _unescape_zeek(value: str) -> str:
    """Zeek's ``get_unescaped_string``: only ``\\xNN`` sequences are escapes."""
    raw = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
    # chr() produced code points 0-255 standing for bytes; rebuild UTF-8 where valid
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw if any(ord(c) > 255 for c in raw) else raw.encode("latin-1").decode(
            "utf-8", errors="backslashreplace")


def _unescape_column(column: pa.Array) -> pa.Array:
    has_escape = pc.match_substring(column, "\\x")
    if not pc.any(has_escape).as_py():
        return column
    values = column.to_pylist()
    for index in pc.indices_nonzero(has_escape).to_pylist():
        values[index] = _unescape_zeek(values[index])
    return pa.array(values, type=pa.string())


@dataclass
class ZeekHeader:
    """The ``#`` metadata of one TSV block."""

    separator: bytes = b"\t"
    set_separator: str = ","
    empty_field: str = "(empty)"
    unset_field: str = "-"
    path: str | None = None
    fields: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)

    def type_of(self, index: int) -> str:
        if index < len(self.types):
            return self.types[index]
        return KNOWN_FIELD_TYPES.get(self.fields[index], "string")

    def table(self, file_path: str) -> str:
        return "zeek." + (self.path or log_path_for(self.fields, file_path))


def _row_skipper(stats: ReadStats):
    """Arrow's handler for a row of the wrong width. Not a method of the block: Arrow holds
    the handler in C++, where the garbage collector cannot see a cycle back to the block,
    so a bound method would keep every block (and its statistics) alive."""
    def skip(row) -> str:
        stats.skip(f"wrong number of fields (expected {row.expected_columns})", where=excerpt(row.text))
        return "skip"

    return skip


class _Block:
    """Parses data lines of one header block into typed Arrow tables."""

    def __init__(self, header: ZeekHeader, source: InputFile, stats: ReadStats):
        self.header = header
        self.stats = stats
        self.table = header.table(source.path)
        names = _unique(header.fields)
        self._read_options = pcsv.ReadOptions(column_names=names, block_size=1 << 24)
        self._parse_options = pcsv.ParseOptions(
            delimiter=header.separator.decode("latin-1"), quote_char=False,
            escape_char=False, double_quote=False, ignore_empty_lines=True,
            invalid_row_handler=_row_skipper(stats))
        self._convert_options = pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=[header.unset_field], strings_can_be_null=True,
            quoted_strings_can_be_null=False)

    def parse(self, lines: bytes, raw: bool = False) -> pa.Table | None:
        """Typed rows of whole lines; with ``raw`` also the line itself (keyword rules
        search a TSV record's raw text), as column ``__raw__``."""
        if not lines.strip():
            return None
        try:
            parsed = pcsv.read_csv(pa.py_buffer(lines), read_options=self._read_options,
                                   parse_options=self._parse_options,
                                   convert_options=self._convert_options)
        except pa.ArrowInvalid as exc:  # e.g. an embedded NUL or an unusable block
            self.stats.skip(f"unparseable block ({exc})", count=lines.count(b"\n") or 1)
            return None
        if not parsed.num_rows:
            return None
        typed = self._typed(parsed)
        if raw:
            texts = [line for line in lines.decode("utf-8", errors="backslashreplace").split("\n") if line.strip()]
            if len(texts) == typed.num_rows:
                typed = typed.append_column(RAW_COLUMN, pa.array(texts, pa.string()))
            else:  # a row the parser refused: lines and rows no longer pair up
                self.stats.warn("raw text not kept for a block with refused rows (keyword rules see field values)")
        return typed

    def _typed(self, raw: pa.Table) -> pa.Table:
        columns = []
        for index, name in enumerate(raw.column_names):
            column = raw.column(index).combine_chunks()
            columns.append(self._convert(name, self.header.type_of(index), column))
        return pa.table(columns, names=raw.column_names)

    def _convert(self, name: str, zeek_type: str, column: pa.Array) -> pa.Array:
        empty = self.header.empty_field
        if zeek_type.startswith(("set[", "vector[", "table[")):
            is_empty = pc.fill_null(pc.equal(column, empty), False)
            column = _unescape_column(column)
            parts = pc.split_pattern(column, self.header.set_separator)
            return pc.if_else(is_empty, pa.scalar([], pa.list_(pa.string())), parts)
        if zeek_type in ZEEK_INT_TYPES:
            return self._cast(name, zeek_type, column, pa.int64(), _INT_RE)
        if zeek_type in ZEEK_FLOAT_TYPES:
            seconds = self._cast(name, zeek_type, column, pa.float64(), _FLOAT_RE)
            return representable_seconds(seconds, name, self.stats) if zeek_type == "time" else seconds
        if zeek_type == "bool":
            truth = pc.equal(column, "T")
            known = pc.or_(truth, pc.equal(column, "F"))
            bad = pc.sum(pc.invert(pc.fill_null(known, True))).as_py() or 0
            if bad:
                self.stats.warn(f"invalid bool value in field {name} (kept as unset)", count=bad)
            return pc.if_else(known, truth, pa.scalar(None, pa.bool_()))
        column = pc.if_else(pc.fill_null(pc.equal(column, empty), False), "", column)
        return _unescape_column(column)

    def _cast(self, name: str, zeek_type: str, column: pa.Array, target: pa.DataType,
              pattern: str) -> pa.Array:
        try:
            return pc.cast(column, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        valid = pc.match_substring_regex(column, pattern)
        bad = pc.sum(pc.invert(pc.fill_null(valid, True))).as_py() or 0
        if bad:
            self.stats.warn(f"invalid {zeek_type} value in field {name} (kept as unset)", count=bad)
        kept = pc.if_else(valid, column, pa.scalar(None, pa.string()))
        try:
            return pc.cast(kept, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # well-formed but beyond the type (a Zeek count above 2**63 - 1): value by value,
            # only in the block that has one
            values = [_in_range(v, target) for v in kept.to_pylist()]
            out = sum(1 for v, k in zip(values, kept.to_pylist()) if v is None and k is not None)
            self.stats.warn(f"{zeek_type} value out of range in field {name} (kept as unset)", count=out)
            return pa.array(values, type=target)


def _in_range(text: str | None, target: pa.DataType) -> int | float | None:
    if text is None:
        return None
    if pa.types.is_integer(target):
        number = int(text)
        return number if -(1 << 63) <= number < (1 << 63) else None
    return float(text)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count + 1}")
    return out


@register
class ZeekTsvReader(LineReader):
    """Zeek's ASCII TSV: ``#`` header blocks (several per file allowed), or ``tsv=T``."""

    format_name = "zeek-tsv"
    marker = b"\t"
    headers = b"#"

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        lines = head.lstrip(b"\r\n").split(b"\n", 256)[:256]
        if lines[0].startswith((b"#separator", b"#fields\t")):
            return True
        if lines[0].startswith(b"###"):  # btest baselines: diff-sorted, data may precede the header
            return any(line.startswith((b"#separator", b"#fields\t")) for line in lines) or \
                plain_header(next((line for line in lines if not line.startswith(b"###")), b"")) is not None
        return plain_header(lines[0]) is not None

    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        return _TsvParser(source, stream, stats, prefilter, self.format_name)

    @classmethod
    def resume_context(cls, head: bytes) -> bytes:
        """The ``#`` header block at the start (separator, fields, types), or the field
        names line of ``tsv=T``: a later piece of the log is read with it."""
        lines = head.split(b"\n")
        if plain_header(lines[0]) is not None:
            return lines[0] + b"\n"
        block = []
        for line in lines[:-1]:  # the last element is an incomplete line
            if not line.startswith(b"#") or line.startswith(b"#close"):
                break
            block.append(line + b"\n")
        return b"".join(block)

def plain_header(line: bytes) -> list[str] | None:
    """The field names of a ``tsv=T`` log's first line, or None."""
    names = line.rstrip(b"\r").split(b"\t")
    if len(names) < 3 or not all(_FIELD_NAME.fullmatch(n) for n in names):
        return None
    decoded = [n.decode() for n in names]
    if not ({"ts", "uid", "id.orig_h"} & set(decoded)):
        return None
    return decoded


class _TsvParser(LineParser):
    """One TSV input: the header block in force, and the table its lines belong to."""

    def __init__(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats, prefilter: PrefilterPlan | None,
                 format_name: str):
        super().__init__(source, stream, stats)
        self._prefilter, self._format = prefilter, format_name
        fields = plain_header(stream.peek(1 << 16).split(b"\n", 1)[0])
        self.meta = ZeekHeader(fields=fields or [])
        self.block: _Block | None = None
        if fields is not None:  # tsv=T: the first line names the fields; data starts after it
            self.start = len(stream.readline())
            self.block = _Block(self.meta, source, stats)
        if prefilter is not None:
            first_table = self.meta.table(source.path) if self.block else _table_from_head(
                stream.peek(1 << 16), source.path)
            self.scan_filter = prefilter.for_table(first_table, format_name)

    @property
    def table(self) -> str | None:  # type: ignore[override]
        return None if self.block is None else self.block.table

    @property
    def ready(self) -> bool:
        return self.block is not None

    def header(self, lines: bytes) -> bool:
        self.meta, started = _apply_header_lines(self.meta, lines, self.stats)
        if not started:
            return False
        problem = _unusable_separator(self.meta.separator)
        self.unreadable = f"data line under a #separator that {problem}" if problem else None
        self.block = None if problem else _Block(self.meta, self.source, self.stats)
        return not problem

    def line_filter(self) -> LineFilter | None:
        if self._prefilter is None or self.block is None:
            return None
        return self._prefilter.for_table(self.block.table, self._format)

    @property
    def _expected(self) -> int:
        return len(self.meta.fields) - 1

    def well_formed(self, run: Run) -> bool:
        return self._expected > 0 and self.meta.separator == b"\t" and run.marks == self._expected * run.lines \
            and not run.returns

    def quick_check(self, data: bytes, lines: int) -> bool:
        return self._expected > 0 and data.count(self.meta.separator) == self._expected * lines \
            and b"\r" not in data

    def malformed(self, line: bytes) -> str | None:
        if line.count(self.meta.separator) != self._expected:
            return f"wrong number of fields (expected {self._expected + 1})"
        if b"\r" in line.rstrip(b"\r\n"):  # Arrow would end the row there; Zeek writes \x0d
            return "carriage return inside a line"
        return None

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        assert self.block is not None
        raw = self._prefilter is not None and self._prefilter.keeps_raw(self.block.table)
        table = self.block.parse(lines, raw=raw)
        if table is not None:
            yield TableBatch(self.block.table, table, self.source.path, self._format)


def _unusable_separator(separator: bytes) -> str | None:
    """Why Arrow's parser cannot split on this separator (one ASCII byte, not a line end)."""
    if len(separator) != 1:
        return f"is {len(separator)} bytes long (one byte expected)"
    if separator in (b"\n", b"\r", b"\x00") or separator >= b"\x80":
        return f"is not a usable field separator ({separator!r})"
    return None


def _table_from_head(head: bytes, file_path: str) -> str:
    """The table of a TSV log from its first header block."""
    meta, _ = _apply_header_lines(ZeekHeader(), b"\n".join(
        line for line in head.split(b"\n") if line.startswith(b"#")), ReadStats(file_path))
    return meta.table(file_path)


def _apply_header_lines(meta: ZeekHeader, lines: bytes, stats: ReadStats) -> tuple[ZeekHeader, bool]:
    """Update the header from ``#`` lines; True when a new ``#fields`` list starts a block."""
    started = False
    for raw in lines.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", errors="backslashreplace")
        if not line or line.startswith("##"):
            continue
        key, _, value = line[1:].partition("\t")
        if key.startswith("separator"):
            # '#separator \x09' (a space, the writer's format) or, seen in the wild, a tab
            escaped = key[len("separator"):].strip() or value.strip()
            meta = replace(meta, separator=_decode_escaped(escaped))
        elif key == "set_separator":
            meta = replace(meta, set_separator=_decode_escaped(value).decode("latin-1"))
        elif key == "empty_field":
            meta = replace(meta, empty_field=value)
        elif key == "unset_field":
            meta = replace(meta, unset_field=value)
        elif key == "path":
            meta = replace(meta, path=value or None)
        elif key == "fields":
            meta = replace(meta, fields=value.split("\t"), types=[])
            started = True
        elif key == "types":
            meta = replace(meta, types=value.split("\t"))
    if started and meta.types and len(meta.types) != len(meta.fields):
        stats.warn("#types and #fields differ in length (extra types ignored)")
    return meta, started


def _decode_escaped(text: str) -> bytes:
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  text.encode("latin-1", errors="replace")) or b"\t"


@register
class ZeekJsonReader(LineReader):
    """Zeek's JSON writer: one object per line, flat dotted keys, unset fields omitted.

    ``ts`` may be epoch seconds, epoch milliseconds or ISO-8601; it is normalised to
    float seconds like TSV. Nested objects are flattened to dotted names.
    """

    format_name = "zeek-json"
    marker = JSON_LINES_MARKER
    _KEYS = (b'"ts"', b'"uid"', b'"id.orig_h"', b'"_path"')

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        line = head.lstrip().split(b"\n", 1)[0]
        if not line.startswith(b"{"):
            return False
        return b'"ts"' in line and any(key in line for key in cls._KEYS[1:])

    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        log_table = self._table_of(stream.peek(1 << 16), source.path)
        scan_filter = None
        if prefilter is not None:  # a stream that names its records may mix logs: every Zeek table's filter
            scan_filter = prefilter.for_tables("zeek.", self.format_name) if log_table is None \
                else prefilter.for_table(log_table, self.format_name)
        return _ZeekJsonParser(source, stream, stats, scan_filter, log_table)

    @staticmethod
    def _table_of(head: bytes, file_path: str) -> str | None:
        """The log's table, named by the first record; None for a stream that names each
        record (``_path``) or whose first line is no object."""
        try:
            first = json.loads(head.split(b"\n", 1)[0])
        except ValueError:
            return None
        if not isinstance(first, dict) or "_path" in first:
            return None
        return "zeek." + log_path_for(flatten_dict(first).keys(), file_path)



class _ZeekJsonParser(JsonLinesParser):
    def __init__(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats, scan_filter: LineFilter | None,
                 log_table: str | None):
        super().__init__(source, stream, stats, scan_filter)
        self.table = log_table

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        table = self.json.parse(lines)
        if table is None:
            return
        table = _normalise_json_table(table, self.stats)
        for table_name, part in self._by_path(table):
            if part.num_rows:
                yield TableBatch(table_name, part, self.source.path, ZeekJsonReader.format_name)

    def _by_path(self, table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
        file_path = self.source.path
        if "_path" in table.column_names:
            paths = table.column("_path")
            for value in pc.unique(paths).to_pylist():
                part = table.filter(pc.fill_null(pc.equal(paths, value), False)) if value is not None \
                    else table.filter(pc.is_null(paths))
                name = value or log_path_for(table.column_names, file_path)
                yield "zeek." + name, part
            return
        yield "zeek." + log_path_for(table.column_names, file_path), table


def _normalise_json_table(table: pa.Table, stats: ReadStats) -> pa.Table:
    if "ts" in table.column_names:
        index = table.column_names.index("ts")
        table = table.set_column(index, "ts", _epoch_seconds(table.column("ts"), stats))
    return table


def _epoch_seconds(column: pa.ChunkedArray, stats: ReadStats) -> pa.Array:
    """``ts`` as float seconds whatever Zeek's ``json_timestamps`` setting was."""
    column = column.combine_chunks()
    if pa.types.is_timestamp(column.type):
        micros = pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64())
        return pc.divide(pc.cast(micros, pa.float64(), safe=False), 1e6)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return representable_seconds(_from_epoch_number(pc.cast(column, pa.float64(), safe=False)), "ts", stats)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        seconds = _parse_text_times(column)
        bad = pc.sum(pc.and_(pc.is_valid(column), pc.is_null(seconds))).as_py() or 0
        if bad:
            stats.warn("invalid ts value (kept as unset)", count=bad)
        return representable_seconds(seconds, "ts", stats)
    stats.warn(f"ts of unexpected type {column.type} (kept as unset)", count=len(column))
    return pa.nulls(len(column), pa.float64())


def _from_epoch_number(seconds: pa.Array) -> pa.Array:
    # TS_MILLIS: epoch milliseconds are > 1e11 for any date after 1973
    return pc.if_else(pc.greater(pc.abs(seconds), 1e11), pc.divide(seconds, 1000.0), seconds)


def _parse_text_times(column: pa.Array) -> pa.Array:
    """Epoch numbers written as text, or ISO-8601 (``2018-03-24T17:15:41.356590Z``)."""
    numeric = pc.match_substring_regex(column, _FLOAT_RE)
    as_number = _from_epoch_number(pc.cast(pc.if_else(numeric, column, pa.scalar(None, pa.string())),
                                           pa.float64()))
    iso = pc.if_else(numeric, pa.scalar(None, pa.string()), column)
    normalised = pc.replace_substring_regex(iso, r"(?i)z$|\+00:?00$", "")
    try:
        micros = pc.cast(pc.cast(normalised, pa.timestamp("us")), pa.int64())
    except pa.ArrowInvalid:
        micros = pa.array([_iso_to_micros(v) for v in normalised.to_pylist()], type=pa.int64())
    return pc.coalesce(as_number, pc.divide(pc.cast(micros, pa.float64(), safe=False), 1e6))


def _iso_to_micros(value: str | None) -> int | None:
    from datetime import datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1_000_000)
    except (ValueError, OverflowError):
        return None
