"""Differential tests: random Sigma rules over random events, SQL path vs the per-event oracle."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle import evaluate
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma_strategies import event_values, rule

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.sigma.compiler import RuleError, compile_rule
from rpcwatch.sigma.logsources import BoundRule

ENGINE = DuckDBEngine()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(rule(), st.lists(event_values(), min_size=1, max_size=12))
def test_sql_path_agrees_with_the_oracle(definition, events):
    try:
        compiled = compile_rule(SigmaRule.from_dict(definition))
    except (SigmaError, RuleError, ValueError):
        assume(False)
    rows = [{"__id__": i, **e} for i, e in enumerate(events)]
    schema = pa.schema([("__id__", pa.int64()), ("s", pa.string()), ("t", pa.string()), ("n", pa.int64()),
                        ("x", pa.float64()), ("f", pa.bool_()), ("l", pa.list_(pa.string())), ("ip", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    bound = BoundRule(compiled, "test", compiled.expr)
    found = {i for _, matched in ENGINE.match(table, [bound]) for i in matched.column("__id__").to_pylist()}
    expected = {r["__id__"] for r in table.to_pylist() if evaluate(compiled.expr, r)}
    assert found == expected, (definition, compiled.expr)
