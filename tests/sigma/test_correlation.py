"""Correlation rules end to end, with hand-computed windows (edges, order, episodes)."""
from __future__ import annotations

import io
import json
import textwrap

import pytest
from documents import documents

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.outputs.summary import print_summary
from rpcwatch.sources import expand_inputs

BASE = """
title: Probe {name}
id: {uid}
name: {name}
logsource: {{product: zeek, service: conn}}
detection:
    sel: {{conn_state: {state}}}
    condition: sel
level: low
"""
UIDS = {"rej": "11111111-1111-4111-8111-111111111111", "sf": "22222222-2222-4222-8222-222222222222"}


def rules_dir(tmp_path, correlation: str):
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    for name, state in (("rej", "REJ"), ("sf", "SF")):
        (folder / f"{name}.yml").write_text(BASE.format(name=name, uid=UIDS[name], state=state))
    (folder / "correlation.yml").write_text(textwrap.dedent(correlation))
    return folder


def run(tmp_path, correlation: str, events: list[dict]):
    log = tmp_path / "conn.log"
    log.write_text("\n".join(json.dumps({"uid": f"C{i}", "proto": "tcp", "id.resp_p": 135, **e})
                             for i, e in enumerate(events)) + "\n")
    plan = plan_hunt([str(rules_dir(tmp_path, correlation))], bundled=False)
    assert not plan.problems, plan.problems
    alerts = documents(Hunt(list(expand_inputs([str(log)])), plan, DuckDBEngine()))
    return [a for a in alerts if a["event"]["dataset"] == "correlation"]


def ev(ts, src="1.1.1.1", dst="10.0.0.1", state="REJ", size=0):
    return {"ts": ts, "id.orig_h": src, "id.resp_h": dst, "conn_state": state, "orig_bytes": size}


COUNT3 = """
title: Three probes
correlation:
    type: event_count
    rules: [rej]
    group-by: [id.orig_h]
    timespan: 60s
    condition: {gte: 3}
"""


def test_an_event_exactly_timespan_later_is_in_the_window(tmp_path):
    alerts = run(tmp_path, COUNT3, [ev(1000.0), ev(1030.0), ev(1060.0)])
    assert len(alerts) == 1
    assert alerts[0]["correlation"]["value"] == 3
    assert alerts[0]["correlation"]["first_seen"] == "1970-01-01T00:16:40.000000Z"
    assert alerts[0]["correlation"]["last_seen"] == "1970-01-01T00:17:40.000000Z"


def test_just_outside_the_window_does_not_count(tmp_path):
    assert run(tmp_path, COUNT3, [ev(1000.0), ev(1030.0), ev(1060.001)]) == []


def test_out_of_order_input_is_ordered_by_time(tmp_path):
    alerts = run(tmp_path, COUNT3, [ev(1060.0), ev(1000.0), ev(1030.0)])
    assert [a["correlation"]["value"] for a in alerts] == [3]


def test_groups_are_separate_and_episodes_split_on_quiet_gaps(tmp_path):
    events = [ev(t) for t in (0, 10, 20, 30)] + [ev(t, src="2.2.2.2") for t in (0, 10)] + \
             [ev(t) for t in (500, 510, 520)]
    alerts = run(tmp_path, COUNT3, events)
    assert [(a["correlation"]["group"]["id.orig_h"], a["correlation"]["value"],
             a["correlation"]["events_count"]) for a in alerts] == [("1.1.1.1", 4, 4), ("1.1.1.1", 3, 3)]
    assert alerts[0]["source"]["ip"] == "1.1.1.1"


def test_sliding_not_fixed_buckets(tmp_path):
    """Events at 50, 70, 90 fall in different 60-second buckets but one sliding window."""
    assert len(run(tmp_path, COUNT3, [ev(50.0), ev(70.0), ev(90.0)])) == 1


def test_value_count(tmp_path):
    rule = """
    title: Sweep
    correlation:
        type: value_count
        rules: [rej]
        group-by: [id.orig_h]
        timespan: 5m
        condition: {gte: 3, field: id.resp_h}
    """
    same_host = [ev(t, dst="10.0.0.1") for t in range(0, 50, 10)]
    assert run(tmp_path, rule, same_host) == []
    hosts = [ev(t, dst=f"10.0.0.{t}") for t in (0, 100, 300)]
    assert [a["correlation"]["value"] for a in run(tmp_path, rule, hosts)] == [3]
    spread = [ev(t, dst=f"10.0.0.{t}") for t in (0, 100, 301)]
    assert run(tmp_path, rule, spread) == []


@pytest.mark.parametrize("kind,condition,values,expected", [
    ("value_sum", {"gte": 100, "field": "orig_bytes"}, [40, 60], 100),
    ("value_avg", {"gt": 49, "field": "orig_bytes"}, [40, 60], 50),
    ("value_median", {"gte": 60, "field": "orig_bytes"}, [10, 60, 90], 60),
    ("value_percentile", {"gte": 80, "field": "orig_bytes", "percentile": 90}, [0, 50, 100], 90),
])
def test_value_aggregates(tmp_path, kind, condition, values, expected):
    rule = f"""
    title: Aggregate
    correlation:
        type: {kind}
        rules: [rej]
        group-by: [id.orig_h]
        timespan: 1h
        condition: {json.dumps(condition)}
    """
    alerts = run(tmp_path, rule, [ev(i, size=v) for i, v in enumerate(values)])
    assert [a["correlation"]["value"] for a in alerts] == [expected]


TEMPORAL = """
title: Probe then session
correlation:
    type: {kind}
    rules: [rej, sf]
    group-by: [id.orig_h]
    timespan: 10s
"""


@pytest.mark.parametrize("kind,order,expected", [
    ("temporal", ("REJ", "SF"), 1), ("temporal", ("SF", "REJ"), 1),
    ("temporal_ordered", ("REJ", "SF"), 1), ("temporal_ordered", ("SF", "REJ"), 0),
])
def test_temporal_and_ordered(tmp_path, kind, order, expected):
    events = [ev(100.0, state=order[0]), ev(105.0, state=order[1])]
    assert len(run(tmp_path, TEMPORAL.format(kind=kind), events)) == expected


def test_temporal_needs_both_within_the_window(tmp_path):
    events = [ev(100.0, state="REJ"), ev(110.5, state="SF")]
    assert run(tmp_path, TEMPORAL.format(kind="temporal"), events) == []


def test_aliases_group_differently_named_fields(tmp_path):
    rule = """
    title: Same host either way
    correlation:
        type: temporal
        rules: [rej, sf]
        group-by: [host]
        timespan: 1m
        aliases:
            host:
                rej: id.resp_h
                sf: id.orig_h
    """
    events = [ev(0.0, src="8.8.8.8", dst="10.0.0.7", state="REJ"), ev(20.0, src="10.0.0.7", state="SF")]
    alerts = run(tmp_path, rule, events)
    assert [a["correlation"]["group"] for a in alerts] == [{"host": "10.0.0.7"}]


def test_chained_correlations(tmp_path):
    rule = """
    title: Inner
    name: inner
    correlation:
        type: event_count
        rules: [rej]
        group-by: [id.orig_h]
        timespan: 10s
        condition: {gte: 2}
    ---
    title: Outer
    correlation:
        type: event_count
        rules: [inner]
        group-by: [id.orig_h]
        timespan: 1h
        condition: {gte: 2}
    """
    events = [ev(t) for t in (0, 5, 100, 105)]
    alerts = run(tmp_path, rule, events)
    assert [a["rule"]["name"] for a in alerts] == ["Outer"]
    assert alerts[0]["correlation"]["value"] == 2


def test_generate_false_hides_the_referenced_rules(tmp_path):
    log = tmp_path / "conn.log"
    log.write_text(json.dumps({"uid": "C1", "proto": "tcp", **ev(0.0)}) + "\n")
    plan = plan_hunt([str(rules_dir(tmp_path, COUNT3))], bundled=False)
    assert {r.title: r.emit for r in plan.rule_set.rules} == {"Probe rej": False, "Probe sf": True}
    alerts = list(Hunt(list(expand_inputs([str(log)])), plan, DuckDBEngine()))
    assert alerts == []


def test_limits_reached_in_a_hunt_are_reported(tmp_path, monkeypatch):
    """With room for one event in the reorder buffer, an event logged before events already
    evaluated is evaluated late, and the run report says so."""
    from rpcwatch.context import Limits, RunContext

    log = tmp_path / "conn.log"
    log.write_text("\n".join(json.dumps({"uid": f"C{i}", "proto": "tcp", "id.resp_p": 135, **ev(t)})
                             for i, t in enumerate([1010.0, 1020.0, 1030.0, 1000.0])) + "\n")
    plan = plan_hunt([str(rules_dir(tmp_path, COUNT3))], bundled=False)
    with RunContext(limits=Limits(correlation_reorder_events=1)):  # as [limits] in rpcwatch.toml sets it
        hunt = Hunt(list(expand_inputs([str(log)])), plan, DuckDBEngine())
        alerts = [a.to_dict() for a in hunt if a.dataset == "correlation"]
    assert [(a["correlation"]["value"], a["correlation"]["events_count"]) for a in alerts] == [(4, 4)]
    assert hunt.report.correlation_losses == [
        "Three probes: 1 events arrived after later events had been evaluated (reorder buffer of 1 events "
        "full, or behind the watermark) and were evaluated late, at their group's latest time"]
    summary = io.StringIO()
    print_summary(hunt.report, plan, summary)
    assert "correlation limit reached: Three probes: 1 events arrived after later events" in summary.getvalue()
