"""The embedded engine: compiled rules run as DuckDB SQL over Arrow batches.

One query per batch evaluates every rule bound to the batch's table: the WHERE clause
keeps the rows that match any rule (DuckDB evaluates an OR's later terms only on rows
still undecided), and a list column names the rules each kept row matched.
"""
from __future__ import annotations

import bisect

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.engines.query import VIEW_NAME, SqlRuleEngine
from rpcwatch.networks import address_key, merged_key_ranges, parse_address, parse_network
from rpcwatch.sigma.sql import Dialect

#: per-process cache sizes; cleared when full so memory stays bounded on any input
_CACHE_LIMIT = 1 << 20


class AddressMatcher:
    """``rpcw_ip_in(text, 'cidr,cidr,...')``: exact CIDR membership for a column of
    address strings, evaluated once per distinct address in each vector."""

    def __init__(self) -> None:
        self._keys: dict[str, int | None] = {}
        self._ranges: dict[str, tuple[list[int], list[int]]] = {}

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
            ranges = merged_key_ranges(parse_network(net) for net in spec.split(","))
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
    """Runs bound rules over Arrow tables with an in-process DuckDB connection; exact CIDR
    membership is :class:`AddressMatcher`, registered as ``rpcw_ip_in``."""

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        super().__init__(Dialect())
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        from duckdb.sqltypes import BOOLEAN, VARCHAR

        self.con.create_function("rpcw_ip_in", AddressMatcher(), [VARCHAR, VARCHAR], BOOLEAN,
                                 type="arrow", null_handling="special", side_effects=False)

    def execute(self, view: pa.Table, sql: str) -> pa.Table:
        self.con.register(VIEW_NAME, view)
        try:
            return self.con.sql(sql).to_arrow_table()
        finally:
            self.con.unregister(VIEW_NAME)
