"""Sigma correlation rules: compiled from pySigma, evaluated over the matches of the rules
they reference.

Correlations see only matched events (few), so they are evaluated here in plain Python,
group by group, with ``timespan`` as a real sliding window:

* A window is any stretch of time ``timespan`` long. Two events exactly ``timespan``
  apart fall in one window; further apart, they do not.
* Events are taken in time order; each event closes the window that ends at its time.
  When the window satisfies the condition the group is *hit*. Consecutive hits of a
  group form one episode and raise one alert (first and last event time, the strongest
  value seen, the events involved), so a sweep that keeps going is one alert, and a
  second sweep after a quiet gap is another.
* Events without a value for every ``group-by`` field are not counted (they belong to no
  group). ``aliases`` name, per referenced rule, the field that stands for a group key.
* A correlation may reference other correlations (chaining): their alerts are events at
  their last time, carrying their group values.
"""
from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Iterable, Iterator, Mapping

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationRule,
    SigmaExtendedCorrelationCondition,
)

from rpcwatch.alerts import event_id, iso_timestamp

_OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b}
#: events listed in a correlation alert (the count is always complete)
MAX_LISTED_EVENTS = 100


@dataclass(frozen=True)
class CompiledCorrelation:
    key: str
    id: str
    title: str
    level: str
    tags: tuple[str, ...]
    type: str
    #: keys of the referenced rules (detection rules or correlations), in the order given
    rules: tuple[str, ...]
    #: names the referenced rules go by in an extended condition and in aliases
    rule_names: Mapping[str, str]
    group_by: tuple[str, ...]
    timespan: float
    timespan_text: str
    op: str | None
    value: float | None
    value_field: str | None = None
    percentile: int | None = None
    expression: str | None = None
    #: alias -> {rule key -> field name}
    aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    emit: bool = True
    path: str = ""
    description: str = ""
    guide: str = ""


def compile_correlation(rule: SigmaCorrelationRule, key_of, path: str = "") -> CompiledCorrelation:
    """``key_of`` maps a referenced pySigma rule object to its compiled key."""
    references = rule.referenced_rules if getattr(rule, "referenced_rules", None) else (rule.rules or [])
    keys = tuple(key_of(ref.rule) for ref in references)
    names = {}
    for ref, key in zip(references, keys):
        for name in (ref.reference, getattr(ref.rule, "name", None), str(getattr(ref.rule, "id", "") or "")):
            if name:
                names[str(name)] = key
    condition = rule.condition
    op = value = field_name = percentile = expression = None
    if isinstance(condition, SigmaExtendedCorrelationCondition):
        expression = condition.expression
    elif isinstance(condition, SigmaCorrelationCondition):
        op = condition.op.name.lower()
        value = condition.count
        field_name = condition.fieldref if isinstance(condition.fieldref, str) or condition.fieldref is None \
            else condition.fieldref[0]
        percentile = condition.percentile
    aliases = {alias.alias: {names.get(ref.reference, ref.reference): name for ref, name in alias.mapping.items()}
               for alias in rule.aliases}
    custom = rule.custom_attributes.get("rpcwatch") or {}
    return CompiledCorrelation(
        key=key_of(rule), id=str(rule.id or ""), title=rule.title,
        level=rule.level.name.lower() if rule.level else "",
        tags=tuple(f"{t.namespace}.{t.name}" for t in rule.tags),
        type=rule.type.name.lower(), rules=keys, rule_names=names,
        group_by=tuple(rule.group_by or ()), timespan=float(rule.timespan.seconds),
        timespan_text=rule.timespan.spec, op=op, value=value, value_field=field_name, percentile=percentile,
        expression=expression, aliases=aliases, emit=bool(getattr(rule, "_output", True)), path=path,
        description=(rule.description or "").strip(),
        guide=str(custom.get("investigation", "")).strip() if isinstance(custom, dict) else "")


@dataclass
class Event:
    time: float
    rule: str
    record: Mapping[str, Any]
    #: rule field -> record field, for events of a rule bound with renamed fields
    renames: Mapping[str, str] = field(default_factory=dict)
    reference: str = ""
    #: the table the record came from (its ECS mapping names the group's fields in alerts)
    table: str = ""


def lookup(record: Mapping[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    lowered = name.lower()
    for key, value in record.items():
        if key.lower() == lowered:
            return value
    return None


class Correlator:
    """Collects the matches of referenced rules during a hunt and evaluates the
    correlations at the end, in reference order."""

    def __init__(self, correlations: Iterable[CompiledCorrelation]):
        self.correlations = list(correlations)
        self._events: dict[str, list[Event]] = defaultdict(list)
        self.referenced = {key for c in self.correlations for key in c.rules}

    def wants(self, rule_key: str) -> bool:
        return rule_key in self.referenced

    def observe(self, rule_key: str, event: Event) -> None:
        self._events[rule_key].append(event)

    def finish(self) -> Iterator[tuple[dict, CompiledCorrelation]]:
        pending = list(self.correlations)
        done: set[str] = set()
        while pending:
            ready = [c for c in pending if all(key in done or key not in {p.key for p in pending}
                                               for key in c.rules)]
            if not ready:  # a reference cycle: evaluate what is left as it is
                ready = pending[:1]
            for correlation in ready:
                pending.remove(correlation)
                done.add(correlation.key)
                for alert, event in evaluate(correlation, self._events):
                    self._events[correlation.key].append(event)
                    if correlation.emit:
                        yield alert, correlation


def evaluate(correlation: CompiledCorrelation, events_by_rule: Mapping[str, list[Event]]
             ) -> Iterator[tuple[dict, Event]]:
    """Correlation alerts, each with the event it becomes for chained correlations."""
    groups: dict[tuple, list[Event]] = defaultdict(list)
    for key in correlation.rules:
        for event in events_by_rule.get(key, ()):
            group = _group_values(correlation, key, event)
            if group is not None:
                groups[group].append(event)
    for group, events in sorted(groups.items(), key=lambda item: str(item[0])):
        events.sort(key=lambda e: e.time)
        for episode in _episodes(correlation, events):
            yield _alert(correlation, group, episode)


def _group_values(correlation: CompiledCorrelation, rule_key: str, event: Event) -> tuple | None:
    values = []
    for name in correlation.group_by:
        alias = correlation.aliases.get(name)
        column = alias.get(rule_key, name) if alias else name
        value = lookup(event.record, event.renames.get(column, column))
        if value is None:
            return None
        values.append(value)
    return tuple(values)


@dataclass
class _Episode:
    events: list[Event]
    value: Any
    first: float
    last: float


def _episodes(correlation: CompiledCorrelation, events: list[Event]) -> Iterator[_Episode]:
    times = [e.time for e in events]
    current: _Episode | None = None
    for end in range(len(events)):
        start = bisect.bisect_left(times, times[end] - correlation.timespan)
        window = events[start:end + 1]
        hit, value = _holds(correlation, window)
        if hit:
            if current is None:
                current = _Episode(list(window), value, window[0].time, events[end].time)
            else:
                seen = {id(e) for e in current.events}
                current.events.extend(e for e in window if id(e) not in seen)
                current.last = events[end].time
                current.value = _stronger(correlation.op, current.value, value)
        elif current is not None:
            yield current
            current = None
    if current is not None:
        yield current


def _stronger(op: str | None, old: Any, new: Any) -> Any:
    if op in ("gt", "gte") and isinstance(new, (int, float)):
        return max(old, new)
    if op in ("lt", "lte") and isinstance(new, (int, float)):
        return min(old, new)
    return old


def _holds(correlation: CompiledCorrelation, window: list[Event]) -> tuple[bool, Any]:
    kind = correlation.type
    if kind == "event_count":
        value: Any = len(window)
    elif kind == "value_count":
        value = len({_hashable(_field_value(correlation, e)) for e in window} - {None})
    elif kind in ("value_sum", "value_avg", "value_percentile", "value_median"):
        numbers = [n for n in (_number(_field_value(correlation, e)) for e in window) if n is not None]
        if not numbers:
            return False, None
        value = _aggregate(kind, numbers, correlation.percentile)
    elif kind == "temporal":
        present = {e.rule for e in window}
        if correlation.expression:
            return _expression_holds(correlation, present), len(present)
        value = len(present & set(correlation.rules))
        if correlation.op is None:
            return value >= len(correlation.rules), value
    elif kind == "temporal_ordered":
        value = _ordered_prefix(correlation.rules, window)
        if correlation.expression or correlation.op is None:
            return value >= len(correlation.rules), value
    else:
        raise ValueError(f"unknown correlation type {kind}")
    return _OPS[correlation.op](value, correlation.value), value


def _field_value(correlation: CompiledCorrelation, event: Event) -> Any:
    if correlation.value_field is None:
        return None
    alias = correlation.aliases.get(correlation.value_field)
    column = alias.get(event.rule, correlation.value_field) if alias else correlation.value_field
    return lookup(event.record, event.renames.get(column, column))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _aggregate(kind: str, numbers: list[float], percentile: int | None) -> float:
    if kind == "value_sum":
        return sum(numbers)
    if kind == "value_avg":
        return sum(numbers) / len(numbers)
    if kind == "value_median":
        return median(numbers)
    # value_percentile: linear interpolation between closest ranks (as quantile_cont)
    ordered = sorted(numbers)
    rank = (len(ordered) - 1) * (percentile if percentile is not None else 50) / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ordered_prefix(rule_keys: tuple[str, ...], window: list[Event]) -> int:
    """How many of the rules occur in the given order within the window (greedy, earliest)."""
    position = 0
    for event in window:
        if position < len(rule_keys) and event.rule == rule_keys[position]:
            position += 1
    return position


def _expression_holds(correlation: CompiledCorrelation, present: set[str]) -> bool:
    names = {name for name, key in correlation.rule_names.items() if key in present}
    condition = SigmaExtendedCorrelationCondition(correlation.expression)
    return _eval_extended(condition._parsed, names)


def _eval_extended(node, names: set[str]) -> bool:
    from sigma.correlations import CorrelationConditionAND, CorrelationConditionNOT, CorrelationConditionOR

    if isinstance(node, CorrelationConditionAND):
        return all(_eval_extended(arg, names) for arg in node.args)
    if isinstance(node, CorrelationConditionOR):
        return any(_eval_extended(arg, names) for arg in node.args)
    if isinstance(node, CorrelationConditionNOT):
        return not _eval_extended(node.args[0], names)
    return getattr(node, "reference", str(node)) in names


def _alert(correlation: CompiledCorrelation, group: tuple, episode: _Episode) -> tuple[dict, Event]:
    group_values = dict(zip(correlation.group_by, group))
    listed = [{"rule": e.reference or e.rule, "@timestamp": iso_timestamp(e.time),
               "record": lookup(e.record, "uid") or lookup(e.record, "EventRecordID")}
              for e in episode.events[:MAX_LISTED_EVENTS]]
    alert: dict[str, Any] = {
        "@timestamp": iso_timestamp(episode.last),
        "rule": {"id": correlation.id, "name": correlation.title, "level": correlation.level,
                 "tags": list(correlation.tags)},
    }
    alert.update(_ecs_of_group(group_values, episode.events[0]))
    alert.update({
        # one episode of one group is one alert, however far the episode extends
        "event": {"kind": "alert", "dataset": "correlation",
                  "id": event_id(correlation.id or correlation.title, "correlation",
                                 {"group": group_values, "first_seen": iso_timestamp(episode.first)})},
        "correlation": {
            "type": correlation.type, "group": group_values, "value": episode.value,
            "condition": _describe_condition(correlation), "timespan": correlation.timespan_text,
            "first_seen": iso_timestamp(episode.first), "last_seen": iso_timestamp(episode.last),
            "events_count": len(episode.events), "events": listed,
        },
    })
    return alert, Event(episode.last, correlation.key, group_values, reference=correlation.title,
                        table=episode.events[0].table)


def _ecs_of_group(group_values: Mapping[str, Any], event: Event) -> dict:
    """Alert fields for the group keys the events' table maps to ECS (``id.orig_h`` is
    ``source.ip`` for Zeek), so correlation alerts sort and display like the others."""
    from rpcwatch.sigma.logsources import table_info

    ecs: dict[str, Any] = {}
    mapping = table_info(event.table).ecs if event.table else {}
    for target, columns in mapping.items():
        for column in [columns] if isinstance(columns, str) else columns:
            if column in group_values:
                parent, _, leaf = target.rpartition(".")
                ecs.setdefault(parent, {})[leaf] = group_values[column]
                break
    return ecs


def _describe_condition(correlation: CompiledCorrelation) -> str:
    if correlation.expression:
        return correlation.expression
    if correlation.op is None:
        return "all rules"
    target = f" of {correlation.value_field}" if correlation.value_field else ""
    return f"{correlation.op} {correlation.value:g}{target}"
