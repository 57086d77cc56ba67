"""The streaming correlator against a straightforward reference (correlation_reference.py)
on random events: every type, ties, out-of-order arrival, watermarks, chains, restarts from
a saved state; and what each limit does when it is reached."""
from __future__ import annotations

import json

import pytest
from correlation_reference import Found, Observed, found_in, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcwatch.sigma.correlation import (
    CompiledCorrelation,
    CorrelationLimits,
    CorrelationStateError,
    Correlator,
    Event,
    correlation_event_id,
)

RULES = ("ra", "rb", "rc")
KINDS = ("event_count", "value_count", "value_sum", "value_avg", "value_median", "value_percentile",
         "temporal", "temporal_ordered")
OPS = ("gt", "gte", "lt", "lte", "eq", "neq")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def correlation(kind: str, rules=("ra",), group_by=("src",), timespan=10.0, op="gte", value=3.0,
                value_field=None, percentile=None, expression=None, aliases=None, key="c1", title="C1",
                emit=True) -> CompiledCorrelation:
    return CompiledCorrelation(
        key=key, id=f"id-{key}", title=title, level="high", tags=(), type=kind, rules=tuple(rules),
        rule_names={name: name for name in rules}, group_by=tuple(group_by), timespan=timespan,
        timespan_text=f"{timespan:g}s", op=op, value=value, value_field=value_field, percentile=percentile,
        expression=expression, aliases=aliases or {}, emit=emit)


@st.composite
def correlations(draw, kinds=KINDS, key="c1", title="C1", rules_from=RULES):
    kind = draw(st.sampled_from(kinds))
    timespan = draw(st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    aliases = None
    group_by = draw(st.sampled_from([(), ("src",), ("src", "dst")]))
    if kind in ("temporal", "temporal_ordered"):
        rules = draw(st.lists(st.sampled_from(rules_from), min_size=2, max_size=3, unique=True))
        if draw(st.booleans()):
            group_by, aliases = ("host",), {"host": {"ra": "src", "rb": "dst", "rc": "src"}}
    else:
        rules = draw(st.lists(st.sampled_from(rules_from), min_size=1, max_size=2, unique=True))
    op, value, value_field, percentile, expression = draw(st.sampled_from(OPS)), None, None, None, None
    if kind in ("event_count", "value_count"):
        value = float(draw(st.integers(0, 5)))
        value_field = "dst" if kind == "value_count" else None
    elif kind.startswith("value_"):
        value = draw(st.sampled_from([0.0, 1.5, 3.0, 10.0, 1e308]))
        value_field = "n"
        percentile = draw(st.sampled_from([0, 25, 50, 90, 100])) if kind == "value_percentile" else None
    elif kind == "temporal":
        choice = draw(st.sampled_from(["all", "op", "expression"]))
        op = None if choice != "op" else op
        value = float(draw(st.integers(0, 3))) if choice == "op" else None
        if choice == "expression":
            a, b = rules[0], rules[1]
            expression = draw(st.sampled_from([f"{a} and {b}", f"{a} and not {b}", f"{a} or {b}"]))
    else:
        op = None
    return correlation(kind, rules, group_by, timespan, op, value, value_field, percentile, expression, aliases,
                       key=key, title=title)


def observed(rules=RULES, max_size=40):
    record = st.fixed_dictionaries({
        "src": st.sampled_from(["a", "b", None]),
        "dst": st.sampled_from(["x", "y", "z", None, ["x", "y"], 7]),
        "n": st.sampled_from([1, 2.5, 0.1, 0.2, -0.0, 0.0, -3, "7", "z", None, True, 1e308, 1e308]),
    })
    event = st.tuples(st.integers(0, 40).map(lambda half: half / 2), st.sampled_from(rules), record)
    return st.lists(event, max_size=max_size).map(
        lambda items: [Observed(t, rule, {**r, "uid": f"C{i}"}, f"rule {rule}") for i, (t, rule, r) in enumerate(items)])


def feed(correlator: Correlator, event: Observed) -> None:
    correlator.observe(event.rule, Event(event.time, event.rule, event.record, reference=event.reference,
                                         table="zeek.conn"))


def run(correlations_: list[CompiledCorrelation], events: list[Observed], limits=None) -> list[Found]:
    correlator = Correlator(correlations_, limits)
    for event in events:
        feed(correlator, event)
    found = [found_in(alert) for alert in correlator.finish()]
    assert correlator.losses() == []
    return found


def in_time_order(correlation_: CompiledCorrelation, events: list[Observed]) -> list[Observed]:
    order = {key: number for number, key in enumerate(dict.fromkeys(correlation_.rules))}
    return sorted(events, key=lambda e: (e.time, order.get(e.rule, 0)))


@SETTINGS
@given(correlations(), observed())
def test_any_arrival_order_gives_the_sorted_result(correlation_, events):
    assert run([correlation_], events) == reference([correlation_], events)


@SETTINGS
@given(correlations(), observed())
def test_events_in_order_need_no_buffer(correlation_, events):
    events = in_time_order(correlation_, events)
    limits = CorrelationLimits(max_reorder_events=1)
    assert run([correlation_], events, limits) == reference([correlation_], events)


@SETTINGS
@given(correlations(), observed(), st.data())
def test_polling_with_watermarks_emits_each_alert_once(correlation_, events, data):
    events = in_time_order(correlation_, events)
    correlator = Correlator([correlation_], CorrelationLimits(max_reorder_events=1))
    found = []
    for index, event in enumerate(events):
        if index and data.draw(st.booleans()):
            found += [found_in(a) for a in correlator.poll(watermark=event.time)]
        feed(correlator, event)
    found += [found_in(a) for a in correlator.finish()]
    assert sorted(found, key=repr) == sorted(reference([correlation_], events), key=repr)
    assert correlator.losses() == []


@SETTINGS
@given(correlations(), observed(), st.data())
def test_a_restart_from_the_saved_state_changes_nothing(correlation_, events, data):
    uninterrupted = run([correlation_], events)
    limits = CorrelationLimits(max_reorder_events=data.draw(st.sampled_from([1, 3, 1000])))
    correlator = Correlator([correlation_], limits)
    found = []
    for event in events:
        if data.draw(st.booleans()):
            correlator = Correlator.restore([correlation_], correlator.snapshot())
        if data.draw(st.booleans()):
            found += correlator.poll()
        feed(correlator, event)
    found += list(correlator.finish())
    if limits.max_reorder_events == 1000:  # no event released before the end
        assert [found_in(a) for a in found] == uninterrupted
    else:
        assert sorted((found_in(a) for a in found), key=repr) == sorted(_without_losses(correlation_, events, limits),
                                                                          key=repr)


def _without_losses(correlation_, events, limits):
    """One uninterrupted run with the same limits (late events may be counted)."""
    correlator = Correlator([correlation_], limits)
    found = []
    for event in events:
        found += correlator.poll()
        feed(correlator, event)
    return [found_in(a) for a in found + list(correlator.finish())]


@SETTINGS
@given(correlations(), observed(), st.data())
def test_restarts_between_watermarks_keep_every_type_exact(correlation_, events, data):
    events = in_time_order(correlation_, events)
    correlator = Correlator([correlation_], CorrelationLimits(max_reorder_events=2))
    found = []
    for index, event in enumerate(events):
        if data.draw(st.booleans()):
            correlator = Correlator.restore([correlation_], correlator.snapshot())
        if index and data.draw(st.booleans()):
            found += [found_in(a) for a in correlator.poll(watermark=event.time)]
        feed(correlator, event)
    found += [found_in(a) for a in correlator.finish()]
    assert sorted(found, key=repr) == sorted(reference([correlation_], events), key=repr)


@SETTINGS
@given(correlations(kinds=("event_count", "value_count", "temporal", "value_sum"), key="inner", title="Inner"),
       st.sampled_from(["event_count", "value_count", "temporal_ordered"]), st.booleans(), observed())
def test_chained_correlations(inner, outer_kind, emit_inner, events):
    inner = correlation(**{**_fields(inner), "emit": emit_inner})
    group_by = tuple(name for name in inner.group_by if name != "dst")
    rules = ("inner", "ra") if outer_kind == "temporal_ordered" else ("inner",)
    outer = correlation(outer_kind, rules, group_by, timespan=5.0, op=None if outer_kind == "temporal_ordered" else "gte",
                        value=2.0, value_field="src" if outer_kind == "value_count" else None, key="outer",
                        title="Outer")
    assert run([outer, inner], events) == reference([inner, outer], events)


@SETTINGS
@given(correlations(kinds=("event_count", "value_count", "temporal"), key="inner", title="Inner"), observed(),
       st.data())
def test_chained_correlations_polled_with_watermarks(inner, events, data):
    outer = correlation("event_count", ("inner",), tuple(n for n in inner.group_by if n != "dst"), timespan=5.0,
                        op="gte", value=2.0, key="outer", title="Outer")
    events = in_time_order(inner, events)
    correlator = Correlator([outer, inner], CorrelationLimits(max_reorder_events=1))
    found = []
    for index, event in enumerate(events):
        if index and data.draw(st.booleans()):
            found += [found_in(a) for a in correlator.poll(watermark=event.time)]
        feed(correlator, event)
    found += [found_in(a) for a in correlator.finish()]
    assert sorted(found, key=repr) == sorted(reference([inner, outer], events), key=repr)
    assert correlator.losses() == []


def test_events_of_one_time_are_not_late_whatever_their_order_among_it():
    """A chained correlation's input (an inner alert) can come after another event of the
    same time was released; it is evaluated at that time, not counted late."""
    inner = correlation("temporal", ("rb", "ra"), ("host",), timespan=0.5, op="gt", value=0.0, key="inner",
                        title="Inner", aliases={"host": {"ra": "src", "rb": "dst"}})
    outer = correlation("event_count", ("inner",), ("host",), timespan=5.0, op="gte", value=2.0, key="outer",
                        title="Outer")
    records = [("ra", {"src": "a", "dst": "x"})] * 5 + [("rb", {"src": "a", "dst": "x"}),
                                                          ("rb", {"src": "a", "dst": "y"})]
    events = in_time_order(inner, [Observed(0.0, rule, {**record, "n": 1, "uid": f"C{i}"}, f"rule {rule}")
                                   for i, (rule, record) in enumerate(records)])
    correlator = Correlator([outer, inner], CorrelationLimits(max_reorder_events=1))
    for event in events:
        feed(correlator, event)
    found = [found_in(a) for a in correlator.finish()]
    assert sorted(found, key=repr) == sorted(reference([inner, outer], events), key=repr)
    assert correlator.losses() == []


def _fields(compiled: CompiledCorrelation) -> dict:
    names = ("kind", "rules", "group_by", "timespan", "op", "value", "value_field", "percentile", "expression",
             "aliases", "key", "title")
    values = (compiled.type, compiled.rules, compiled.group_by, compiled.timespan, compiled.op, compiled.value,
              compiled.value_field, compiled.percentile, compiled.expression, compiled.aliases, compiled.key,
              compiled.title)
    return dict(zip(names, values))


# -- hand-computed cases -----------------------------------------------------------------

def probes(times, src="a", dsts=None, rule="ra"):
    dsts = dsts or [f"10.0.0.{i}" for i in range(len(times))]
    return [Observed(t, rule, {"src": src, "dst": d, "uid": f"C{src}{i}"}, "Probe") for i, (t, d) in
            enumerate(zip(times, dsts))]


SWEEP = correlation("value_count", value_field="dst", timespan=10.0, op="gte", value=3.0)


def test_a_long_sweep_is_one_alert_with_exact_count_and_capped_list():
    events = probes([i * 0.5 for i in range(1000)])
    (found,) = run([SWEEP], events)
    assert (found.count, found.value, len(found.listed)) == (1000, 21, 100)
    assert found.listed[0] == ("Probe", "1970-01-01T00:00:00.000000Z", "Ca0")
    assert (found.first, found.last) == ("1970-01-01T00:00:00.000000Z", "1970-01-01T00:08:19.500000Z")


def test_a_quiet_gap_ends_an_episode_even_when_the_condition_still_holds():
    rule = correlation("event_count", op="gte", value=1.0, timespan=10.0)
    found = run([rule], probes([0, 5, 15, 30, 40.5]))
    assert [(f.first, f.last, f.count) for f in found] == [
        ("1970-01-01T00:00:00.000000Z", "1970-01-01T00:00:15.000000Z", 3),
        ("1970-01-01T00:00:30.000000Z", "1970-01-01T00:00:30.000000Z", 1),
        ("1970-01-01T00:00:40.500000Z", "1970-01-01T00:00:40.500000Z", 1)]


def test_temporal_ordered_follows_the_window_start():
    rule = correlation("temporal_ordered", rules=("ra", "rb"), op=None, value=None, timespan=10.0)
    events = [Observed(0, "ra", {"src": "a", "uid": "C0"}), Observed(5, "ra", {"src": "a", "uid": "C1"}),
              Observed(14, "rb", {"src": "a", "uid": "C2"}), Observed(30, "rb", {"src": "a", "uid": "C3"})]
    (found,) = run([rule], events)
    assert (found.first, found.last, found.count) == ("1970-01-01T00:00:05.000000Z",
                                                      "1970-01-01T00:00:14.000000Z", 2)


def test_event_id_is_stable_and_names_group_and_episode():
    events = probes([0, 1, 2]) + probes([0, 1, 2], src="b") + probes([100, 101, 102])
    first = [a["event"]["id"] for a in _alerts([SWEEP], events)]
    again = [a["event"]["id"] for a in _alerts([SWEEP], list(reversed(events)))]
    assert first == again and len(set(first)) == 3
    assert first[0] == correlation_event_id(SWEEP, {"src": "a"}, 0.0)


def _alerts(correlations_, events, limits=None):
    correlator = Correlator(correlations_, limits)
    for event in events:
        feed(correlator, event)
    alerts = [alert.to_dict() for alert in correlator.finish()]
    return alerts if limits is None else (alerts, correlator)


# -- limits -------------------------------------------------------------------------------

def test_late_events_are_evaluated_at_their_groups_time_and_counted():
    events = probes([10, 11, 12, 0.5], dsts=["x", "y", "z", "w"])
    alerts, correlator = _alerts([SWEEP], events, CorrelationLimits(max_reorder_events=1))
    assert [(a["correlation"]["value"], a["correlation"]["events_count"]) for a in alerts] == [(4, 4)]
    # 10 and 11 were evaluated (the buffer holds one), 12 waits: the late event comes third
    assert [e["@timestamp"][17:23] for e in alerts[0]["correlation"]["events"]] == ["10.000", "11.000", "00.500",
                                                                                         "12.000"]
    assert correlator.losses() == [
        "C1: 1 events arrived after later events had been evaluated (reorder buffer of 1 events full, or "
        "behind the watermark) and were evaluated late, at their group's latest time"]


def test_a_full_window_drops_its_oldest_events():
    events = probes([0, 1, 2, 3, 4, 5])
    alerts, correlator = _alerts([SWEEP], events, CorrelationLimits(max_window_events=4))
    assert [(a["correlation"]["value"], a["correlation"]["events_count"]) for a in alerts] == [(4, 6)]
    assert correlator.losses() == ["C1: 2 events left a window early (limit of 4 events per window)"]


def test_too_many_groups_close_the_oldest():
    # room for two groups: c closes a, d closes b, b's return closes c; b's window starts again
    events = probes([0, 1, 2], src="a") + probes([3, 4], src="b") + probes([5, 6, 7], src="c") + \
        probes([8], src="d") + probes([9], src="b", dsts=["10.0.0.7"])
    alerts, correlator = _alerts([SWEEP], events, CorrelationLimits(max_groups=2, max_reorder_events=1))
    assert [(a["correlation"]["group"]["src"], a["correlation"]["events_count"]) for a in alerts] == \
        [("a", 3), ("c", 3)]
    assert correlator.losses() == ["C1: 3 groups were closed early (limit of 2 groups)"]


def test_too_many_events_held_close_the_oldest_group():
    events = probes([0, 1, 2], src="a") + probes([3, 4, 5], src="b")
    alerts, correlator = _alerts([SWEEP], events, CorrelationLimits(max_held_events=4, max_reorder_events=1))
    assert [(a["correlation"]["group"]["src"], a["correlation"]["events_count"]) for a in alerts] == \
        [("a", 3), ("b", 3)]  # a closed at b's second event
    assert correlator.losses() == ["C1: 1 groups were closed early (limit of 4 events held in windows)"]


def test_state_stays_within_the_limits_whatever_the_input():
    """30,000 probes from 3,000 sources taking turns, within one hour: what is held never
    exceeds the limits; with room for 200 groups, each source's group is closed before its
    next probe, so no source reaches 5 hosts, and every closing is counted."""
    limits = CorrelationLimits(max_reorder_events=500, max_groups=200, max_window_events=300, max_held_events=2000)
    rule = correlation("value_count", value_field="dst", timespan=3600.0, op="gte", value=5.0)
    correlator = Correlator([rule], limits)
    alerts = 0
    for i in range(30_000):
        feed(correlator, Observed(i * 0.1, "ra", {"src": f"s{i % 3000}", "dst": f"h{i}", "uid": f"C{i}"}))
        if i % 1000 == 999:
            state = json.loads(correlator.snapshot())["correlations"]["c1"]
            held = sum(len(group[3]) for group in state["groups"])
            assert len(state["buffer"]) <= 500 and len(state["groups"]) <= 200 and held <= 2000
            alerts += len(correlator.poll())
    assert alerts + len(list(correlator.finish())) == 0
    assert correlator.losses() == ["C1: 29,800 groups were closed early (limit of 200 groups)"]
    unlimited = Correlator([rule])
    for i in range(30_000):
        feed(unlimited, Observed(i * 0.1, "ra", {"src": f"s{i % 3000}", "dst": f"h{i}", "uid": f"C{i}"}))
    assert [a.correlation["events_count"] for a in unlimited.finish()] == [10] * 3000


# -- the saved state ----------------------------------------------------------------------

def test_a_saved_state_of_another_version_is_refused():
    state = json.loads(Correlator([SWEEP]).snapshot())
    state["version"] = 99
    with pytest.raises(CorrelationStateError, match="version 99 is not supported"):
        Correlator.restore([SWEEP], json.dumps(state).encode())
    with pytest.raises(CorrelationStateError, match="not JSON"):
        Correlator.restore([SWEEP], b"\x80\x04pickle")
    with pytest.raises(CorrelationStateError, match="not an rpcwatch correlation state"):
        Correlator.restore([SWEEP], b"[1, 2]")


def test_a_damaged_group_or_closed_episode_is_refused_on_restore():
    """A group without its last event time, or a closed episode without its episode,
    makes the state damaged when it is restored, not a crash later when the groups
    expire or the alerts are written."""
    correlator = Correlator([SWEEP], CorrelationLimits(max_reorder_events=1))
    for event in probes([0, 1, 2]):
        feed(correlator, event)
    saved = json.loads(correlator.snapshot())
    assert [group[2] for group in saved["correlations"]["c1"]["groups"]] == [1]
    no_last = json.loads(json.dumps(saved))
    no_last["correlations"]["c1"]["groups"][0][2] = None
    no_episode = json.loads(json.dumps(saved))
    no_episode["correlations"]["c1"]["closed"] = [[0, ["a"], None]]
    for damaged in (no_last, no_episode):
        with pytest.raises(CorrelationStateError, match="correlation state is damaged: TypeError"):
            Correlator.restore([SWEEP], json.dumps(damaged).encode())
    assert [a.correlation["events_count"] for a in Correlator.restore([SWEEP], json.dumps(saved).encode()).finish()] \
        == [3]


def test_a_changed_rule_starts_afresh_and_says_so():
    correlator = Correlator([SWEEP])
    for event in probes([0, 1]):
        feed(correlator, event)
    changed = correlation("value_count", value_field="dst", timespan=10.0, op="gte", value=2.0)
    restored = Correlator.restore([changed], correlator.snapshot())
    assert list(restored.finish()) == []
    assert restored.losses() == ["C1: the saved state was not restored: the rule changed"]


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_groups must be a positive integer"):
        CorrelationLimits(max_groups=0)
