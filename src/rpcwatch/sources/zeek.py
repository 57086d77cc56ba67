"""Zeek logs: the ASCII writer's TSV (with or without ``#`` header) and JSON lines.

Every Zeek log loads as table ``zeek.<path>`` with Zeek's own field names (``id.orig_h``)
and Arrow types derived from Zeek's (``port``/``count`` -> int64, ``time``/``interval``
-> float64 seconds, ``bool`` -> bool, ``set``/``vector`` -> list<string>).
Parsing is done block-wise by Arrow's CSV/JSON parsers; Python only looks at the
rare lines that are broken.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from rpcwatch.sources.base import RAW_COLUMN, Reader, ReadStats, TableBatch, register
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.jsonlines import JsonBlockParser, drop_non_objects, excerpt, flatten_dict, repair_utf8
from rpcwatch.sources.prefilter import LineFilter, PrefilterPlan
from rpcwatch.sources.scan import Run, line_runs, run_bytes

#: data lines seen before any ``#fields`` header are held back up to this size
#: (btest baselines are diff-sorted, so their header can come after the data)
PENDING_LIMIT = 64 << 20

INT_TYPES = {"count", "port", "int"}
FLOAT_TYPES = {"double", "interval", "time"}
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


def log_path_for(fields: list[str] | set[str], file_path: str) -> str:
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
        if zeek_type in INT_TYPES:
            return self._cast(name, zeek_type, column, pa.int64(), _INT_RE)
        if zeek_type in FLOAT_TYPES:
            return self._cast(name, zeek_type, column, pa.float64(), _FLOAT_RE)
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
            valid = pc.match_substring_regex(column, pattern)
            bad = pc.sum(pc.invert(pc.fill_null(valid, True))).as_py() or 0
            self.stats.warn(f"invalid {zeek_type} value in field {name} (kept as unset)",
                            count=bad)
            return pc.cast(pc.if_else(valid, column, pa.scalar(None, pa.string())), target)


def arrow_type(zeek_type: str) -> pa.DataType:
    """The Arrow type a column of this Zeek type has in a ``zeek.*`` table."""
    if zeek_type.startswith(("set[", "vector[", "table[")):
        return pa.list_(pa.string())
    if zeek_type in INT_TYPES:
        return pa.int64()
    if zeek_type in FLOAT_TYPES:
        return pa.float64()
    return pa.bool_() if zeek_type == "bool" else pa.string()


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count + 1}")
    return out


@register
class ZeekTsvReader(Reader):
    """Zeek's ASCII TSV: ``#`` header blocks (several per file allowed), or ``tsv=T``."""

    format_name = "zeek-tsv"

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        lines = head.lstrip(b"\r\n").split(b"\n", 256)[:256]
        if any(line.startswith((b"#separator", b"#fields\t")) for line in lines):
            return True  # also when diff-sorted data comes before the header (btest baselines)
        first = next((line for line in lines if not line.startswith(b"###")), b"")
        return cls._plain_header(first) is not None

    @staticmethod
    def _plain_header(line: bytes) -> list[str] | None:
        names = line.rstrip(b"\r").split(b"\t")
        if len(names) < 3 or not all(_FIELD_NAME.fullmatch(n) for n in names):
            return None
        decoded = [n.decode() for n in names]
        if not ({"ts", "uid", "id.orig_h"} & set(decoded)):
            return None
        return decoded

    @classmethod
    def resume_context(cls, head: bytes) -> bytes:
        """The ``#`` header block at the start (separator, fields, types), or the field
        names line of ``tsv=T``: a later piece of the log is read with it."""
        lines = head.split(b"\n")
        if cls._plain_header(lines[0]) is not None:
            return lines[0] + b"\n"
        block = []
        for line in lines[:-1]:  # the last element is an incomplete line
            if not line.startswith(b"#") or line.startswith(b"#close"):
                break
            block.append(line + b"\n")
        return b"".join(block)

    def read(self, source: InputFile, stream: BinaryIO, stats: ReadStats,
             prefilter: PrefilterPlan | None = None) -> Iterator[TableBatch]:
        stats.format = self.format_name
        meta, skipped = self._start(stream)
        plain = skipped > 0
        scan_filter = None
        if prefilter is not None:
            first_table = meta.table(source.path) if plain else _table_from_head(stream.peek(1 << 16), source.path)
            scan_filter = prefilter.for_table(first_table, self.format_name)
        block: _Block | None = _Block(meta, source, stats) if plain else None
        pending: list[Run] = []
        for run in line_runs(source, stream, stats, scan_filter, marker=b"\t", headers=True, start=skipped):
            if run.header is not None:
                meta, started = _apply_header_lines(meta, run.header, stats)
                if started:
                    block = _Block(meta, source, stats)
                    for held in pending:
                        yield from self._data(held, block, prefilter, scan_filter, source, stats)
                    pending = []
                continue
            if block is None:  # data before its header (diff-sorted btest baselines)
                if sum(held.length for held in pending) < PENDING_LIMIT:
                    pending.append(run)
                else:
                    stats.skip("data line before any #fields header", count=run.lines)
                continue
            yield from self._data(run, block, prefilter, scan_filter, source, stats)
        for held in pending:
            stats.skip("data line without a #fields header", count=held.lines,
                       where=excerpt(run_bytes(source, held).split(b"\n", 1)[0]))

    def _start(self, stream) -> tuple[ZeekHeader, int]:
        """A ``tsv=T`` log starts with a plain line of field names: consume it, and say how
        many bytes it took."""
        fields = self._plain_header(stream.peek(1 << 16).split(b"\n", 1)[0])
        if fields is None:
            return ZeekHeader(), 0
        return ZeekHeader(fields=fields), len(stream.readline())

    def _data(self, run: Run, block: _Block, prefilter: PrefilterPlan | None,
              scan_filter: LineFilter | None, source: InputFile, stats: ReadStats) -> Iterator[TableBatch]:
        if not run.lines:
            return
        stats.tables.add(block.table)
        line_filter = prefilter.for_table(block.table, self.format_name) if prefilter else None
        expected = len(block.header.fields) - 1
        if run.clean and expected and run.marks == expected * run.lines and line_filter is scan_filter:
            stats.records += run.lines
            kept = run.kept
        else:  # a closer look: broken lines, bad bytes, or a block of another log than scanned for
            data = repair_utf8(run_bytes(source, run), stats)
            data, blank = _drop_misshapen_lines(data, block, run.lines, stats)
            stats.records += run.lines - blank
            kept = line_filter.select(data) if line_filter is not None else data
        table = block.parse(kept, raw=prefilter is not None and prefilter.keeps_raw(block.table))
        if table is not None:
            yield TableBatch(block.table, table, source.path, self.format_name)


def _table_from_head(head: bytes, file_path: str) -> str:
    """The table of a TSV log from its first header block."""
    meta, _ = _apply_header_lines(ZeekHeader(), b"\n".join(
        line for line in head.split(b"\n") if line.startswith(b"#")), ReadStats(file_path))
    return meta.table(file_path)


def _drop_misshapen_lines(data: bytes, block: _Block, lines: int,
                          stats: ReadStats) -> tuple[bytes, int]:
    """Cheap integrity check over the whole block before the prefilter discards lines:
    the separator count must be exactly (fields - 1) per line. Only when it is not
    are lines looked at one by one, to report and drop the broken ones.
    Returns the kept lines and the number of blank lines (not records)."""
    separator = block.header.separator
    expected = len(block.header.fields) - 1
    if expected and data.count(separator) == expected * lines and b"\x00" not in data:
        return data, 0
    kept, blank = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            blank += 1
            continue
        if b"\x00" in line:
            stats.skip("binary data (NUL byte) in line", where=excerpt(line))
        elif line.count(separator) != expected:
            stats.skip(f"wrong number of fields (expected {expected + 1})", where=excerpt(line))
        else:
            kept.append(line)
    blank -= 1 if data.endswith(b"\n") else 0  # split() yields an empty tail after the last newline
    return (b"\n".join(kept) + b"\n" if kept else b""), blank


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
class ZeekJsonReader(Reader):
    """Zeek's JSON writer: one object per line, flat dotted keys, unset fields omitted.

    ``ts`` may be epoch seconds, epoch milliseconds or ISO-8601; it is normalised to
    float seconds like TSV. Nested objects are flattened to dotted names.
    """

    format_name = "zeek-json"
    _KEYS = (b'"ts"', b'"uid"', b'"id.orig_h"', b'"_path"')

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        line = head.lstrip().split(b"\n", 1)[0]
        if not line.startswith(b"{"):
            return False
        return b'"ts"' in line and any(key in line for key in cls._KEYS[1:])

    def read(self, source: InputFile, stream: BinaryIO, stats: ReadStats,
             prefilter: PrefilterPlan | None = None) -> Iterator[TableBatch]:
        stats.format = self.format_name
        log_table = self._table_of(stream.peek(1 << 16), source.path)
        scan_filter = None
        if prefilter is not None:  # a stream that names its records may mix logs: every Zeek table's filter
            scan_filter = prefilter.for_tables("zeek.", self.format_name) if log_table is None \
                else prefilter.for_table(log_table, self.format_name)
        parser = JsonBlockParser(stats)
        for run in line_runs(source, stream, stats, scan_filter, marker=b"}\n{", headers=False):
            if log_table is not None and run.lines:
                stats.tables.add(log_table)
            if run.clean and run.marks == run.lines - 1 and run.edges == b"{}":
                stats.records += run.lines
                kept = run.kept
            else:  # a closer look: lines that are not objects, blank lines, bad bytes
                data = repair_utf8(run_bytes(source, run), stats)
                data, blank = drop_non_objects(data, run.lines, stats)
                stats.records += run.lines - blank
                kept = scan_filter.select(data) if scan_filter is not None else data
            table = self._parse(kept, parser, stats)
            if table is None:
                continue
            for table_name, part in self._by_path(table, source.path):
                if part.num_rows:
                    yield TableBatch(table_name, part, source.path, self.format_name)

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

    @staticmethod
    def _parse(data: bytes, parser: JsonBlockParser, stats: ReadStats) -> pa.Table | None:
        table = parser.parse(data)
        return None if table is None else _normalise_json_table(table, stats)

    @staticmethod
    def _by_path(table: pa.Table, file_path: str) -> Iterator[tuple[str, pa.Table]]:
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
        return pc.divide(pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64()), 1e6)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return _from_epoch_number(pc.cast(column, pa.float64()))
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        seconds = _parse_text_times(column)
        bad = pc.sum(pc.and_(pc.is_valid(column), pc.is_null(seconds))).as_py() or 0
        if bad:
            stats.warn("invalid ts value (kept as unset)", count=bad)
        return seconds
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
    return pc.coalesce(as_number, pc.divide(pc.cast(micros, pa.float64()), 1e6))


def _iso_to_micros(value: str | None) -> int | None:
    from datetime import datetime, timezone

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000)
