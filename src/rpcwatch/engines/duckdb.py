"""The embedded engine: compiled rules run as DuckDB SQL over Arrow batches, through the
shared query of :mod:`rpcwatch.engines.query` (DuckDB evaluates an OR's later terms only
on rows still undecided), with exact CIDR membership as a vectorised function.
"""
from __future__ import annotations

import bisect
import warnings
from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.engines.query import ROW_COLUMN, VIEW_NAME, SqlRuleEngine, original_name
from rpcwatch.engines.ruleindex import RuleIndex
from rpcwatch.networks import address_key, merged_key_ranges, parse_address, parse_network
from rpcwatch.sigma.expr import fields_of, has_keywords
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import Dialect

#: from this many rules on one table, a literal index picks the rows each rule is tried on
INDEXED_RULES = 24
#: the address matcher's cache; cleared when full so memory stays bounded on any input
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


class DuckDBEngine(SqlRuleEngine):
    """Runs bound rules over Arrow tables with an in-process DuckDB connection. Each query
    is parsed once and re-executed from DuckDB's parsed statement; with many rules on a
    table, a literal index picks the rows each group of rules is tried on."""

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        super().__init__(Dialect())
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        from duckdb.func import FunctionNullHandling, PythonUDFType
        from duckdb.sqltypes import BOOLEAN, VARCHAR

        self.con.create_function("rpcw_ip_in", AddressMatcher(self.dialect.network_lists), [VARCHAR, VARCHAR],
                                 BOOLEAN, type=PythonUDFType.ARROW, null_handling=FunctionNullHandling.SPECIAL,
                                 side_effects=False)
        self._statements: dict[str, duckdb.Statement] = {}
        self._indexes: dict[tuple[BoundRule, ...], RuleIndex] = {}
        self._pruned: dict[tuple, list[str]] = {}

    def execute(self, view: pa.Table, sql: str) -> pa.Table:
        statement = self._statements.get(sql)
        if statement is None:
            statement = self._statements[sql] = self.con.extract_statements(sql)[0]
        self.con.register(VIEW_NAME, view)
        try:
            with warnings.catch_warnings():
                # the result is row and rule numbers only: the copy the warning is about is small,
                # and a DB-API execute of a parsed statement skips the relation layer's parsing
                warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)
                return self.con.execute(statement).to_arrow_table()
        finally:
            self.con.unregister(VIEW_NAME)

    def evaluate(self, view: pa.Table, rules: tuple[BoundRule, ...],
                 narrowed: bool = False) -> Iterator[tuple[BoundRule, pa.Array]]:
        if len(rules) < INDEXED_RULES:
            yield from super().evaluate(view, rules, narrowed)
            return
        # each group of rules only on the rows that hold one of its literals; rules
        # without literals on every row
        index = self._indexes.get(rules)
        if index is None:
            index = self._indexes[rules] = RuleIndex(rules)
        for unit_rules, unit_rows in _evaluation_units(index.candidates(view)):
            members = tuple(rules[i] for i in unit_rules)
            subset = view.select(self._columns_for(view, members))
            if len(unit_rows) < view.num_rows // 2:
                subset = subset.take(pa.array(unit_rows))
            yield from super().evaluate(subset, members, narrowed=True)
        if index.always:
            members = tuple(rules[i] for i in index.always)
            yield from super().evaluate(view.select(self._columns_for(view, members)), members)

    def _columns_for(self, view: pa.Table, rules: tuple[BoundRule, ...]) -> list[str]:
        """The view's columns some of the rules read (every column for keyword rules)."""
        key = (view.schema, rules)
        columns = self._pruned.get(key)
        if columns is None:
            wanted = {name.lower() for rule in rules for name in fields_of(rule.expr)}
            everything = any(has_keywords(rule.expr) for rule in rules)
            columns = self._pruned[key] = [n for n in view.column_names
                                           if everything or n == ROW_COLUMN or original_name(n).lower() in wanted]
        return columns


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


def open_engine(master: str | None = None) -> DuckDBEngine:
    if master:
        from rpcwatch.engines import EngineUnavailable

        raise EngineUnavailable("--master is for --engine spark")
    return DuckDBEngine()
