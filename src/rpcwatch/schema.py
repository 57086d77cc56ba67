"""What readers, the rule compiler, the engines, alerts and triage all agree on, in one
neutral place none of them owns: the logical tables (``data/tables.yml``) with their
column roles, the columns the pipeline adds to batches, the Arrow types of Zeek's field
types, and the literals a prefilter looks for.

Column roles say which native column plays which part in an alert (``source.ip`` is
``id.orig_h`` in ``zeek.conn``, ``SourceIp`` or ``SourceAddress`` in ``windows``), which
column is the time, the record id and the outcome. Alerts, triage, exposure and the
outputs read the roles; no module names a table's columns itself, so a new table gets
them all by declaring its roles.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from typing import Literal as TypingLiteral

import pyarrow as pa

from rpcwatch.datafiles import load_yaml

#: the column with a record's raw text, added by readers for keyword rules (see docs/sigma-support.md)
RAW_COLUMN = "__raw__"
#: the input a row came from (alerts name it as ``log.file.path``)
FILE_COLUMN = "__file__"
#: columns the pipeline adds to batches start with this; never part of an alert's ``original``
HIDDEN_PREFIX = "__"


# ---- tables and their column roles ---------------------------------------------------

@dataclass(frozen=True)
class TableInfo:
    """How alerts and triage read a table (``data/tables.yml``)."""

    name: str
    time: str | None = None
    record_id: str | None = None
    #: alert field (an ECS name) -> the column(s) holding it, first present wins
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    outcome: Mapping[str, Any] = field(default_factory=dict)
    transport: str | None = None
    #: field -> values that make a record an inbound connection (see tables.yml)
    inbound: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: protocol numbers -> names for network.transport
    transports: Mapping[str, str] = field(default_factory=dict)
    #: the log's own fields and their types in the log's type names (Zeek's)
    columns: Mapping[str, str] = field(default_factory=dict)
    #: ``source``/``destination`` -> boolean column saying the sensor counts it as local
    locality: Mapping[str, str] = field(default_factory=dict)
    #: records of many kinds share the table's columns: an unset column is not the record's
    sparse: bool = False

    def columns_of(self, role: str) -> tuple[str, ...]:
        """The columns that play ``role`` (``source.ip``), first present wins; () if none."""
        return self.roles.get(role, ())

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_network(self) -> bool:
        """Records with two ends of a connection: triage and exposure read them as flows."""
        return self.has_role("source.ip") and self.has_role("destination.ip")


def _columns(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@lru_cache(maxsize=1)
def _table_infos() -> Mapping[str, TableInfo]:
    infos = {}
    for name, data in load_yaml("rpcwatch", "data", "tables.yml")["tables"].items():
        infos[name] = TableInfo(
            name=name, time=data.get("time"), record_id=data.get("record_id"),
            roles={role: _columns(columns) for role, columns in (data.get("roles") or {}).items()},
            outcome=data.get("outcome", {}) or {}, transport=data.get("transport"),
            inbound={k: tuple(str(v).lower() for v in vs) for k, vs in (data.get("inbound") or {}).items()},
            transports={str(k): v for k, v in (data.get("transports") or {}).items()},
            columns=data.get("columns") or {}, locality=data.get("locality", {}) or {},
            sparse=bool(data.get("sparse")))
    return infos


def table_info(table: str) -> TableInfo:
    """The description of a table, falling back to its family (``zeek.*``)."""
    infos = _table_infos()
    if table in infos:
        return infos[table]
    family = table.split(".", 1)[0] + ".*"
    return infos.get(family, TableInfo(name=table))


def known_tables() -> list[TableInfo]:
    """Every table described in ``tables.yml`` (families such as ``zeek.*`` excluded)."""
    return [info for name, info in _table_infos().items() if not name.endswith("*")]


def all_roles() -> frozenset[str]:
    """Every alert field some table's roles fill."""
    return frozenset(role for info in _table_infos().values() for role in info.roles)


# ---- Zeek field types ---------------------------------------------------------------

ZEEK_INT_TYPES = frozenset({"count", "port", "int"})
ZEEK_FLOAT_TYPES = frozenset({"double", "interval", "time"})


def zeek_arrow_type(zeek_type: str) -> pa.DataType:
    """The Arrow type a column of this Zeek type has in a ``zeek.*`` table."""
    if zeek_type.startswith(("set[", "vector[", "table[")):
        return pa.list_(pa.string())
    if zeek_type in ZEEK_INT_TYPES:
        return pa.int64()
    if zeek_type in ZEEK_FLOAT_TYPES:
        return pa.float64()
    return pa.bool_() if zeek_type == "bool" else pa.string()


def default_schema(table: str) -> pa.Schema:
    """The schema of a table as its producer writes it by default (``columns`` in tables.yml)."""
    return pa.schema([(name, zeek_arrow_type(kind)) for name, kind in table_info(table).columns.items()])


# ---- prefilter literals ------------------------------------------------------------

#: characters never escaped by Zeek TSV/JSON, evtx JSON or Go/Python JSON encoders: a
#: literal made of them appears in a record's raw bytes exactly as in the rule
SAFE_LITERAL = re.compile(r"[A-Za-z0-9_.:;=@#%+!~$^()\[\]{}|'*?-]+")


@dataclass(frozen=True)
class Literal:
    """A piece of text that a matching record must contain."""

    text: str
    kind: TypingLiteral["number", "string"] = "string"
    case_sensitive: bool = False

    @property
    def score(self) -> int:
        """Higher is more selective (used to pick one alternative of an AND)."""
        return len(self.text) + (2 if self.kind == "number" else 0)


#: A record can only match when it contains at least one literal of the set.
LiteralSet = frozenset[Literal]
