"""A straightforward restatement of correlation semantics, for the tests only: all events
sorted at once, every window rebuilt from the sorted list, every aggregate recomputed from
the window (quadratic, and obviously so)."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from fractions import Fraction
from typing import Any, NamedTuple

from sigma.correlations import SigmaExtendedCorrelationCondition

from rpcwatch.alerts import iso_timestamp
from rpcwatch.sigma.correlation import MAX_LISTED_EVENTS, CompiledCorrelation

OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
       "lte": lambda a, b: a <= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b}


class Observed(NamedTuple):
    time: float
    rule: str
    record: dict
    reference: str = ""


class Found(NamedTuple):
    """A correlation alert, reduced to what the semantics decide."""
    title: str
    group: tuple
    first: str
    last: str
    value: Any
    count: int
    listed: tuple


def found_in(alert) -> Found:
    alert = alert.to_dict()
    c = alert["correlation"]
    return Found(alert["rule"]["name"], tuple(sorted(c["group"].items(), key=lambda kv: kv[0])), c["first_seen"],
                 c["last_seen"], c["value"], c["events_count"],
                 tuple((e["rule"], e["@timestamp"], e["record"]) for e in c["events"]))


def reference(correlations: list[CompiledCorrelation], observed: Iterable[Observed]) -> list[Found]:
    """Every correlation's alerts (those of referenced correlations first), group by group."""
    events: dict[str, list[Observed]] = defaultdict(list)
    for item in observed:
        events[item.rule].append(item)
    found: list[Found] = []
    pending = list(correlations)
    while pending:
        keys = {c.key for c in pending}
        correlation = next(c for c in pending if not any(k in keys and k != c.key for k in c.rules))
        pending.remove(correlation)
        for alert in _evaluate(correlation, events):
            events[correlation.key].append(Observed(alert.last_time, correlation.key, dict(alert.found.group),
                                                   correlation.title))
            if correlation.emit:
                found.append(alert.found)
    return found


class _Alert(NamedTuple):
    found: Found
    last_time: float


def _evaluate(correlation: CompiledCorrelation, events: dict[str, list[Observed]]) -> list[_Alert]:
    rules = list(dict.fromkeys(correlation.rules))
    items = []
    for number, key in enumerate(rules):
        for arrival, event in enumerate(events.get(key, ())):
            group = _group(correlation, event)
            if group is not None:
                items.append((event.time, number, arrival, group, event))
    items.sort(key=lambda item: item[:3])
    groups: dict[tuple, list] = defaultdict(list)
    for item in items:
        groups[item[3]].append(item)
    alerts = []
    for group, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        alerts += _episodes(correlation, rules, group, members)
    return alerts


def _episodes(correlation, rules, group, members) -> list[_Alert]:
    alerts, current, previous = [], None, None
    for end, item in enumerate(members):
        window = [m for m in members[:end + 1] if m[0] >= item[0] - correlation.timespan]
        hit, value = _holds(correlation, rules, window)
        if current is not None and (not hit or previous[0] < item[0] - correlation.timespan):
            alerts.append(_close(correlation, group, current))
            current = None
        if hit:
            if current is None:
                current = {"events": list(window), "value": value, "first": window[0][0]}
            else:
                seen = {id(m) for m in current["events"]}
                current["events"] += [m for m in window if id(m) not in seen]
                current["value"] = _stronger(correlation.op, current["value"], value)
            current["last"] = item[0]
        previous = item
    if current is not None:
        alerts.append(_close(correlation, group, current))
    return alerts


def _close(correlation, group, episode) -> _Alert:
    listed = tuple((m[4].reference, iso_timestamp(m[0]), m[4].record.get("uid"))
                   for m in episode["events"][:MAX_LISTED_EVENTS])
    values = tuple(sorted(zip(correlation.group_by, (_listed(v) for v in group)), key=lambda kv: kv[0]))
    return _Alert(Found(correlation.title, values, iso_timestamp(episode["first"]), iso_timestamp(episode["last"]),
                        episode["value"], len(episode["events"]), listed), episode["last"])


def _listed(value):
    return [_listed(v) for v in value] if isinstance(value, (tuple, list)) else value


def _stronger(op, old, new):
    if op in ("gt", "gte") and isinstance(new, (int, float)):
        return max(old, new)
    if op in ("lt", "lte") and isinstance(new, (int, float)):
        return min(old, new)
    return old


def _field(correlation, event: Observed, name: str):
    column = correlation.aliases.get(name, {}).get(event.rule, name)
    return event.record.get(column)


def _group(correlation, event):
    values = tuple(_field(correlation, event, name) for name in correlation.group_by)
    if any(v is None for v in values):
        return None
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


def _numbers(correlation, window):
    numbers = []
    for m in window:
        value = _field(correlation, m[4], correlation.value_field)
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            numbers.append(0.0 if number == 0 else number)
    return numbers


def _exact(total: Fraction) -> float:
    try:
        return float(total)
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def _holds(correlation, rules, window):
    kind = correlation.type
    if kind == "event_count":
        value = len(window)
    elif kind == "value_count":
        values = [_field(correlation, m[4], correlation.value_field) for m in window]
        value = len({tuple(v) if isinstance(v, list) else v for v in values} - {None})
    elif kind in ("value_sum", "value_avg", "value_median", "value_percentile"):
        numbers = _numbers(correlation, window)
        if not numbers:
            return False, None
        if kind == "value_sum":
            value = _exact(sum(map(Fraction, numbers)))
        elif kind == "value_avg":
            value = _exact(sum(map(Fraction, numbers)) / len(numbers))
        elif kind == "value_median":
            value = statistics.median(numbers)
        else:
            ordered = sorted(numbers)
            rank = (len(ordered) - 1) * correlation.percentile / 100
            low, high = math.floor(rank), math.ceil(rank)
            value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    elif kind == "temporal":
        present = {m[4].rule for m in window}
        if correlation.expression:
            names = {name for name, key in correlation.rule_names.items() if key in present}
            return _expression(SigmaExtendedCorrelationCondition(correlation.expression)._parsed, names), len(present)
        value = len(present)
        if correlation.op is None:
            return value >= len(rules), value
    else:  # temporal_ordered: greedy, earliest
        value = 0
        for m in window:
            if value < len(correlation.rules) and m[4].rule == correlation.rules[value]:
                value += 1
        if correlation.op is None:
            return value >= len(correlation.rules), value
    return OPS[correlation.op](value, correlation.value), value


def _expression(node, names) -> bool:
    kind = type(node).__name__
    if kind == "CorrelationConditionAND":
        return all(_expression(arg, names) for arg in node.args)
    if kind == "CorrelationConditionOR":
        return any(_expression(arg, names) for arg in node.args)
    if kind == "CorrelationConditionNOT":
        return not _expression(node.args[0], names)
    return node.reference in names
