"""Sigma correlation rules: compiled from pySigma, evaluated over the matches of the rules
they reference, as a stream with bounded memory.

Semantics (``docs/sigma-support.md``):

* A window is any stretch of time ``timespan`` long. Two events exactly ``timespan``
  apart fall in one window; further apart, they do not.
* Events are taken in time order (ties: in the order of the correlation's ``rules``, then
  of arrival); each event closes the window that ends at it. When the window satisfies
  the condition the group is *hit*. Consecutive hits of a group form one episode and
  raise one alert (first and last event time, the strongest value seen, the number of
  events involved and the first ``MAX_LISTED_EVENTS`` of them); a miss, or a quiet gap
  longer than ``timespan`` between two events of the group, ends the episode.
* Events without a value for every ``group-by`` field are not counted (they belong to no
  group). ``aliases`` name, per referenced rule, the field that stands for a group key.
* A correlation may reference other correlations (chaining): their alerts are events at
  their last time, carrying their group values.

Algorithm. An observed event is reduced at once to what evaluation needs (time, rule,
group, the value field, its record id and table), never kept whole. Each correlation puts
it in a *reorder buffer* (a heap by time), from which events are released in time order
into their group: when the buffer is full (the oldest first), when the caller's watermark
says no earlier event can come (:meth:`Correlator.poll`), or at the end. A group keeps its
window as a deque and an aggregate of it (``aggregates.py``), updated as events enter at
the back and leave at the front, so each event costs O(log n) amortised, and a run O(n log
n). A group whose last event is older than the released time minus ``timespan`` can get no
event into a window with its own: its episode is closed and the group forgotten.

Bounds (:class:`CorrelationLimits`) hold whatever the input: the buffer, the groups, the
events of a window and of all windows of a correlation. At each limit the oldest goes
first and the loss is counted (:meth:`Correlator.losses`): an event older than events
already evaluated (buffer full, or behind the watermark) is evaluated *late*, at its
group's latest time; a full window drops its oldest events; too many groups or events
close the group whose last event is oldest. Within the limits the result is exactly that
of sorting all events by time, whatever order they arrive in.

Streaming. :meth:`Correlator.poll` returns the alerts of episodes that no further event
can extend, :meth:`Correlator.finish` closes everything. :meth:`Correlator.snapshot`
writes the whole state as versioned JSON (no code can hide in it) and
:meth:`Correlator.restore` continues from it.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from heapq import heappop, heappush
from itertools import islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pySigma is imported only to compile and to read extended conditions
    from sigma.correlations import SigmaCorrelationRule

from rpcwatch.alerts import Alert, RuleRef, iso_timestamp
from rpcwatch.schema import table_info
from rpcwatch.sigma.aggregates import (
    Aggregate,
    DistinctValues,
    EventCount,
    ExactSum,
    OrderedPrefix,
    Percentile,
    RulesPresent,
)

_OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b}
#: events listed in a correlation alert (the count is always complete)
MAX_LISTED_EVENTS = 100


@dataclass(frozen=True)
class CorrelationLimits:
    """What one correlation may hold, whatever the input. At each limit the oldest goes
    first and the loss is counted."""

    #: events waiting to be put in time order; beyond, the oldest is evaluated, and an
    #: event older than it arriving later is evaluated late
    max_reorder_events: int = 200_000
    #: groups with events in their window or an open episode; beyond, the group whose
    #: last event is oldest is closed
    max_groups: int = 100_000
    #: events in one group's window; beyond, the oldest leave the window early
    max_window_events: int = 100_000
    #: events in all windows together; beyond, the group whose last event is oldest is closed
    max_held_events: int = 500_000

    def __post_init__(self) -> None:
        for item in fields(self):
            if not isinstance(getattr(self, item.name), int) or getattr(self, item.name) < 1:
                raise ValueError(f"correlation limit {item.name} must be a positive integer")



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
    from sigma.correlations import SigmaCorrelationCondition, SigmaExtendedCorrelationCondition

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


class CorrelationStateError(ValueError):
    """A saved correlation state that cannot be read."""


STATE_FORMAT = "rpcwatch-correlation-state"
STATE_VERSION = 1

#: what the losses counted per correlation mean, by the limit behind them
_LOSSES = {
    "late": ("{n:,} events arrived after later events had been evaluated (reorder buffer of "
             "{limits.max_reorder_events:,} events full, or behind the watermark) and were evaluated "
             "late, at their group's latest time"),
    "window": "{n:,} events left a window early (limit of {limits.max_window_events:,} events per window)",
    "groups": "{n:,} groups were closed early (limit of {limits.max_groups:,} groups)",
    "held": "{n:,} groups were closed early (limit of {limits.max_held_events:,} events held in windows)",
    "changed": "the saved state was not restored: the rule changed",
}


class Correlator:
    """Evaluates correlations over the matches of the rules they reference, as they are
    observed; alerts come from :meth:`poll` (episodes closed so far) and :meth:`finish`."""

    def __init__(self, correlations: Iterable[CompiledCorrelation], limits: CorrelationLimits | None = None):
        self.correlations = list(correlations)
        self.limits = limits or CorrelationLimits()
        self._evaluations = {c.key: _Evaluation(c, self.limits) for c in _evaluation_order(self.correlations)}
        self._consumers: dict[str, list[_Evaluation]] = {}
        for evaluation in self._evaluations.values():
            for key in evaluation.rules:
                self._consumers.setdefault(key, []).append(evaluation)
                if key in self._evaluations:
                    self._evaluations[key].consumers.append(evaluation)
                    evaluation.producers.append(self._evaluations[key])
        self._arrivals = 0

    def wants(self, rule_key: str) -> bool:
        return rule_key in self._consumers

    def observe(self, rule_key: str, event: Event) -> None:
        self._arrivals += 1
        for evaluation in self._consumers.get(rule_key, ()):
            evaluation.offer(rule_key, event.time, event.record, event.renames, event.reference, event.table,
                             (self._arrivals,))

    def poll(self, watermark: float | None = None) -> list[Alert]:
        """Alerts of the episodes no further event can extend. ``watermark``: every event
        earlier than this time has been observed (an earlier one coming later is late)."""
        if watermark is not None:
            for evaluation in self._evaluations.values():  # producers before their consumers
                limit = min([watermark, *(p.output_watermark() for p in evaluation.producers)])
                evaluation.advance(limit)
        return [alert for evaluation in self._evaluations.values() for alert in evaluation.alerts()]

    def finish(self) -> Iterator[Alert]:
        """Close every window and episode; the remaining alerts, correlation by correlation
        (referenced ones first), group by group."""
        for evaluation in self._evaluations.values():
            evaluation.finish()
            yield from evaluation.alerts()

    def losses(self) -> list[str]:
        """What the limits cost, one sentence per correlation and limit reached."""
        return [f"{e.correlation.title}: " + _LOSSES[reason].format(n=count, limits=self.limits)
                for e in self._evaluations.values() for reason, count in e.losses.items()]

    def snapshot(self) -> bytes:
        """The whole state (buffers, windows, open and unreported episodes, counters) as
        versioned JSON."""
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "limits": asdict(self.limits),
                 "arrivals": self._arrivals,
                 "correlations": {key: e.state() for key, e in self._evaluations.items()}}
        return json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def restore(cls, correlations: Iterable[CompiledCorrelation], blob: bytes,
                limits: CorrelationLimits | None = None) -> Correlator:
        """A correlator continuing from :meth:`snapshot`'s bytes; the saved limits unless
        ``limits`` are given. A correlation whose rule changed since starts afresh (counted)."""
        state = _read_state(blob)
        try:
            correlator = cls(correlations, limits or CorrelationLimits(**state["limits"]))
            correlator._arrivals = int(state["arrivals"])
            saved = state["correlations"]
            for key, evaluation in correlator._evaluations.items():
                if key in saved:
                    evaluation.load(saved[key])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CorrelationStateError(f"correlation state is damaged: {type(exc).__name__}: {exc}") from None
        return correlator


def _read_state(blob: bytes) -> dict:
    try:
        state = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorrelationStateError(f"correlation state is not JSON: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CorrelationStateError("not an rpcwatch correlation state")
    if state.get("version") != STATE_VERSION:
        raise CorrelationStateError(f"correlation state version {state.get('version')!r} is not supported "
                                    f"(this rpcwatch reads version {STATE_VERSION})")
    return state


def _evaluation_order(correlations: list[CompiledCorrelation]) -> list[CompiledCorrelation]:
    """Referenced correlations before those referencing them (a cycle: as given)."""
    pending = list(correlations)
    order: list[CompiledCorrelation] = []
    while pending:
        waiting = {c.key for c in pending}
        ready = [c for c in pending if not any(key in waiting and key != c.key for key in c.rules)] or pending[:1]
        for correlation in ready:
            pending.remove(correlation)
            order.append(correlation)
    return order


@dataclass
class _Episode:
    first: float
    last: float
    value: Any
    #: every event involved; ``listed`` holds the first MAX_LISTED_EVENTS as (time, rule, record id)
    count: int
    listed: list[tuple[float, str, Any]]
    #: the table of its first event (its ECS mapping names the group's fields)
    table: str


class _Group:
    __slots__ = ("key", "serial", "last", "window", "aggregate", "episode")

    def __init__(self, key: tuple, serial: int, aggregate: Aggregate):
        self.key = key
        self.serial = serial
        self.last: float | None = None
        #: (window time, rule number, value, time, rule reference, record id, table), oldest first
        self.window: deque[tuple] = deque()
        self.aggregate = aggregate
        self.episode: _Episode | None = None


class _Evaluation:
    """One correlation: its reorder buffer, groups and closed episodes."""

    def __init__(self, correlation: CompiledCorrelation, limits: CorrelationLimits):
        self.correlation = correlation
        self.limits = limits
        self.rules = tuple(dict.fromkeys(correlation.rules))
        self.rule_number = {key: number for number, key in enumerate(self.rules)}
        self.sequence = tuple(self.rule_number[key] for key in correlation.rules)
        self.consumers: list[_Evaluation] = []
        self.producers: list[_Evaluation] = []
        self.losses: Counter[str] = Counter()
        self._record_ids: dict[str, str | None] = {}
        self._fields: dict[str, tuple[tuple[str, ...], str | None]] = {}
        #: per table, the column each group field is read from there (renamed by routes),
        #: so alerts name the group's endpoints by the table's roles
        self.group_columns: dict[str, dict[str, str]] = {}
        self._expression_results: dict[int, bool] = {}
        #: closed episodes not yet reported: (serial, group key, episode)
        self.closed: list[tuple[int, tuple, _Episode]] = []
        self.next_episode = 0
        self._reset()

    def _reset(self) -> None:
        #: heap of (key, group, value, rule reference, record id, table); key: (time, rule number, tie)
        self.buffer: list[tuple] = []
        self.released: tuple | None = None
        #: the watermark passed: no event before it is expected
        self.floor = -math.inf
        self.groups: dict[tuple, _Group] = {}
        #: heap of (last time, serial, group key), one per group; a group's entry may be
        #: older than its last time and is then renewed when it comes up
        self.ages: list[tuple] = []
        self.held = 0
        self.next_group = 0

    # -- events in --------------------------------------------------------------------

    def offer(self, rule_key: str, time: float, record: Mapping[str, Any], renames: Mapping[str, str],
              reference: str, table: str, tie: tuple) -> None:
        group = self._group_of(rule_key, record, renames)
        if group is None:
            return
        if table not in self.group_columns:
            self.group_columns[table] = {name: renames.get(column, column)
                                         for name, column in zip(self.correlation.group_by, self._columns(rule_key)[0])}
        value = self._value_of(rule_key, record, renames)
        column = self._record_id_column(table)
        record_id = _canonical(lookup(record, column)) if column else None
        item = ((time, self.rule_number[rule_key], tie), group, value, reference, record_id, table)
        # late: before a time already released (an event of the same time is not late,
        # whatever its place among that time's events: it is evaluated at that time anyway)
        if time < self.floor or (self.released is not None and time < self.released[0]):
            self.losses["late"] += 1
            self._evaluate(item, late=True)
            return
        heappush(self.buffer, item)
        if len(self.buffer) > self.limits.max_reorder_events:
            self._evaluate(heappop(self.buffer))

    def _group_of(self, rule_key: str, record: Mapping[str, Any], renames: Mapping[str, str]) -> tuple | None:
        values = []
        for column in self._columns(rule_key)[0]:
            value = lookup(record, renames.get(column, column))
            if value is None:
                return None
            values.append(_canonical(value))
        return tuple(values)

    def _value_of(self, rule_key: str, record: Mapping[str, Any], renames: Mapping[str, str]) -> Any:
        column = self._columns(rule_key)[1]
        if column is None:
            return None
        value = lookup(record, renames.get(column, column))
        return _canonical(value) if self.correlation.type == "value_count" else _number(value)

    def _columns(self, rule_key: str) -> tuple[tuple[str, ...], str | None]:
        """The referenced rule's fields for the group and for the condition (``aliases``
        name them per rule)."""
        if rule_key not in self._fields:
            def column(name: str) -> str:
                alias = self.correlation.aliases.get(name)
                return alias.get(rule_key, name) if alias else name

            value_field = self.correlation.value_field
            self._fields[rule_key] = (tuple(column(name) for name in self.correlation.group_by),
                                      None if value_field is None else column(value_field))
        return self._fields[rule_key]

    def _record_id_column(self, table: str) -> str | None:
        if table not in self._record_ids:
            self._record_ids[table] = table_info(table).record_id if table else None
        return self._record_ids[table]

    # -- release in time order ------------------------------------------------------------

    def advance(self, watermark: float) -> None:
        """No event before ``watermark`` is to come: evaluate them, close what they end."""
        while self.buffer and self.buffer[0][0][0] < watermark:
            self._evaluate(heappop(self.buffer))
        self.floor = max(self.floor, watermark)
        self._expire(watermark - self.correlation.timespan)

    def output_watermark(self) -> float:
        """No alert of this correlation still to come ends before this time."""
        open_lasts = [g.episode.last for g in self.groups.values() if g.episode is not None]
        return min([self.floor, *open_lasts])

    def finish(self) -> None:
        while self.buffer:
            self._evaluate(heappop(self.buffer))
        for group in list(self.groups.values()):
            self._close(group)
        self._reset()

    # -- one event in its group ------------------------------------------------------------

    def _evaluate(self, item: tuple, late: bool = False) -> None:
        key, group_key, value, reference, record_id, table = item
        time, rule = key[0], key[1]
        if not late:
            self.released = key
        group = self.groups.get(group_key)
        if group is None:
            group = self._new_group(group_key, time)
        moment = time if group.last is None or time >= group.last else group.last
        horizon = moment - self.correlation.timespan
        if group.episode is not None and group.last is not None and group.last < horizon:
            self._close(group)  # a quiet gap: no event of the episode is in this window
        group.window.append((moment, rule, value, time, reference, record_id, table))
        group.aggregate.add(rule, value)
        self.held += 1
        self._trim(group, horizon)
        hit, measured = self._judge(group.aggregate)
        if hit:
            self._extend(group, moment, measured)
        elif group.episode is not None:
            self._close(group)
        group.last = moment
        self._bound_held(group)
        if not late:
            self._expire(horizon)

    def _new_group(self, key: tuple, time: float) -> _Group:
        while len(self.groups) >= self.limits.max_groups:
            self._drop(self._oldest(), "groups")
        group = _Group(key, self.next_group, _aggregate(self.correlation, self.sequence))
        self.next_group += 1
        self.groups[key] = group
        heappush(self.ages, (time, group.serial, key))
        return group

    def _trim(self, group: _Group, horizon: float) -> None:
        window = group.window
        while window[0][0] < horizon:
            self._pop_oldest_event(group)
        while len(window) > self.limits.max_window_events:
            self._pop_oldest_event(group)
            self.losses["window"] += 1

    def _pop_oldest_event(self, group: _Group) -> None:
        entry = group.window.popleft()
        group.aggregate.remove(entry[1], entry[2])
        self.held -= 1

    def _extend(self, group: _Group, moment: float, measured: Any) -> None:
        episode = group.episode
        if episode is None:
            window = group.window
            group.episode = _Episode(window[0][0], moment, measured, len(window),
                                     [(e[3], e[4], e[5]) for e in islice(window, MAX_LISTED_EVENTS)], window[0][6])
            return
        newest = group.window[-1]
        episode.count += 1
        if len(episode.listed) < MAX_LISTED_EVENTS:
            episode.listed.append((newest[3], newest[4], newest[5]))
        episode.last = moment
        episode.value = _stronger(self.correlation.op, episode.value, measured)

    def _judge(self, aggregate: Aggregate) -> tuple[bool, Any]:
        correlation, measured = self.correlation, aggregate.measure()
        if correlation.type == "temporal":
            present = measured.bit_count()
            if correlation.expression:
                return self._expression_holds(correlation.expression, measured), present
            if correlation.op is None:
                return present >= len(self.rules), present
            return _OPS[correlation.op](present, correlation.value), present
        if correlation.type == "temporal_ordered" and (correlation.expression or correlation.op is None):
            return measured >= len(self.sequence), measured
        if measured is None:
            return False, None
        assert correlation.op is not None, "a count or value correlation's condition always has an operator"
        return _OPS[correlation.op](measured, correlation.value), measured

    def _expression_holds(self, expression: str, present: int) -> bool:
        if present not in self._expression_results:
            keys = {key for number, key in enumerate(self.rules) if present >> number & 1}
            names = {name for name, key in self.correlation.rule_names.items() if key in keys}
            from sigma.correlations import SigmaExtendedCorrelationCondition

            condition = SigmaExtendedCorrelationCondition(expression)
            self._expression_results[present] = _eval_extended(condition._parsed, names)
        return self._expression_results[present]

    # -- groups out ---------------------------------------------------------------------

    def _oldest(self) -> _Group:
        """The group whose last event is oldest (ties: the group made first)."""
        while True:
            last, serial, key = self.ages[0]
            group = self.groups.get(key)
            if group is None or group.serial != serial:
                heappop(self.ages)
            elif group.last is not None and group.last > last:
                heappop(self.ages)
                heappush(self.ages, (group.last, serial, key))
            else:
                return group

    def _expire(self, horizon: float) -> None:
        """Close the groups whose every event is before ``horizon``: none of them can be
        in a window with an event still to come."""
        while self.groups and self.ages[0][0] < horizon:
            group = self._oldest()
            assert group.last is not None, "a group gets its last event in the _evaluate that makes it, before expiry"
            if group.last >= horizon:
                return
            self._drop(group)

    def _bound_held(self, current: _Group) -> None:
        """Close the oldest group other than the one being evaluated; when it is alone,
        its window gives up its oldest events."""
        while self.held > self.limits.max_held_events:
            group = self._oldest()
            if group is current:
                if len(self.groups) == 1:
                    self._pop_oldest_event(current)
                    self.losses["window"] += 1
                    continue
                entry = heappop(self.ages)
                group = self._oldest()
                heappush(self.ages, entry)
            self._drop(group, "held")

    def _drop(self, group: _Group, loss: str | None = None) -> None:
        if loss:
            self.losses[loss] += 1
        self._close(group)
        self.held -= len(group.window)
        del self.groups[group.key]

    def _close(self, group: _Group) -> None:
        episode, group.episode = group.episode, None
        if episode is None:
            return
        serial, self.next_episode = self.next_episode, self.next_episode + 1
        if self.correlation.emit:
            self.closed.append((serial, group.key, episode))
        if self.consumers:
            values = dict(zip(self.correlation.group_by, group.key))
            for consumer in self.consumers:
                consumer.offer(self.correlation.key, episode.last, values, {}, self.correlation.title,
                               episode.table, (str(group.key), serial))

    def alerts(self) -> list[Alert]:
        """The closed episodes' alerts, group by group, and forget them."""
        closed, self.closed = self.closed, []
        closed.sort(key=lambda item: (str(item[1]), item[0]))
        return [_alert(self.correlation, group, episode, self.group_columns.get(episode.table, {}))
                for _, group, episode in closed]

    # -- saved state --------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "fingerprint": _fingerprint(self.correlation),
            "buffer": [[list(key), group, value, reference, record_id, table]
                       for key, group, value, reference, record_id, table in self.buffer],
            "released": self.released,
            "floor": None if self.floor == -math.inf else self.floor,
            "next_group": self.next_group, "next_episode": self.next_episode,
            "groups": [[g.key, g.serial, g.last, list(g.window), _episode_state(g.episode)]
                       for g in self.groups.values()],
            "closed": [[serial, group, _episode_state(episode)] for serial, group, episode in self.closed],
            "losses": dict(self.losses),
            "group_columns": self.group_columns,
        }

    def load(self, state: dict) -> None:
        if state["fingerprint"] != _fingerprint(self.correlation):
            self.losses["changed"] += 1
            return
        self.buffer = [((key[0], key[1], _thaw(key[2])), _thaw(group), _thaw(value), reference, record_id, table)
                       for key, group, value, reference, record_id, table in state["buffer"]]
        self.buffer.sort()
        released = state["released"]
        self.released = None if released is None else (released[0], released[1], _thaw(released[2]))
        self.floor = -math.inf if state["floor"] is None else float(state["floor"])
        self.next_group, self.next_episode = int(state["next_group"]), int(state["next_episode"])
        for key, serial, last, window, episode in state["groups"]:
            group = _Group(_thaw(key), int(serial), _aggregate(self.correlation, self.sequence))
            if not isinstance(last, (int, float)):  # a saved group has had its last event
                raise TypeError(f"group {serial} has no last event time")
            group.last = last
            for moment, rule, value, time, reference, record_id, table in window:
                group.window.append((moment, rule, _thaw(value), time, reference, record_id, table))
                group.aggregate.add(rule, _thaw(value))
            group.episode = _load_episode(episode)
            self.groups[group.key] = group
            self.held += len(group.window)
            heappush(self.ages, (last, group.serial, group.key))
        self.closed = [(int(serial), _thaw(group), _episode_from_state(episode))
                       for serial, group, episode in state["closed"]]
        self.losses.update(state["losses"])
        self.group_columns = {table: dict(columns) for table, columns in state.get("group_columns", {}).items()}


def _aggregate(correlation: CompiledCorrelation, sequence: tuple[int, ...]) -> Aggregate:
    kind = correlation.type
    if kind == "event_count":
        return EventCount()
    if kind == "value_count":
        return DistinctValues()
    if kind in ("value_sum", "value_avg"):
        return ExactSum(mean=kind == "value_avg")
    if kind == "value_median":
        return Percentile(None)
    if kind == "value_percentile":
        return Percentile(correlation.percentile if correlation.percentile is not None else 50)
    if kind == "temporal":
        return RulesPresent(len(set(sequence)))
    if kind == "temporal_ordered":
        return OrderedPrefix(sequence)
    raise ValueError(f"unknown correlation type {kind}")


def _episode_state(episode: _Episode | None) -> list | None:
    if episode is None:
        return None
    return [episode.first, episode.last, episode.value, episode.count, episode.listed, episode.table]


def _load_episode(state: list | None) -> _Episode | None:
    return None if state is None else _episode_from_state(state)


def _episode_from_state(state: list) -> _Episode:
    first, last, value, count, listed, table = state
    return _Episode(first, last, value, int(count), [tuple(item) for item in listed], table)


def _thaw(value: Any) -> Any:
    """JSON's lists back to the tuples values are kept as (group keys, set values, ties)."""
    return tuple(_thaw(item) for item in value) if isinstance(value, list) else value


def _fingerprint(correlation: CompiledCorrelation) -> str:
    """What a saved state depends on: the rule's evaluation, not its title or guide."""
    parts = [correlation.type, correlation.rules, correlation.group_by, correlation.timespan, correlation.op,
             correlation.value, correlation.value_field, correlation.percentile, correlation.expression,
             sorted((alias, sorted(columns.items())) for alias, columns in correlation.aliases.items())]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """A group or field value as kept: hashable and plain JSON (a Zeek set becomes a tuple,
    anything but text, numbers and booleans its text)."""
    if value is None or type(value) is str or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(item) for item in value)
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number + 0.0 if math.isfinite(number) else None  # + 0.0: -0.0 sorts and prints as 0.0


def _stronger(op: str | None, old: Any, new: Any) -> Any:
    if op in ("gt", "gte") and isinstance(new, (int, float)):
        return max(old, new)
    if op in ("lt", "lte") and isinstance(new, (int, float)):
        return min(old, new)
    return old


def _eval_extended(node, names: set[str]) -> bool:
    from sigma.correlations import CorrelationConditionAND, CorrelationConditionNOT, CorrelationConditionOR

    if isinstance(node, CorrelationConditionAND):
        return all(_eval_extended(arg, names) for arg in node.args)
    if isinstance(node, CorrelationConditionOR):
        return any(_eval_extended(arg, names) for arg in node.args)
    if isinstance(node, CorrelationConditionNOT):
        return not _eval_extended(node.args[0], names)
    return getattr(node, "reference", str(node)) in names


def correlation_event_id(correlation: CompiledCorrelation, group_values: Mapping[str, Any], first: float) -> str:
    """The same alert gets the same id in every run over the same events: a hash of the
    correlation, its group and its episode's first event time."""
    identity = [correlation.id or correlation.key, sorted(group_values.items()), iso_timestamp(first)]
    return hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:32]


def _alert(correlation: CompiledCorrelation, group: tuple, episode: _Episode,
           columns: Mapping[str, str]) -> Alert:
    group_values = dict(zip(correlation.group_by, (_plain(value) for value in group)))
    listed = [{"rule": reference, "@timestamp": iso_timestamp(time), "record": record_id}
              for time, reference, record_id in episode.listed]
    found = {
        "type": correlation.type, "group": group_values, "value": episode.value,
        "condition": _describe_condition(correlation), "timespan": correlation.timespan_text,
        "first_seen": iso_timestamp(episode.first), "last_seen": iso_timestamp(episode.last),
        "events_count": episode.count, "events": listed,
    }
    return Alert(rule=RuleRef.of(correlation), dataset="correlation", timestamp=iso_timestamp(episode.last),
                 outcome=None, fields=_ecs_of_group(group_values, episode.table, columns),
                 event_id=correlation_event_id(correlation, group_values, episode.first), correlation=found)


def _plain(value: Any) -> Any:
    return [_plain(item) for item in value] if isinstance(value, tuple) else value


def _ecs_of_group(group_values: Mapping[str, Any], table: str, columns: Mapping[str, str]) -> dict[str, Any]:
    """Alert fields for the group keys the events' table has roles for (``id.orig_h`` is
    ``source.ip`` for Zeek; on a table the rule reaches through renames, the key's column
    there: ``src_ip`` in Suricata's), so correlation alerts sort and display like the others."""
    fields: dict[str, Any] = {}
    by_column = {columns.get(name, name): value for name, value in group_values.items()}
    for role, role_columns in (table_info(table).roles if table else {}).items():
        for column in role_columns:
            if column in by_column:
                fields[role] = by_column[column]
                break
    return fields


def _describe_condition(correlation: CompiledCorrelation) -> str:
    if correlation.expression:
        return correlation.expression
    if correlation.op is None:
        return "all rules"
    target = f" of {correlation.value_field}" if correlation.value_field else ""
    return f"{correlation.op} {correlation.value:g}{target}"
