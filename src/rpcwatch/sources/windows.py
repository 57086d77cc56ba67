"""The ``windows`` table: Windows events from any input format, named the Sigma way.

Sigma names the fields of a Windows XML event after the XML: ``<Data Name="X">`` in
``EventData`` is field ``X``; ``System`` elements keep their tag (``EventID``,
``Channel``) and attributes join tag and attribute with ``_`` (``Provider_Name``,
``TimeCreated_SystemTime``, ``Execution_ProcessID``). The ``evtx`` parser and
``evtx_dump`` render the XML as JSON (``{"Event": {"System": {"Provider":
{"#attributes": {"Name": ...}}}, "EventData": {...}}}``); this module turns that shape,
parsed in bulk by Arrow, into Sigma columns. Readers of other shapes rename their
fields to the same names and finish with :func:`conform_system_fields`.

System fields have one fixed type in every batch of every input (see
:data:`SYSTEM_FIELD_TYPES`), so the engine sees a stable table; event data keeps
the types its producer wrote.
"""
from __future__ import annotations

import re
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.sources.base import ReadStats
from rpcwatch.sources.jsonlines import JsonBlockParser, as_string_column, coalesce_columns

WINDOWS_TABLE = "windows"

#: System fields every batch carries (null where the input has no value), with their types
SYSTEM_FIELD_TYPES: dict[str, pa.DataType] = {
    "EventID": pa.int64(),
    "EventRecordID": pa.int64(),
    "Channel": pa.string(),
    "Computer": pa.string(),
    "Provider_Name": pa.string(),
    "Provider_Guid": pa.string(),
    "TimeCreated_SystemTime": pa.string(),
    "Execution_ProcessID": pa.int64(),
    "Execution_ThreadID": pa.int64(),
    "Security_UserID": pa.string(),
    "Level": pa.int64(),
    "Task": pa.int64(),
    "Opcode": pa.int64(),
    "Keywords": pa.string(),
    "Version": pa.int64(),
}
#: System fields only some events carry, typed when present
OPTIONAL_SYSTEM_FIELD_TYPES: dict[str, pa.DataType] = {
    "EventID_Qualifiers": pa.int64(),
    "Provider_EventSourceName": pa.string(),
    "Correlation_ActivityID": pa.string(),
    "Correlation_RelatedActivityID": pa.string(),
}
_TYPED_FIELDS = SYSTEM_FIELD_TYPES | OPTIONAL_SYSTEM_FIELD_TYPES
_INTEGER = r"^\s*[+-]?[0-9]+\s*$"

#: ``"EventID": {"#attributes": {"Qualifiers": Q}, "#text": N}``, the form classic
#: (pre-Vista) providers' events take, next to plain ``"EventID": N`` of the others
_QUALIFIED_EVENT_ID = re.compile(
    rb'"EventID"\s*:\s*\{\s*"#attributes"\s*:\s*\{\s*"Qualifiers"\s*:\s*([^{}]*?)\s*\}\s*,'
    rb'\s*"#text"\s*:\s*([^{},]*?)\s*\}')
_ATTRIBUTES = "#attributes"
_TEXT = "#text"
_SEPARATE_ATTRIBUTES = "_attributes"  # evtx_dump --separate-json-attributes


def with_text_event_data(table: pa.Table) -> pa.Table:
    """Event data as text, System fields as typed: the one shape every Windows batch can
    share whatever its producer (a Parquet dataset, a SQL view); Sigma compares numbers
    written as text as numbers, so rules match the same."""
    columns = [column if name in _TYPED_FIELDS or name.startswith("__") or pa.types.is_string(column.type)
               else as_string_column(column.combine_chunks())
               for name, column in zip(table.column_names, table.columns)]
    return pa.table(columns, names=table.column_names)


def is_system_field(name: str) -> bool:
    return name in _TYPED_FIELDS


def split_event_id_qualifiers(data: bytes) -> bytes:
    """Rewrite qualified EventIDs as ``"EventID": N, "EventID_Qualifiers": Q`` in raw JSON.

    System logs mix both forms of EventID, and Arrow cannot read a field that is an
    object in one line and a number in the next without falling back to slow per-line
    parsing; the split form is what the flattening would produce anyway."""
    if b'"Qualifiers"' not in data:
        return data
    return _QUALIFIED_EVENT_ID.sub(rb'"EventID":\2,"EventID_Qualifiers":\1', data)


class EventJsonTables:
    """Blocks of evtx-shaped JSON records (one per line) -> ``windows`` tables."""

    def __init__(self, stats: ReadStats):
        self._stats = stats
        self._parser = JsonBlockParser(stats)

    def build(self, ndjson: bytes) -> pa.Table | None:
        table = self._parser.parse(split_event_id_qualifiers(ndjson))
        if table is None:
            return None
        return conform_system_fields(rename_event_columns(table), self._stats)


def rename_event_columns(table: pa.Table) -> pa.Table:
    """Dotted columns of flattened evtx JSON -> Sigma names. Dropped: XML namespace
    attributes, and System elements that are empty in every event of the batch
    (``"Correlation": null``), which carry no value, only the element's presence."""
    names = _sigma_names(tuple(table.column_names))
    kept = [index for index, name in enumerate(names)
            if name is not None and not _empty_system_element(table.column_names[index], table.column(index))]
    return pa.table([table.column(i) for i in kept], names=[names[i] for i in kept])


def _empty_system_element(dotted: str, column: pa.ChunkedArray) -> bool:
    return (pa.types.is_null(column.type) and dotted.startswith("Event.System.")
            and dotted.count(".") == 2 and dotted[len("Event.System."):] not in _TYPED_FIELDS)


@lru_cache(maxsize=256)
def _sigma_names(dotted: tuple[str, ...]) -> tuple[str | None, ...]:
    """An event data field named like a System field (Sysmon 4's ``Version``) gives way
    and becomes ``EventData_<name>`` / ``UserData_<name>``. Data fields of the same name
    from different sections (``EventData`` in one event, ``UserData`` in another) keep
    it, and :func:`conform_system_fields` merges them into one column."""
    sections = [_sigma_name(name) for name in dotted]
    system = {name for name, section in sections if section == "System"} | _TYPED_FIELDS.keys()
    return tuple(f"{section}_{name}" if section not in ("System", "") and name in system else name
                 for name, section in sections)


def _sigma_name(dotted: str) -> tuple[str | None, str]:
    """The Sigma name of one flattened column and the section it comes from.

    Below ``System``, ``EventData`` and the payload element of ``UserData`` (whose own
    name is dropped, as Sigma rules do), path parts join with ``_``; ``#text`` parts
    vanish and ``#attributes`` parts vanish so an attribute joins its element
    (``Provider.#attributes.Name`` -> ``Provider_Name``). Attributes of the section
    element itself keep the section's name (``EventData_Name``). Columns that are not
    part of an ``Event`` keep their names."""
    parts = dotted.split(".")
    if parts[0] == "Event" + _SEPARATE_ATTRIBUTES or parts[:2] == ["Event", _ATTRIBUTES]:
        return None, "Event"
    if parts[0] != "Event":
        return dotted, ""
    if len(parts) < 3:  # an empty section (``"EventData": null``)
        return None, "Event"
    section = parts[1]
    if section.endswith(_SEPARATE_ATTRIBUTES):  # attributes of EventData / UserData
        section = section[: -len(_SEPARATE_ATTRIBUTES)]
        return (None if _is_namespace(parts[-1]) else f"{section}_{parts[-1]}"), section
    inner = parts[2:]
    if section == "UserData" and len(inner) > 1:  # drop the payload element's name
        inner = [_ATTRIBUTES, *inner[1:]] if _is_attribute_part(inner[0]) else inner[1:]
    elif section not in ("System", "EventData", "UserData"):
        inner = parts[1:]
    if _is_attribute_part(inner[0]) and section != "System":
        return (None if _is_namespace(inner[-1]) else f"{section}_{inner[-1]}"), section
    if len(inner) > 1 and _is_attribute_part(inner[-2]) and _is_namespace(inner[-1]):
        return None, section
    kept = [_element_of(part) for part in inner if part not in (_ATTRIBUTES, _TEXT)]
    return "_".join(kept), section


def _is_attribute_part(part: str) -> bool:
    return part == _ATTRIBUTES or part.endswith(_SEPARATE_ATTRIBUTES)


def _element_of(part: str) -> str:
    return part[: -len(_SEPARATE_ATTRIBUTES)] if part.endswith(_SEPARATE_ATTRIBUTES) else part


def _is_namespace(attribute: str) -> bool:
    return attribute == "xmlns" or attribute.startswith("xmlns:")


def conform_system_fields(table: pa.Table, stats: ReadStats) -> pa.Table:
    """Give System fields their fixed types, add the missing ones as nulls, merge
    columns that ended up with the same name, and type all-null columns as strings."""
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for name, column in zip(table.column_names, table.columns):
        wanted = _TYPED_FIELDS.get(name)
        if wanted is not None:
            column = _cast_system_field(name, column, wanted, stats)
        elif pa.types.is_null(column.type):
            column = column.cast(pa.string())
        columns[name] = coalesce_columns(name, columns[name], column, stats) if name in columns else column
    for name, wanted in SYSTEM_FIELD_TYPES.items():
        if name not in columns:
            columns[name] = pa.nulls(table.num_rows, wanted)
    _add_sigma_field_names(columns)
    return pa.table(columns)


def _add_sigma_field_names(columns: dict) -> None:
    """Some providers name event data with spaces (Windows Defender: ``Source Name``,
    ``Threat Name``); Sigma rules name a field with its spaces stripped (``SourceName``).
    The Sigma name is added next to the written one, which stays for the alert's
    ``original``; a field the event already has under the Sigma name is left alone."""
    for name in [name for name in columns if " " in name]:
        columns.setdefault(sigma_field_name(name), columns[name])


def sigma_field_name(name: str) -> str:
    """A field name as Sigma rules write it: without spaces."""
    return name.replace(" ", "")


def _cast_system_field(name: str, column, wanted: pa.DataType, stats: ReadStats):
    if column.type == wanted:
        return column
    try:
        return pc.cast(column, wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if pa.types.is_integer(wanted):
        text = as_string_column(column)
        valid = pc.match_substring_regex(text, _INTEGER)
        bad = pc.sum(pc.invert(pc.fill_null(valid, True))).as_py() or 0
        stats.warn(f"invalid {name} value (kept as unset)", count=bad)
        return pc.cast(pc.utf8_trim_whitespace(pc.if_else(valid, text, pa.scalar(None, pa.string()))), wanted)
    return as_string_column(column)


