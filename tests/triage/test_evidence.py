"""The evidence searches: exact address matching, prefilter literals, long address lists."""
from __future__ import annotations

import ipaddress

import pyarrow as pa

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.sources.prefilter import Literal
from rpcwatch.triage.evidence import (
    MAX_PREFILTER_LITERALS,
    SOURCE_CONNECTIONS,
    EvidenceSearch,
    EvidenceSet,
)

CONN_TABLE = "zeek.conn"


def _conn(origins: list[str]) -> pa.Table:
    return pa.table({"ts": [1.0 + i for i in range(len(origins))], "uid": [f"C{i}" for i in range(len(origins))],
                     "id.orig_h": origins, "id.orig_p": [1000] * len(origins),
                     "id.resp_h": ["10.0.0.1"] * len(origins), "id.resp_p": [135] * len(origins),
                     "proto": ["tcp"] * len(origins), "conn_state": ["REJ"] * len(origins)})


def _literals(search: EvidenceSearch) -> frozenset:
    return search.plan().prefilter.for_table(CONN_TABLE, "zeek-tsv").literals


def _found(search: EvidenceSearch, table: pa.Table) -> EvidenceSet:
    evidence = EvidenceSet()
    rules = [b for b in search.bound_rules() if b.table == CONN_TABLE]
    for bound, rows in DuckDBEngine().match(table, rules):
        evidence.add_rows(bound, rows)
    return evidence


def test_addresses_match_in_any_spelling_and_only_exactly():
    search = EvidenceSearch(["45.83.64.17", "2a03:b0c0:3:d0::1f:7001"], [], Config())
    table = _conn(["45.83.64.17", "::ffff:45.83.64.17", "45.83.64.170", "2A03:B0C0:3:D0:0:0:1F:7001",
                   "2a03:b0c0:3:d0::1f:7002"])
    found = _found(search, table).of(SOURCE_CONNECTIONS)
    assert sorted(e.record_id for e in found) == ["C0", "C1", "C3"]
    literals = _literals(search)
    assert Literal("45.83.64.17") in literals and Literal("2a03:b0c0:3:d0::1f:7001") in literals


def test_thousands_of_addresses():
    """Long lists go to the engine by handle; past the limit the prefilter steps aside."""
    addresses = [str(ipaddress.IPv4Address(0x2D000000 + 7 * n)) for n in range(3000)]
    search = EvidenceSearch(addresses, [], Config())
    table = _conn(addresses[::100] + ["45.0.0.1", "45.0.0.2"])
    found = _found(search, table).of(SOURCE_CONNECTIONS)
    assert len(found) == 30
    assert search.plan().prefilter.for_table(CONN_TABLE, "zeek-tsv") is None
    assert len(addresses) > MAX_PREFILTER_LITERALS
    few = EvidenceSearch(addresses[:10], [], Config())
    assert len(_literals(few)) == 10


def test_long_network_lists_are_printed_by_handle():
    engine = DuckDBEngine()
    search = EvidenceSearch([str(ipaddress.IPv4Address(0x2D000000 + n)) for n in range(100)], [], Config())
    rules = [b for b in search.bound_rules() if b.table == CONN_TABLE]
    sql = engine.query_for(_conn(["45.0.0.1"]).schema, rules)
    assert "rpcw_ip_in" in sql and "'@" in sql and "45.0.0.1" not in sql
