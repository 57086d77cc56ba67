"""The alert: one typed record from the rule that matched to every output and sink.

Matched rows become :class:`Alert`\\ s here (the first Python object per record: only rows
that matched a rule get this far); correlation alerts are the same type. The table's
column roles (``data/tables.yml``) say which native column fills which ECS field; the
ECS document every output writes comes from :meth:`Alert.to_dict`, the one serialisation.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from rpcwatch.schema import FILE_COLUMN, HIDDEN_PREFIX, TableInfo, all_roles, table_info

#: ECS fields that are numbers, whatever text the producer wrote them as
NUMERIC_ECS = frozenset({"source.port", "destination.port", "source.bytes", "destination.bytes",
                         "source.packets", "destination.packets", "process.pid", "event.code"})
#: roles triage reads that are not part of the alert document
TRIAGE_ONLY_ROLES = frozenset({"process.parent.executable", "process.command_line", "process.parent.command_line"})
#: alert fields outside the table roles, by dotted name (for ``--suppress`` and lookups)
BASE_FIELDS = frozenset({"@timestamp", "rule.id", "rule.name", "rule.level", "rule.tags", "event.id",
                         "event.kind", "event.dataset", "event.outcome", "log.file.path", "reason",
                         "risk_score"})


@dataclass(frozen=True, slots=True)
class RuleRef:
    """The rule an alert comes from, as alerts name it."""

    id: str
    name: str
    level: str
    tags: tuple[str, ...] = ()
    #: where the rule and its investigation guide are (the rule file, or the bundled docs)
    reference: str | None = None
    guide: str | None = None

    @classmethod
    def of(cls, rule: Any) -> RuleRef:
        """From a compiled rule or correlation (both carry these attributes)."""
        return cls(id=rule.id, name=rule.title, level=rule.level, tags=tuple(rule.tags),
                   reference=rule_reference(rule.path), guide=getattr(rule, "guide", "") or None)

    def to_dict(self, guide: bool = False) -> dict[str, Any]:
        part: dict[str, Any] = {"id": self.id, "name": self.name, "level": self.level, "tags": list(self.tags)}
        if self.reference:
            part["reference"] = self.reference
        if guide and self.guide:
            part["investigation_guide"] = self.guide
        return part


#: where the bundled rules are; alerts name them by their place in the package
_BUNDLED_RULES = Path(__file__).resolve().parent / "rules"


def rule_reference(path: str | None) -> str | None:
    """``rule.reference``: a bundled rule by its place in the package (the same on every
    machine: ``rpcwatch/rules/<file>``, its guide in docs/rules.md), any other by its path."""
    if not path:
        return None
    resolved = Path(path).resolve()
    if resolved.parent == _BUNDLED_RULES:
        return f"rpcwatch/rules/{resolved.name}"
    return path


@dataclass(slots=True, eq=False)
class Alert:
    """One alert. ``fields`` holds its ECS fields by dotted name (``source.ip``); the
    accessors below are the only way other modules read endpoints and ids."""

    rule: RuleRef
    dataset: str
    timestamp: str | None
    #: ``event.outcome`` (``established``, ``rejected``, ...); None for correlation alerts
    outcome: str | None
    fields: dict[str, Any]
    event_id: str
    original: dict[str, Any] | None = None
    file: str | None = None
    record_id: str | None = None
    #: the sensor's own verdict that an end is local (Zeek ``local_orig``/``local_resp``)
    source_local: bool | None = None
    destination_local: bool | None = None
    correlation: dict[str, Any] | None = None
    # ---- added after the run: enrichment and suppression -----------------------------
    reason: str | None = None
    risk_score: int | None = None
    threat: dict[str, Any] | None = None
    #: ``count``, ``first_seen``, ``last_seen``, ``suppression`` of a folded alert
    folded: dict[str, Any] | None = None
    #: roles triage reads that the document leaves out (parent process, command lines)
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- accessors ---------------------------------------------------------------------
    @property
    def source_ip(self) -> str | None:
        return _text(self.fields.get("source.ip"))

    @property
    def destination_ip(self) -> str | None:
        return _text(self.fields.get("destination.ip"))

    @property
    def source_port(self) -> int | None:
        return _int(self.fields.get("source.port"))

    @property
    def destination_port(self) -> int | None:
        return _int(self.fields.get("destination.port"))

    @property
    def transport(self) -> str | None:
        return _text(self.fields.get("network.transport"))

    @property
    def micros(self) -> int | None:
        return epoch_micros(self.timestamp)

    def role(self, name: str) -> Any:
        """A role's value: an ECS field of the document, or a triage-only role."""
        return self.fields.get(name, self.extra.get(name))

    def value(self, dotted: str) -> Any:
        """A field of the alert document by its dotted name, also inside ``original``,
        whose own keys may hold dots (``original.id.orig_h``)."""
        if dotted in self.fields:
            return self.fields[dotted]
        return _walk(self.to_dict(), dotted.split("."))

    # ---- the document ------------------------------------------------------------------
    def to_dict(self, guides: bool = False) -> dict[str, Any]:
        """The ECS document (docs/alerts.md): the one serialisation of an alert."""
        sections: dict[str, Any] = {}
        for name, value in self.fields.items():
            _set_dotted(sections, name, value)
        document: dict[str, Any] = {"@timestamp": self.timestamp, "rule": self.rule.to_dict(guides)}
        for name in sorted(sections, key=_section_rank):
            if name != "event":
                document[name] = sections[name]
        event = document["event"] = {"id": self.event_id, "kind": "alert", "dataset": self.dataset}
        if self.outcome is not None:
            event["outcome"] = self.outcome
        event.update(sections.get("event", {}))
        if self.correlation is not None:
            document["correlation"] = self.correlation
        else:
            document["log"] = {"file": {"path": self.file}}
            document["original"] = self.original
        for name in ("reason", "risk_score", "threat"):
            value = getattr(self, name)
            if value is not None:
                document[name] = value
        if self.folded:
            document.update(self.folded)
        return document


#: the order of an alert document's sections (others follow in name order)
_SECTIONS = ("source", "destination", "network", "rpc", "host", "process", "user")


def _section_rank(name: str) -> tuple[int, str]:
    return (_SECTIONS.index(name) if name in _SECTIONS else len(_SECTIONS), name)


def is_alert_field(dotted: str) -> bool:
    """Whether some alert can have this field (``original.*`` always may)."""
    return dotted in BASE_FIELDS or dotted in all_roles() or dotted.startswith(("original.", "correlation.",
                                                                                 "threat."))


# ---- building alerts from matched rows --------------------------------------------------

def build_alerts(rule: Any, table: str, rows: pa.Table,
                 columns_of: Callable[[str], Collection[str]] | None = None) -> Iterator[Alert]:
    """One alert per matched row of ``table`` for ``rule`` (a compiled rule).
    ``columns_of(path)`` names the fields the row's input really had (batches of several
    inputs share one schema), for a faithful ``original``."""
    info = table_info(table)
    rule_ref = RuleRef.of(rule)
    names = [name for name in rows.column_names if not name.startswith(HIDDEN_PREFIX)]
    if info.sparse:
        # a sparse table has the columns of every kind of event in it (hundreds for Windows);
        # the rows one rule matched use few, and an unset value is left out of the alert anyway
        names = [name for name in names if rows.column(name).null_count < rows.num_rows]
        rows = rows.select([*names, *(name for name in rows.column_names if name.startswith(HIDDEN_PREFIX))])
    fields_by_path: dict[str | None, list[str]] = {}
    for record in _records(rows):
        path = record.get(FILE_COLUMN)
        fields = fields_by_path.get(path)
        if fields is None:
            present = columns_of(path) if columns_of and path is not None else names
            fields = fields_by_path[path] = [name for name in names if name in present]
        # a sparse table leaves out the unset columns other kinds of event brought; Zeek's
        # unset fields are part of the record
        original = {name: value if type(value) in _SIMPLE else _plain(value)
                    for name in fields if (value := record[name]) is not None or not info.sparse}
        yield alert_from_record(rule_ref, table, original, path, info)


#: matched rows made into Python records at a time: a batch may hold 256 k matches (every
#: record of an alerting flood), and a dict each at once would cost a GiB
RECORDS_AT_A_TIME = 4096


def _records(rows: pa.Table) -> Iterator[dict[str, Any]]:
    for offset in range(0, rows.num_rows, RECORDS_AT_A_TIME):
        yield from rows.slice(offset, RECORDS_AT_A_TIME).to_pylist()


def alert_from_record(rule: RuleRef, table: str, original: dict[str, Any], path: str | None,
                      info: TableInfo | None = None) -> Alert:
    """The alert for one record with its native field names, read through the table's roles."""
    info = info or table_info(table)
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for role, columns in info.roles.items():
        value = _first_present(original, columns)
        if value is not None:
            (extra if role in TRIAGE_ONLY_ROLES else fields)[role] = _as_number(value) if role in NUMERIC_ECS \
                else value
    if info.transport:
        fields.setdefault("network.transport", info.transport)
    _name_transport(fields, info)
    if info.inbound and _is_inbound(original, info):
        _remote_side_first(fields)
    record = None if info.record_id is None else original.get(info.record_id)
    return Alert(rule=rule, dataset=table, timestamp=iso_timestamp(original.get(info.time)) if info.time else None,
                 outcome=outcome(original, info), fields=fields,
                 event_id=event_id(rule.id or rule.name, table, original), original=original, file=path,
                 record_id=None if record is None else str(record),
                 source_local=_locality(original, info, "source"),
                 destination_local=_locality(original, info, "destination"), extra=extra)


def event_id(rule: str, source: str, identity: Any) -> str:
    """``event.id``: the same for the same rule, log source and record in every run,
    whatever the file is called now (renamed, gzip'd). A record's identity is its whole
    native content: no single column identifies a record in every log (one Zeek ``uid``
    has many ``dce_rpc`` records; ``EventRecordID`` restarts per channel and host)."""
    canonical = json.dumps([rule, source, identity], sort_keys=True, separators=(",", ":"), default=str,
                           ensure_ascii=False)
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def outcome(record: Mapping[str, Any], info: TableInfo) -> str:
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


def _locality(record: Mapping[str, Any], info: TableInfo, side: str) -> bool | None:
    column = info.locality.get(side)
    value = record.get(column) if column else None
    return value if isinstance(value, bool) else None


def _is_inbound(record: Mapping[str, Any], info: TableInfo) -> bool:
    return any(str(record.get(column)).lower() in values for column, values in info.inbound.items()
               if record.get(column) is not None)


def _remote_side_first(fields: dict[str, Any]) -> None:
    """An inbound event that names the local listener as its source is turned round."""
    try:
        listener_first = int(fields["source.port"]) < int(fields["destination.port"])
    except (KeyError, TypeError, ValueError):
        return
    if listener_first:
        swapped = {}
        for name in [n for n in fields if n.startswith(("source.", "destination."))]:
            side, _, leaf = name.partition(".")
            swapped[("destination." if side == "source" else "source.") + leaf] = fields.pop(name)
        fields.update(swapped)


def _name_transport(fields: dict[str, Any], info: TableInfo) -> None:
    if info.transports and "network.transport" in fields:
        value = str(fields["network.transport"])
        fields["network.transport"] = info.transports.get(value) or value.lower()


def event_time(record: Mapping[str, Any], info: TableInfo) -> float | None:
    """The record's time as epoch seconds (for windows and ordering)."""
    value = record.get(info.time) if info.time else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    moment = _parse_iso(str(value))
    return None if moment is None else moment.timestamp()


def iso_timestamp(value: Any) -> str | None:
    """ISO-8601 UTC with microseconds, from epoch seconds or an ISO string; a time that
    cannot be represented (out of range, not a time) is returned as the text it was."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment: datetime | None = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = _from_epoch(float(value))
    else:
        text = str(value).strip()
        moment = _parse_iso(text)
        if moment is None:
            return text or None
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, ValueError):  # 9999-12-31T23:59:59-01:00 is after year 9999 in UTC
        return None


def _from_epoch(seconds: float) -> datetime | None:
    if not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _parse_iso(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _as_number(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _first_present(record: Mapping[str, Any], columns: tuple[str, ...]) -> Any:
    for column in columns:
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


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def epoch_micros(timestamp: str | None) -> int | None:
    """Integer microseconds of an alert's ``@timestamp``: exact, so time windows have exact edges."""
    if not timestamp:
        return None
    moment = _parse_iso(timestamp)
    if moment is None:
        return None
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso_from_micros(micros: int) -> str:
    seconds, fraction = divmod(micros, 1_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{fraction:06d}Z"


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


# ---- alert documents (what sinks receive: the JSON of :meth:`Alert.to_dict`) --------------

def document_field(document: Mapping[str, Any], dotted: str) -> Any:
    """A field of an alert document by its dotted name, also inside ``original``, whose own
    keys may hold dots (``original.id.orig_h``)."""
    if dotted in document:
        return document[dotted]
    return _walk(document, dotted.split("."))


def document_record_id(document: Mapping[str, Any]) -> str | None:
    """The record an alert document stands for in its log, by its table's record id role."""
    event = document.get("event") or {}
    column = table_info(str(event.get("dataset", ""))).record_id
    value = (document.get("original") or {}).get(column) if column else None
    return None if value is None else str(value)
