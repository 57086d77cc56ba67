"""Matched records become ECS-shaped alerts.

This is the first place a record becomes a Python object: only rows that matched a rule
get here. Which native column feeds which ECS field is data (``mappings/tables.yml``).
"""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from typing import Any, Callable, Collection, Iterator

import pyarrow as pa

from rpcwatch.sigma.logsources import BoundRule, TableInfo, table_info

#: ECS fields that are numbers, whatever text the producer wrote them as
NUMERIC_ECS = ("source.port", "destination.port", "source.bytes", "destination.bytes", "source.packets",
               "destination.packets", "process.pid", "event.code")

#: columns the pipeline adds to batches; never part of an alert's ``original``
FILE_COLUMN = "__file__"
HIDDEN_PREFIX = "__"


def build_alerts(bound: BoundRule, rows: pa.Table,
                 columns_of: Callable[[str], Collection[str]] | None = None) -> Iterator[dict]:
    """One alert per matched row. ``columns_of(path)`` names the fields the row's input
    really had (batches of several inputs share one schema), for a faithful ``original``."""
    info = table_info(bound.table)
    rule = bound.rule
    rule_part = {"id": rule.id, "name": rule.title, "level": rule.level, "tags": list(rule.tags)}
    names = [name for name in rows.column_names if not name.startswith(HIDDEN_PREFIX)]
    if info.sparse:
        # a sparse table has the columns of every kind of event in it (hundreds for Windows);
        # the rows one rule matched use few, and an unset value is left out of the alert anyway
        names = [name for name in names if rows.column(name).null_count < rows.num_rows]
        rows = rows.select([*names, *(name for name in rows.column_names if name.startswith(HIDDEN_PREFIX))])
    fields_by_path: dict[str | None, list[str]] = {}
    for record in rows.to_pylist():
        path = record.get(FILE_COLUMN)
        fields = fields_by_path.get(path)
        if fields is None:
            present = columns_of(path) if columns_of and path is not None else names
            fields = fields_by_path[path] = [name for name in names if name in present]
        yield _alert(record, path, fields, info, rule_part, bound.table)


def _alert(record: dict, path: str | None, fields: list[str], info: TableInfo, rule_part: dict,
           table: str) -> dict:
    # a sparse table (Windows events of many kinds in one schema) leaves out the unset
    # columns other kinds of event brought; Zeek's unset fields are part of the record
    original = {name: value if type(value) in _SIMPLE else _plain(value)
                for name in fields if (value := record[name]) is not None or not info.sparse}
    alert: dict[str, Any] = {"@timestamp": iso_timestamp(record.get(info.time)) if info.time else None,
                             "rule": rule_part}
    for target, columns in info.ecs.items():
        value = _first_present(original, columns)
        if value is not None:
            _set_dotted(alert, target, _as_number(value) if target in NUMERIC_ECS else value)
    if info.transport:
        alert.setdefault("network", {}).setdefault("transport", info.transport)
    _name_transport(alert, info)
    if info.inbound and _is_inbound(original, info):
        _remote_side_first(alert)
    event = alert.setdefault("event", {})
    event["kind"] = "alert"
    event["dataset"] = table
    event["outcome"] = outcome(original, info)
    event["id"] = event_id(rule_part["id"] or rule_part["name"], table, original)
    alert["log"] = {"file": {"path": path}}
    alert["original"] = original
    return alert


def event_id(rule: str, dataset: str, identity: Any) -> str:
    """``event.id``: the same alert gets the same id in every run, so a sink can tell a
    replay from a new alert (Elasticsearch's ``_id``, deduplication in a SIEM).

    The identity of a record is its native fields (``original``): the log's own record id
    (Zeek ``uid``, Windows ``EventRecordID``) and time are among them, and nothing about
    where the record was read (path, offset, compression) is, so a renamed, gzip'd or
    re-read file gives the same ids. The canonical form leaves out unset fields and
    writes integral numbers as integers: a field absent from one block of JSON lines, or
    read as ``1.0`` in a block where it was once fractional, is still the same record."""
    canonical = json.dumps([rule, dataset, _canonical(identity)], sort_keys=True, ensure_ascii=True,
                           separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def outcome(record: dict, info: TableInfo) -> str:
    """``event.outcome`` from the table's outcome mapping (Zeek ``conn_state``, Windows
    EventID); values written as text or numbers by the producer compare alike."""
    spec = info.outcome
    if "constant" in spec:
        return str(spec["constant"])
    if "column" in spec:
        value = record.get(spec["column"])
        table = {str(k): v for k, v in spec.get("values", {}).items()}
        return str(table.get(str(value), spec.get("default", "unknown")))
    return "unknown"


def _is_inbound(record: dict, info: TableInfo) -> bool:
    return any(str(record.get(column)).lower() in values for column, values in info.inbound.items()
               if record.get(column) is not None)


def _remote_side_first(alert: dict) -> None:
    """An inbound event that names the local listener as its source is turned round."""
    source, destination = alert.get("source", {}), alert.get("destination", {})
    try:
        listener_first = int(source.get("port")) < int(destination.get("port"))
    except (TypeError, ValueError):
        return
    if listener_first:
        alert["source"], alert["destination"] = destination, source


def _name_transport(alert: dict, info: TableInfo) -> None:
    network = alert.get("network")
    if info.transports and network and "transport" in network:
        name = info.transports.get(str(network["transport"]))
        network["transport"] = name or str(network["transport"]).lower()


def event_time(record: dict, info: TableInfo) -> float | None:
    """The record's time as epoch seconds (for windows and ordering)."""
    value = record.get(info.time) if info.time else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def iso_timestamp(value: Any) -> str | None:
    """ISO-8601 UTC with microseconds, from epoch seconds or an ISO string."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        moment = datetime.fromtimestamp(value, tz=timezone.utc)
    else:
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text or None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_number(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _first_present(record: dict, columns: str | list[str]) -> Any:
    for column in [columns] if isinstance(columns, str) else columns:
        value = record.get(column)
        if value is not None:
            return value
    return None


def _set_dotted(target: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


_SIMPLE = (str, int, bool, type(None))


def _plain(value: Any) -> Any:
    """JSON-ready values (Arrow gives datetimes, decimals, bytes for some types)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return iso_timestamp(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is not None and not isinstance(value, (str, int, float, bool)):
        return str(value)
    return value


def record_id(alert: dict) -> str | None:
    """The alert's record in its log (Zeek ``uid``, Windows ``EventRecordID``), as text."""
    column = table_info(alert.get("event", {}).get("dataset", "")).record_id
    value = alert.get("original", {}).get(column) if column else None
    return None if value is None else str(value)


def epoch_micros(timestamp: str | None) -> int | None:
    """Integer microseconds of an alert's ``@timestamp``: exact, so time windows have exact edges."""
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso_from_micros(micros: int) -> str:
    seconds, fraction = divmod(micros, 1_000_000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{fraction:06d}Z"


def field_value(alert: dict, dotted: str) -> Any:
    """A field of an alert by its dotted name (``source.ip``), also inside ``original``,
    whose own keys may hold dots (``original.id.orig_h``)."""
    return _walk(alert, dotted.split("."))


def _walk(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if not isinstance(node, dict):
        return None
    for cut in range(len(parts), 0, -1):  # the longest key first: "id.orig_h" before "id"
        key = ".".join(parts[:cut])
        if key in node:
            return _walk(node[key], parts[cut:])
    return None
