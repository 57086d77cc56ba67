"""The embedded engine: compiled rules run as DuckDB SQL over Arrow batches.

One query per batch evaluates every rule bound to the batch's table: the WHERE clause
keeps the rows that match any rule (DuckDB evaluates an OR's later terms only on rows
still undecided), and a list column names the rules each kept row matched.
"""
from __future__ import annotations

import bisect
import warnings
from typing import Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.engines.query import (
    ROW_COLUMN,
    VIEW_NAME,
    BatchShape,
    matched_row_numbers,
    original_name,
    rules_query,
)
from rpcwatch.engines.ruleindex import RuleIndex
from rpcwatch.networks import address_key, merged_key_ranges, parse_address, parse_network
from rpcwatch.sigma.expr import fields_of, has_keywords
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import Dialect

#: from this many rules on one table, a literal index picks the rows each rule is tried on
INDEXED_RULES = 24
#: per-process cache sizes; cleared when full so memory stays bounded on any input
_CACHE_LIMIT = 1 << 20


class AddressMatcher:
    """``rpcw_ip_in(text, 'cidr,cidr,...')``: exact CIDR membership for a column of
    address strings, evaluated once per distinct address in each vector."""

    def __init__(self, network_lists: dict[str, str] | None = None) -> None:
        self._keys: dict[str, int | None] = {}
        self._ranges: dict[str, tuple[list[int], list[int]]] = {}
        #: handle -> network list, for lists the dialect printed by handle
        self._lists = network_lists if network_lists is not None else {}

    def _key(self, text: str) -> int | None:
        key = self._keys.get(text, -1)
        if key == -1:
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            address = parse_address(text)
            key = int(address_key(address), 16) if address is not None else None
            self._keys[text] = key
        return key

    def _spans(self, spec: str) -> tuple[list[int], list[int]]:
        spans = self._ranges.get(spec)
        if spans is None:
            networks = self._lists.get(spec, spec)
            ranges = merged_key_ranges(parse_network(net) for net in networks.split(","))
            spans = ([int(lo, 16) for lo, _ in ranges], [int(hi, 16) for _, hi in ranges])
            self._ranges[spec] = spans
        return spans

    def __call__(self, values: pa.Array, specs: pa.Array) -> pa.Array:
        if len(values) == 0:
            return pa.array([], pa.bool_())
        lows, highs = self._spans(specs[0].as_py())
        encoded = pc.dictionary_encode(values)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        verdicts = []
        for text in encoded.dictionary.to_pylist():
            key = self._key(text)
            if key is None:
                verdicts.append(False)
                continue
            at = bisect.bisect_right(lows, key) - 1
            verdicts.append(at >= 0 and key <= highs[at])
        return pc.take(pa.array(verdicts, pa.bool_()), encoded.indices)


class DuckDBEngine:
    """Runs bound rules over Arrow tables with an in-process DuckDB connection.

    Each batch is projected onto the columns the rules read, in a per-table schema that
    only grows (a column that changes type between batches becomes text, which Sigma
    compares the same way), so thousands of rules are planned once per table rather than
    once per batch; only row numbers and rule numbers come back from DuckDB.
    """

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        from duckdb.sqltypes import BOOLEAN, VARCHAR

        self.dialect = Dialect()
        self.con.create_function("rpcw_ip_in", AddressMatcher(self.dialect.network_lists), [VARCHAR, VARCHAR],
                                 BOOLEAN, type="arrow", null_handling="special", side_effects=False)
        #: (schema, rule identities) -> (the rules, kept alive so identities stay unique;
        #: SQL; the parsed statement, so a query is parsed once, not once per batch)
        self._queries: dict[tuple, tuple[tuple, str | None, object]] = {}
        #: per rule list: the columns its rules read, and the stable schema seen so far
        self._shapes: dict[int, tuple[Sequence[BoundRule], BatchShape]] = {}
        self._indexes: dict[int, tuple[Sequence[BoundRule], RuleIndex]] = {}
        self._pruned: dict[tuple, tuple[tuple, list[str]]] = {}
        #: rules that could not be printed for some table schema, with the reason
        self.problems: dict[str, str] = {}

    def query_for(self, schema: pa.Schema, rules: Sequence[BoundRule]) -> str | None:
        """The SQL that evaluates these rules on this schema (None: no rule can match)."""
        return self._query(schema, rules)[1]

    def _query(self, schema: pa.Schema, rules: Sequence[BoundRule]) -> tuple[tuple, str | None, object]:
        key = (schema, tuple(id(rule) for rule in rules))
        found = self._queries.get(key)
        if found is None:
            sql = self._sql(schema, rules)
            statement = self.con.extract_statements(sql)[0] if sql is not None else None
            found = self._queries[key] = (tuple(rules), sql, statement)
        return found

    def _sql(self, schema: pa.Schema, rules: Sequence[BoundRule]) -> str | None:
        return rules_query(schema, rules, self.dialect, VIEW_NAME, self.problems)

    def match(self, data: pa.Table, rules: Sequence[BoundRule]) -> Iterator[tuple[BoundRule, pa.Table]]:
        """Yield each rule with the rows of ``data`` it matched (rules without matches omitted)."""
        if data.num_rows == 0:
            return
        view = self._shape_for(rules).project(data)
        if len(rules) < INDEXED_RULES:
            found = list(self._evaluate(view, tuple(rules)))
        else:
            found = list(self._evaluate_indexed(view, rules))
        if not found:
            return
        # one take of every matched row from the (wide) original table, then per rule
        # from that small table
        matched = np.unique(np.concatenate([rows.to_numpy() for _, rows in found]))
        records = data.take(pa.array(matched))
        for rule, rows in found:
            positions = np.searchsorted(matched, np.sort(rows.to_numpy()))
            yield rule, records.take(pa.array(positions))

    def _evaluate_indexed(self, view: pa.Table, rules: Sequence[BoundRule]) -> Iterator[tuple[BoundRule, pa.Array]]:
        """Each group of rules only on the rows that hold one of its literals; rules
        without literals on every row."""
        index = self._index_for(rules)
        for unit_rules, unit_rows in _evaluation_units(index.candidates(view)):
            members = tuple(rules[i] for i in unit_rules)
            subset = view.select(self._columns_for(view, members))
            if len(unit_rows) < view.num_rows // 2:
                subset = subset.take(pa.array(unit_rows))
            yield from self._evaluate(subset, members)
        if index.always:
            members = tuple(rules[i] for i in index.always)
            yield from self._evaluate(view.select(self._columns_for(view, members)), members)

    def _columns_for(self, view: pa.Table, rules: tuple[BoundRule, ...]) -> list[str]:
        """The view's columns some of the rules read (every column for keyword rules)."""
        key = (view.schema, tuple(id(r) for r in rules))
        found = self._pruned.get(key)
        if found is None or found[0] != rules:
            wanted = {name.lower() for rule in rules for name in fields_of(rule.expr)}
            everything = any(has_keywords(rule.expr) for rule in rules)
            columns = [n for n in view.column_names
                       if everything or n == ROW_COLUMN or original_name(n).lower() in wanted]
            found = self._pruned[key] = (rules, columns)
        return found[1]

    def _evaluate(self, view: pa.Table, rules: tuple[BoundRule, ...]) -> Iterator[tuple[BoundRule, pa.Array]]:
        """One query over ``view``: each rule with the row numbers it matched."""
        statement = self._query(view.schema, rules)[2]
        if statement is None:
            return
        self.con.register(VIEW_NAME, view)
        try:
            with warnings.catch_warnings():
                # the result is row and rule numbers only: the copy the warning is about is small,
                # and a DB-API execute of a parsed statement skips the relation layer's parsing
                warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)
                matched = self.con.execute(statement).to_arrow_table()
        finally:
            self.con.unregister(VIEW_NAME)
        for index, hit in matched_row_numbers(matched):
            yield rules[index], hit

    def _index_for(self, rules: Sequence[BoundRule]) -> RuleIndex:
        return _per_rule_list(self._indexes, rules, RuleIndex)

    def _shape_for(self, rules: Sequence[BoundRule]) -> BatchShape:
        return _per_rule_list(self._shapes, rules, BatchShape)


#: candidate groups are evaluated together up to this many rules and candidate rows (each
#: query costs a few milliseconds however small; a rule on a few extra rows costs less)
UNIT_RULES, UNIT_ROWS = 96, 16384


def _evaluation_units(groups) -> Iterator[tuple[list[int], np.ndarray]]:
    """Small candidate groups merged into fewer queries (rows: the union of theirs)."""
    rules: list[int] = []
    rows: list[np.ndarray] = []
    size = 0
    for group in sorted(groups, key=lambda g: len(g.rows)):
        if rules and (len(rules) + len(group.rules) > UNIT_RULES or size + len(group.rows) > UNIT_ROWS):
            yield rules, np.unique(np.concatenate(rows))
            rules, rows, size = [], [], 0
        rules.extend(group.rules)
        rows.append(group.rows)
        size += len(group.rows)
    if rules:
        yield rules, np.unique(np.concatenate(rows))


def _per_rule_list(cache: dict, rules: Sequence[BoundRule], build):
    """What ``build(rules)`` made for this very rule list (a table's rules are one list for
    the whole run); keyed by identity, with the list kept so its id cannot be reused."""
    entry = cache.get(id(rules))
    if entry is None or entry[0] is not rules:
        entry = cache[id(rules)] = (rules, build(rules))
    return entry[1]
