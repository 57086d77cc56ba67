"""The embedded engine: many rules at once (the literal index), schemas that change
between batches, and column names SQL would confuse."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle import evaluate
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma_strategies import event_values, rule

from rpcwatch.engines.duckdb import INDEXED_RULES, DuckDBEngine
from rpcwatch.sigma.compiler import RuleError, compile_rule
from rpcwatch.sigma.expr import And
from rpcwatch.sigma.logsources import BoundRule

SCHEMA = pa.schema([("__id__", pa.int64()), ("s", pa.string()), ("t", pa.string()), ("n", pa.int64()),
                    ("x", pa.float64()), ("f", pa.bool_()), ("l", pa.list_(pa.string())), ("ip", pa.string())])


def bound(definition: dict, index: int) -> BoundRule:
    compiled = compile_rule(SigmaRule.from_dict({**definition, "title": f"r{index}"}))
    return BoundRule(compiled, "test", compiled.expr)


def matches(engine, table, rules) -> set[tuple[str, int]]:
    return {(b.rule.title, i) for b, rows in engine.match(table, rules) for i in rows.column("__id__").to_pylist()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(rule(), min_size=INDEXED_RULES, max_size=INDEXED_RULES + 8), st.lists(event_values(), min_size=1,
                                                                                        max_size=40))
def test_the_literal_index_changes_no_answer(definitions, events):
    """With enough rules the engine first narrows rows per rule by literals; every answer
    must still be the oracle's."""
    try:
        rules = [bound(d, i) for i, d in enumerate(definitions)]
    except (SigmaError, RuleError, ValueError):
        assume(False)
    table = pa.Table.from_pylist([{"__id__": i, **e} for i, e in enumerate(events)], schema=SCHEMA)
    expected = {(r.rule.title, row["__id__"]) for r in rules for row in table.to_pylist() if evaluate(r.expr, row)}
    assert matches(DuckDBEngine(), table, rules) == expected


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(st.tuples(rule(), st.integers(0, 2)), min_size=INDEXED_RULES, max_size=INDEXED_RULES + 4),
       st.lists(event_values(), min_size=1, max_size=40))
def test_rules_with_a_route_selection_are_indexed_by_both_parts(definitions, events):
    """Rules whose route adds a selection (a Windows channel) are narrowed by the
    selection's literals and the rule's own: the answers are still the oracle's."""
    selections = [bound({"logsource": {"product": "test"}, "detection": {"sel": {"t|contains": word},
                                                                          "condition": "sel"}}, 1000 + i).expr
                  for i, word in enumerate(["ab", "1", "c"])]
    try:
        rules = []
        for index, (definition, route) in enumerate(definitions):
            own = bound(definition, index)
            where = selections[route]
            rules.append(BoundRule(own.rule, "test", And((where, own.expr)), where=where, body=own.expr))
    except (SigmaError, RuleError, ValueError):
        assume(False)
    table = pa.Table.from_pylist([{"__id__": i, **e} for i, e in enumerate(events)], schema=SCHEMA)
    expected = {(r.rule.title, row["__id__"]) for r in rules for row in table.to_pylist() if evaluate(r.expr, row)}
    assert matches(DuckDBEngine(), table, rules) == expected


def test_columns_that_differ_only_in_case_stay_apart():
    """Sysmon's ProcessId (text here) and Security's ProcessID (a number) in one table."""
    table = pa.table({"__id__": [0, 1], "ProcessId": ["0x1a4", None], "ProcessID": [None, 420]})
    rules = [bound({"logsource": {"product": "t"}, "detection": {"s": {field: value}, "condition": "s"}}, i)
             for i, (field, value) in enumerate([("ProcessId", "0x1A4"), ("ProcessID", 420), ("processid", "0x1a4")])]
    assert matches(DuckDBEngine(), table, rules) == {("r0", 0), ("r1", 1), ("r2", 0)}
    many = rules * (INDEXED_RULES // 3 + 1)  # the indexed path resolves columns the same way
    assert matches(DuckDBEngine(), table, many) == {("r0", 0), ("r1", 1), ("r2", 0)}


def test_batches_with_different_schemas_share_one_plan():
    engine = DuckDBEngine()
    rules = [bound({"logsource": {"product": "t"}, "detection": {"s": {"a": "x"}, "condition": "s"}}, 0)]
    first = pa.table({"__id__": [0], "a": ["x"]})
    second = pa.table({"__id__": [1], "b": [1], "a": [5]})  # a new column; 'a' now a number
    assert matches(engine, first, rules) == {("r0", 0)}
    assert matches(engine, second, rules) == set()
    third = pa.table({"__id__": [2], "a": ["X"]})
    assert matches(engine, third, rules) == {("r0", 2)}


def test_keyword_rules_are_indexed_over_every_text_value():
    """A keyword's literal is looked for in every value a keyword searches: here a sparse
    column and a list column; a number column is not searched."""
    table = pa.table({"__id__": [0, 1, 2, 3], "a": [None, "run MIMIKATZ now", None, None],
                      "l": [["x", "sekurlsa::x"], None, None, ["y"]], "n": [1, 2, 3, 4]})
    keywords = ["mimikatz", "sekurlsa::", "nothing-here", "3"]
    rules = [bound({"logsource": {"product": "t"}, "detection": {"k": [keywords[i % 4]], "condition": "k"}}, i)
             for i in range(INDEXED_RULES)]
    expected = {(f"r{i}", row) for i in range(INDEXED_RULES) for row in ({0: [1], 1: [0]}.get(i % 4, []))}
    assert matches(DuckDBEngine(), table, rules) == expected
