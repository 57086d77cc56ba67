"""JSON lines: the parser base of every JSON-lines format (Zeek JSON, Windows JSON exports,
Suricata EVE, ECS documents), and blocks of JSON lines turned into Arrow tables.

JSON blocks are parsed in bulk by Arrow's JSON reader; Python only looks at single
lines when a block cannot be parsed as a whole (a broken line, or values whose JSON
kinds Arrow cannot reconcile).
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pjson

from rpcwatch.sources.base import ReadStats
from rpcwatch.sources.lines import LineParser, excerpt
from rpcwatch.sources.scan import Run

#: Arrow's message when one field holds values of two JSON kinds within a block
_KIND_CONFLICT = re.compile(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)")
_SCALAR_KINDS = {"number", "string", "boolean"}
#: Arrow's name for the items of a list in a column path
_LIST_ITEM = "[]"
_SCALAR_VALUE = rb"-?[0-9][0-9.eE+-]*|true|false"
_SINGLE_VALUE = rb'"(?:[^"\\]|\\.)*"|' + _SCALAR_VALUE
#: each retry learns one more field, so this bounds the work on hostile input
MAX_REPARSES = 32
#: objects and arrays nested deeper than this are not parsed: no log nests deeper than a
#: few levels, and a parser's recursion is bounded by its stack (Arrow's crashes the
#: process past a few thousand levels)
MAX_JSON_DEPTH = 64
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
#: a UTF-16 surrogate half on its own cannot be text (Python refuses to encode it)
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: what the scan counts in JSON lines: the joint between two objects
JSON_LINES_MARKER = b"}\n{"


class JsonLinesParser(LineParser):
    """One JSON-lines input: a line is one object, ``{`` to ``}``; a format supplies
    :meth:`parse` (``self.json`` turns kept lines into a flat Arrow table)."""

    def __init__(self, source, stream, stats: ReadStats, scan_filter=None):
        super().__init__(source, stream, stats, scan_filter)
        self.json = JsonBlockParser(stats)

    def well_formed(self, run: Run) -> bool:
        return run.marks == run.lines - 1 and run.edges == b"{}"

    def quick_check(self, data: bytes, lines: int) -> bool:
        """Every line looks like one object: as many line starts with ``{`` and line ends
        with ``}`` as lines (full validity is checked when a line is parsed)."""
        opens = data.count(b"\n{") + data.startswith(b"{")
        closes = data.count(b"}\n") + data.endswith(b"}")
        return opens == lines and closes == lines

    def malformed(self, line: bytes) -> str | None:
        stripped = line.strip()
        if stripped.startswith(b"{") and stripped.endswith(b"}"):
            return None
        return "not a JSON object (malformed line)"



def shallow_lines(data: bytes, stats: ReadStats) -> bytes:
    """The block without lines nested deeper than :data:`MAX_JSON_DEPTH` (each counted)."""
    kept = []
    done = 0  # data before this offset is decided
    for start, end in _lines_with_many_openings(data):
        line = data[start:end]
        if json_depth(line) > MAX_JSON_DEPTH:
            stats.skip(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", where=excerpt(line))
            kept.append(data[done:start])
            done = end
    if not done:
        return data
    kept.append(data[done:])
    return b"".join(kept)


def _lines_with_many_openings(data: bytes) -> list[tuple[int, int]]:
    """Where the lines with more than :data:`MAX_JSON_DEPTH` ``{`` and ``[`` are (only they
    can nest that deep): the openings counted per line in bulk, no line looked at alone."""
    raw = np.frombuffer(data, np.uint8)
    openings = np.flatnonzero((raw == ord("{")) | (raw == ord("[")))
    if len(openings) <= MAX_JSON_DEPTH:
        return []
    newlines = np.flatnonzero(raw == ord("\n"))
    per_line = np.bincount(np.searchsorted(newlines, openings), minlength=len(newlines) + 1)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines + 1, [len(data)]))
    return [(int(starts[line]), int(ends[line])) for line in np.flatnonzero(per_line > MAX_JSON_DEPTH)]


def json_depth(line: bytes) -> int:
    """How deep objects and arrays nest in a line (brackets inside strings do not count)."""
    depth = deepest = 0
    for token in _JSON_TOKEN.finditer(line):
        char = token.group()[:1]
        if char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in b"]}":
            depth -= 1
    return deepest


def _text_only(value: Any) -> Any:
    """JSON values with lone surrogate halves (``"\\ud800"``) written as the escape text they
    came as, so they can be stored as text."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value) \
            if _LONE_SURROGATE.search(value) else value
    if isinstance(value, list):
        return [_text_only(v) for v in value]
    if isinstance(value, dict):
        return {_text_only(k): _text_only(v) for k, v in value.items()}
    return value


def parse_json_lines_slowly(data: bytes, stats: ReadStats) -> pa.Table | None:
    """The block did not parse as a whole: find the broken lines, report them, and
    rebuild the good ones (values of conflicting types become strings)."""
    rows = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            stats.skip("not a JSON object (malformed line)", where=excerpt(line))
            continue
        if not isinstance(value, dict):
            stats.skip("not a JSON object (malformed line)", where=excerpt(line))
            continue
        if b"\\u" in line:
            text_only = _text_only(value)
            if text_only != value:
                stats.warn("lone UTF-16 surrogate escape in a string (kept as the text \\uXXXX)",
                           where=excerpt(line))
                value = text_only
        rows.append(flatten_dict(value))
    if not rows:
        return None
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # numbers beyond 64 bits, mixed kinds
        names = list(dict.fromkeys(name for row in rows for name in row))
        columns = {}
        for name in names:
            values = [row.get(name) for row in rows]
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                stats.warn(f"field {name} has values of different types (kept as text)")
                columns[name] = pa.array([as_text(v) for v in values], type=pa.string())
        return pa.table(columns)


def as_text(value) -> str | None:
    """A JSON value as the text a producer would have written for it."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def flatten_dict(value: dict, prefix: str = "") -> dict:
    """Nested objects as one level of dotted names (``{"a": {"b": 1}}`` -> ``a.b``)."""
    flat = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(flatten_dict(item, name + "."))
        else:
            flat[name] = item
    return flat


def flatten_structs(table: pa.Table, stats: ReadStats) -> pa.Table:
    """Struct columns as dotted columns, the Arrow counterpart of :func:`flatten_dict`.
    A nested field and a flat dotted key of the same name (``{"id": {"orig_h": ..}}`` next
    to ``{"id.orig_h": ..}``) become one column."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    if len(set(table.column_names)) == table.num_columns:
        return table
    columns: dict[str, pa.ChunkedArray] = {}
    for name, column in zip(table.column_names, table.columns):
        columns[name] = coalesce_columns(name, columns[name], column, stats) if name in columns else column
    return pa.table(columns)


def as_string_column(column) -> pa.Array:
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([as_text(value) for value in column.to_pylist()], type=pa.string())


def coalesce_columns(name: str, first, second, stats: ReadStats):
    """Two source fields with one name: the first non-null value wins."""
    if first.type != second.type:
        if pa.types.is_null(first.type) or pa.types.is_null(second.type):
            return second if pa.types.is_null(first.type) else first
        stats.warn(f"field {name} has values of different types (kept as text)")
        first, second = as_string_column(first), as_string_column(second)
    return pc.coalesce(first, second)


class JsonBlockParser:
    """Parses blocks of JSON lines into flat Arrow tables (dotted column names), keeping
    the types the producer wrote.

    Arrow infers one type per field and refuses a block where a field holds values of
    two JSON kinds. Two such conflicts are repaired in the raw bytes, and the block is
    parsed again:

    * a number or boolean next to a string (Sysmon's integer ``ProcessId`` next to
      Security's ``"0x1a4"``): the field's unquoted scalars are quoted, it is text;
    * a single value next to a list (the unnamed ``Data`` of classic events): the
      field's single values become one-item lists.

    Other conflicts send the block to per-line parsing. Arrow also turns strings that
    look like dates into timestamps; those fields are read again as the strings they
    are. What was learnt holds for the following blocks of the same input, so a field
    keeps one type for the whole input once it has been repaired.
    """

    def __init__(self, stats: ReadStats):
        self._stats = stats
        self._repaired_keys: set[str] = set()
        self._rewrites: list[tuple[re.Pattern[bytes], bytes]] = []
        self._string_paths: set[tuple[str, ...]] = set()
        self._parse_options = pjson.ParseOptions()

    def parse(self, data: bytes) -> pa.Table | None:
        data = shallow_lines(data, self._stats)
        if not data.strip():
            return None
        data = self._rewrite(data)
        for _ in range(MAX_REPARSES):
            try:
                table = pjson.read_json(io.BytesIO(data), read_options=_one_block(data),
                                        parse_options=self._parse_options)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                if not self._learn_repair(str(exc)):
                    break
                data = self._rewrite(data)
                continue
            if self._learn_string_paths(table.schema):
                continue
            return flatten_structs(table, self._stats)
        table = parse_json_lines_slowly(data, self._stats)
        return None if table is None else flatten_structs(table, self._stats)

    def _learn_repair(self, message: str) -> bool:
        """Learn the rewrite for the field named in a kind conflict, if it has one."""
        conflict = _KIND_CONFLICT.search(message)
        if conflict is None:
            return False
        path, kinds = conflict[1], {conflict[2], conflict[3]}
        key = path.rsplit("/", 1)[-1]
        if key in self._repaired_keys or key == _LIST_ITEM:
            return False
        if kinds <= _SCALAR_KINDS:
            self._rewrites.append(_rewrite_for(key, _SCALAR_VALUE, rb'\1"\2"'))
            effect = "has values of different types (kept as text)"
        elif "array" in kinds and kinds - {"array"} <= _SCALAR_KINDS:
            self._rewrites.append(_rewrite_for(key, _SINGLE_VALUE, rb"\1[\2]"))
            effect = "holds single values and lists (single values read as one-item lists)"
        else:
            return False
        self._repaired_keys.add(key)
        self._stats.warn(f"field {key} {effect}", where=path)
        return True

    def _rewrite(self, data: bytes) -> bytes:
        for pattern, replacement in self._rewrites:
            data = pattern.sub(replacement, data)
        return data

    def _learn_string_paths(self, schema: pa.Schema) -> bool:
        """True when new timestamp-typed fields were found (the block must be read again)."""
        found = set(_timestamp_paths(schema)) - self._string_paths
        if not found:
            return False
        self._string_paths |= found
        self._parse_options = pjson.ParseOptions(
            explicit_schema=_string_schema(self._string_paths), unexpected_field_behavior="infer")
        return True


def _one_block(data: bytes) -> pjson.ReadOptions:
    """Arrow infers types per block and reconciles blocks silently (a number after a
    string becomes text without a word), so every block is read as one: the types, and
    the warnings about them, then do not depend on where a block boundary fell. One
    block is parsed by one thread, so no thread pool is asked for."""
    return pjson.ReadOptions(block_size=len(data) + 1, use_threads=False)


def _rewrite_for(key: str, value: bytes, replacement: bytes) -> tuple[re.Pattern[bytes], bytes]:
    """A pattern matching ``"key": <value>`` and its replacement (applied to group 2).

    The pattern starts with the quoted key itself: a literal prefix lets ``re`` skip
    ahead to candidates, several times faster than a pattern starting with a group."""
    quoted = json.dumps(key, ensure_ascii=False).encode()
    pattern = re.compile(re.escape(quoted) + rb"(\s*:\s*)(" + value + rb")(?=\s*[,}\]])")
    return pattern, quoted.replace(b"\\", b"\\\\") + replacement


def _timestamp_paths(schema: pa.Schema | pa.StructType, prefix: tuple[str, ...] = ()):
    fields = schema if isinstance(schema, pa.Schema) else [schema.field(i) for i in range(schema.num_fields)]
    for field in fields:
        path = prefix + (field.name,)
        if pa.types.is_struct(field.type):
            yield from _timestamp_paths(field.type, path)
        elif pa.types.is_timestamp(field.type):
            yield path


def _string_schema(paths: set[tuple[str, ...]]) -> pa.Schema:
    """A partial schema that declares each path a string (nested as structs)."""
    tree: dict = {}
    for path in paths:
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = None

    def build(node: dict) -> list[pa.Field]:
        return [pa.field(name, pa.string() if child is None else pa.struct(build(child)))
                for name, child in sorted(node.items())]

    return pa.schema(build(tree))
