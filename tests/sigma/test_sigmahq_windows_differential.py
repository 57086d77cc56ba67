"""Every SigmaHQ Windows rule over every EVTX file of the corpus: what ``rpcwatch hunt``
matches (prefilter, rule index, batched SQL) against the per-event oracle, rule by rule
and record by record."""
from __future__ import annotations

from collections import Counter

import pytest
from oracle import evaluate

from rpcwatch.alerts import FILE_COLUMN
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import LogReading, expand_inputs


def oracle_matches(plan, inputs) -> Counter:
    """(rule, file, record) of every event each bound rule's expression accepts; the
    routes' ``where`` selections are shared by many rules, so each is decided once per event."""
    found: Counter = Counter()
    for batch in LogReading(inputs).batches():
        rules = plan.by_table.get(batch.table, ())
        for event in batch.data.to_pylist():
            passes: dict[int, bool] = {}
            for bound in rules:
                where, body = bound.parts()
                if where is not None:
                    key = id(where)
                    if key not in passes:
                        passes[key] = evaluate(where, event)
                    if not passes[key]:
                        continue
                if evaluate(body, event):
                    found[(bound.rule.key, batch.path, event["EventRecordID"])] += 1
    return found


def hunt_matches(plan, inputs) -> Counter:
    found: Counter = Counter()
    for bound, rows in Hunt(inputs, plan, DuckDBEngine()).matches():
        for path, record in zip(rows.column(FILE_COLUMN).to_pylist(), rows.column("EventRecordID").to_pylist()):
            found[(bound.rule.key, path, record)] += 1
    return found


@pytest.mark.corpus
@pytest.mark.slow
def test_every_sigmahq_windows_rule_agrees_with_the_oracle_on_every_corpus_evtx(corpus):
    plan = plan_hunt([str(corpus / "sigmahq-sigma/rules/windows")], bundled=False)
    files = sorted(str(path) for path in corpus.rglob("*.evtx"))
    assert len(plan.rule_set.rules) >= 2400 and len(files) == 221
    expected = oracle_matches(plan, list(expand_inputs(files)))
    found = hunt_matches(plan, list(expand_inputs(files)))
    assert found == expected
    rules = {rule for rule, _, _ in expected}
    files_hit = {path for _, path, _ in expected}
    print(f"{len(plan.rule_set.rules)} rules, {len(files)} EVTX files: {sum(expected.values())} matches "
          f"of {len(rules)} rules in {len(files_hit)} files, all agreeing")
    assert (sum(expected.values()), len(rules), len(files_hit)) == (405, 255, 209)
