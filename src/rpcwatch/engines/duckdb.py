"""The embedded engine: compiled rules run as DuckDB SQL over Arrow batches.

One query per batch evaluates every rule bound to the batch's table: the WHERE clause
keeps the rows that match any rule (DuckDB evaluates an OR's later terms only on rows
still undecided), and a list column names the rules each kept row matched.
"""
from __future__ import annotations

import bisect
from typing import Iterator, Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.networks import address_key, merged_key_ranges, parse_address, parse_network
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import Dialect, SqlPrinter, Unprintable

RULES_COLUMN = "__rules__"
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
    """Runs bound rules over Arrow tables with an in-process DuckDB connection."""

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        from duckdb.sqltypes import BOOLEAN, VARCHAR

        self.dialect = Dialect()
        self.con.create_function("rpcw_ip_in", AddressMatcher(self.dialect.network_lists), [VARCHAR, VARCHAR],
                                 BOOLEAN, type="arrow", null_handling="special", side_effects=False)
        self._queries: dict[tuple, str | None] = {}
        #: rules that could not be printed for some table schema, with the reason
        self.problems: dict[str, str] = {}

    def query_for(self, schema: pa.Schema, rules: Sequence[BoundRule]) -> str | None:
        """The SQL that evaluates these rules on this schema (None: no rule can match)."""
        key = (schema, tuple(id(rule) for rule in rules))
        if key not in self._queries:
            printer = SqlPrinter(schema, self.dialect)
            conditions = []
            for index, rule in enumerate(rules):
                try:
                    conditions.append((index, printer.condition(rule.expr)))
                except Unprintable as exc:
                    self.problems[rule.rule.title] = str(exc)
            conditions = [(i, c) for i, c in conditions if c != "FALSE"]
            if not conditions:
                self._queries[key] = None
            else:
                flags = ", ".join(f"CASE WHEN {c} THEN {i} END" for i, c in conditions)
                where = " OR ".join(c for _, c in conditions)
                self._queries[key] = (
                    f"SELECT *, list_filter([{flags}], lambda r: r IS NOT NULL) AS {RULES_COLUMN} "
                    f"FROM batch WHERE {where}")
        return self._queries[key]

    def match(self, data: pa.Table, rules: Sequence[BoundRule]) -> Iterator[tuple[BoundRule, pa.Table]]:
        """Yield each rule with the rows of ``data`` it matched (rules without matches omitted)."""
        sql = self.query_for(data.schema, rules)
        if sql is None or data.num_rows == 0:
            return
        self.con.register("batch", data)
        try:
            matched = self.con.sql(sql).to_arrow_table()
        finally:
            self.con.unregister("batch")
        if matched.num_rows == 0:
            return
        flags = matched.column(RULES_COLUMN).combine_chunks()
        rows = matched.drop_columns([RULES_COLUMN])
        flat = pc.list_flatten(flags)
        parents = pc.list_parent_indices(flags)
        positions = pa.array(range(rows.num_rows), pa.int64())
        for index in pc.unique(flat).to_pylist():
            hit_rows = pc.filter(parents, pc.equal(flat, index))
            yield rules[index], rows.filter(pc.is_in(positions, value_set=hit_rows))
