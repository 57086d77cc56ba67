"""What every SQL engine shares: one query that evaluates every rule bound to a table,
the batch projection it runs on, and the decoding of its result.

``WHERE (where_1 AND (rule OR rule ...)) OR (where_2 AND (...)) OR rule ...``: rules that
share a route's selection (Channel and EventID for Windows) are tried only on the rows
that pass it, and a list column names the rules each kept row matched. Dialects that set
``union_rule_groups`` get the same terms as branches of a ``UNION ALL`` instead (a row
matched in two branches comes back twice, each time with its branch's rules).
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, MutableMapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.schema import RAW_COLUMN
from rpcwatch.sigma.expr import fields_of, has_keywords
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import Dialect, SqlPrinter, Unprintable, lowered_name

RULES_COLUMN = "__rules__"
ROW_COLUMN = "__row__"
#: the name the projected batch has in the engine's SQL
VIEW_NAME = "batch"


def rules_query(schema: pa.Schema, rules: Sequence[BoundRule], dialect: Dialect, source: str,
                problems: MutableMapping[str, str], columns: Sequence[str] = (ROW_COLUMN,),
                narrowed: bool = False) -> str | None:
    """``SELECT <columns>, __rules__ FROM source WHERE ...`` (None: no rule can match).
    Rules that cannot be printed for this schema are left out and named in ``problems``.

    ``narrowed``: the source holds only rows worth trying (a literal index chose them), so
    each rule's condition is printed once, in the list of matched rules, and rows with an
    empty list are dropped: a ``WHERE`` of every condition would only repeat them (an
    engine's cost grows with the expression more than with a few hundred rows)."""
    names = {f.name: original_name(f.name) for f in schema}
    printer = SqlPrinter({names[f.name]: f.type for f in schema}, dialect, lowered_columns=True,
                         sql_names={original: sql for sql, original in names.items()})
    groups: dict[str | None, list[tuple[int, str]]] = {}
    where_sql: dict[int, str] = {}
    for index, rule in enumerate(rules):
        where, body = rule.parts()
        try:
            if where is not None and id(where) not in where_sql:
                where_sql[id(where)] = printer.condition(where)
            condition = printer.condition(body)
        except Unprintable as exc:
            problems[rule.rule.title] = str(exc)
            continue
        shared = where_sql[id(where)] if where is not None else None
        if condition != "FALSE" and shared != "FALSE":
            groups.setdefault(shared, []).append((index, condition))
    if not groups:
        return None
    branches: list[tuple[str, list[str]]] = []  # (condition, rule flags)
    for shared, members in groups.items():
        flags = [f"CASE WHEN {f'{shared} AND ' if shared else ''}{c} THEN {i} END" for i, c in members]
        if dialect.union_rule_groups and not shared:
            branches += [(condition, [flag]) for (_, condition), flag in zip(members, flags)]
        else:
            bodies = " OR ".join(c for _, c in members)
            branches.append((f"({shared} AND ({bodies}))" if shared else bodies, flags))
    if not dialect.union_rule_groups:
        branches = [(" OR ".join(condition for condition, _ in branches), [f for _, fs in branches for f in fs])]
    lowered = "".join(f", lower({printer.ident(c)}) AS {dialect.ident(lowered_name(printer.sql_name(c)))}"
                      for c in sorted(printer.lowered))
    selected = ", ".join(dialect.ident(name) for name in columns)
    if narrowed:
        flags = [flag for _, branch_flags in branches for flag in branch_flags]
        return (f"SELECT * FROM (SELECT {selected}, {dialect.non_null_list(flags)} AS {RULES_COLUMN} "
                f"FROM (SELECT *{lowered} FROM {source})) WHERE {dialect.not_empty(RULES_COLUMN)}")
    return " UNION ALL ".join(
        f"SELECT {selected}, {dialect.non_null_list(flags)} AS {RULES_COLUMN} "
        f"FROM (SELECT *{lowered} FROM {source}) WHERE {condition}" for condition, flags in branches)


class SqlRuleEngine(ABC):
    """Runs bound rules over Arrow tables as SQL, one query per batch and rule list.

    Each batch is projected onto the columns the rules read, in a per-rule-list schema
    that only grows (a column that changes type between batches becomes text, which
    Sigma compares the same way), so thousands of rules are planned once per table rather
    than once per batch; only row numbers and rule numbers come back from the engine.
    Caches are keyed by the rule list itself (bound rules compare by identity)."""

    name: str

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self._queries: dict[tuple, str | None] = {}
        self._shapes: dict[tuple[BoundRule, ...], BatchShape] = {}
        #: rules that could not be printed for some table schema, with the reason
        self.problems: dict[str, str] = {}

    @abstractmethod
    def execute(self, view: pa.Table, sql: str) -> pa.Table:
        """Run ``sql`` with ``view`` registered as :data:`VIEW_NAME`; the result as Arrow."""

    def query_for(self, schema: pa.Schema, rules: Sequence[BoundRule], narrowed: bool = False) -> str | None:
        """The SQL that evaluates these rules on this schema (None: no rule can match);
        ``narrowed``: on rows a literal index chose (see :func:`rules_query`)."""
        key = (schema, tuple(rules), narrowed)
        if key not in self._queries:
            self._queries[key] = rules_query(schema, rules, self.dialect, VIEW_NAME, self.problems,
                                             narrowed=narrowed)
        return self._queries[key]

    def match(self, data: pa.Table, rules: Sequence[BoundRule]) -> Iterator[tuple[BoundRule, pa.Table]]:
        """Yield each rule with the rows of ``data`` it matched (rules without matches omitted)."""
        if data.num_rows == 0:
            return
        rules = tuple(rules)
        shape = self._shapes.get(rules)
        if shape is None:
            shape = self._shapes[rules] = BatchShape(rules)
        found = list(self.evaluate(shape.project(data), rules))
        yield from _taken(data, found)

    def evaluate(self, view: pa.Table, rules: tuple[BoundRule, ...],
                 narrowed: bool = False) -> Iterator[tuple[BoundRule, pa.Array]]:
        """One query over ``view``: each rule with the row numbers it matched."""
        sql = self.query_for(view.schema, rules, narrowed)
        if sql is None:
            return
        for index, hit in matched_row_numbers(self.execute(view, sql)):
            yield rules[index], hit


def _taken(data: pa.Table, found: list[tuple[BoundRule, pa.Array]]) -> Iterator[tuple[BoundRule, pa.Table]]:
    """Each rule's rows of ``data``, in order: one take of every matched row from the (wide)
    batch, then per rule from that small table."""
    if not found:
        return
    matched = np.unique(np.concatenate([rows.to_numpy() for _, rows in found]))
    records = data.take(pa.array(matched))
    for rule, rows in found:
        positions = np.searchsorted(matched, np.sort(rows.to_numpy()))
        yield rule, records.take(pa.array(positions))


def precomputed_rows_by_rule(data: pa.Table,
                             rules: Sequence[BoundRule]) -> Iterator[tuple[BoundRule, pa.Table]]:
    """Rows that arrive with their :data:`RULES_COLUMN` already computed (a scan the
    engine ran where the data lives), decoded like a query result."""
    matched = pa.table({ROW_COLUMN: pa.array(range(data.num_rows), pa.int64()),
                        RULES_COLUMN: data.column(RULES_COLUMN)})
    found = [(rules[index], hit) for index, hit in matched_row_numbers(matched)]
    yield from _taken(data.drop_columns([RULES_COLUMN]), found)


def matched_row_numbers(matched: pa.Table) -> Iterator[tuple[int, pa.Array]]:
    """Decode a :func:`rules_query` result: each matching rule's position with the numbers
    of the rows it matched (in no particular order)."""
    if matched.num_rows == 0:
        return
    flags = matched.column(RULES_COLUMN).combine_chunks()
    rows = matched.column(ROW_COLUMN).combine_chunks()
    flat = pc.list_flatten(flags)
    parents = pc.list_parent_indices(flags)
    for index in pc.unique(flat).to_pylist():
        yield index, pc.take(rows, pc.filter(parents, pc.equal(flat, index)))


class BatchShape:
    """The columns a set of rules reads, and a schema for them that only grows."""

    def __init__(self, rules: Sequence[BoundRule]):
        wanted: set[str] = set()
        self.all_text = False
        for rule in rules:
            wanted.update(name.lower() for name in fields_of(rule.expr))
            self.all_text |= has_keywords(rule.expr)
        self.wanted = wanted
        self.columns: dict[str, pa.DataType] = {}

    def project(self, data: pa.Table) -> pa.Table:
        names = [n for n in data.column_names if n.lower() in self.wanted
                 or (self.all_text and (n == RAW_COLUMN or _is_text(data.schema.field(n).type)))]
        for name in names:
            seen, now = self.columns.get(name), data.schema.field(name).type
            if seen is None:
                self.columns[name] = now
            elif seen != now and seen != pa.string():
                self.columns[name] = pa.string()
        arrays = []
        for name, dtype in self.columns.items():
            if name in data.column_names:
                arrays.append(_as(data.column(name), dtype))
            else:
                arrays.append(pa.nulls(data.num_rows, dtype))
        arrays.append(pa.array(range(data.num_rows), pa.int64()))
        return pa.table(arrays, names=[*_sql_names(self.columns), ROW_COLUMN])


#: joins a column's name and a number when SQL would take it for another column
COLLISION_MARK = "\x1e"


def _sql_names(columns) -> list[str]:
    """Column names SQL tells apart: SQL resolves names without regard to case, and a
    Windows table can hold both ``ProcessId`` (Sysmon) and ``ProcessID`` (Security)."""
    seen: set[str] = set()
    names = []
    for name in columns:
        sql_name, number = name, 1
        while sql_name.lower() in seen:
            number += 1
            sql_name = f"{name}{COLLISION_MARK}{number}"
        seen.add(sql_name.lower())
        names.append(sql_name)
    return names


def original_name(sql_name: str) -> str:
    return sql_name.split(COLLISION_MARK, 1)[0]


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or (
        pa.types.is_list(dtype) and _is_text(dtype.value_type))


def _as(column: pa.ChunkedArray, dtype: pa.DataType) -> pa.ChunkedArray:
    if column.type == dtype:
        return column
    if dtype == pa.string() and (pa.types.is_list(column.type) or pa.types.is_struct(column.type)):
        return pa.chunked_array([pa.array([None if v is None else json.dumps(v) for v in column.to_pylist()],
                                          pa.string())])
    return pc.cast(column, dtype)
