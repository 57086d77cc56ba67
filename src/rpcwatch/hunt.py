"""``rpcwatch hunt``: inputs -> sources -> compiled rules -> engine -> alerts.

The layers meet here and nowhere else: the CLI calls :func:`plan_hunt` and iterates
:class:`Hunt`; readers, compiler and engine never call each other.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from rpcwatch.alerts import Alert, build_alerts, event_time
from rpcwatch.config import Config
from rpcwatch.context import current
from rpcwatch.schema import FILE_COLUMN, LiteralSet, table_info
from rpcwatch.sigma.correlation import CorrelationLimits, Correlator, Event
from rpcwatch.sigma.expr import has_keywords
from rpcwatch.sigma.literals import literals_for_table
from rpcwatch.sigma.loader import RuleProblem, RuleSet, load_rule_set
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sources import LogReading, ReadStats, TableBatch
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.prefilter import PrefilterPlan

#: rows gathered per table before the engine runs (bounded memory, few queries)
BATCH_ROWS = 1 << 18


class BatchSource(Protocol):
    """Tables read by something other than rpcwatch's readers (a Spark scan of a dataset);
    each input read appends its :class:`ReadStats` to ``stats``."""

    def batches(self, stats: list[ReadStats]) -> Iterator[TableBatch]:
        ...


class Engine(Protocol):
    name: str
    problems: dict[str, str]

    def match(self, data: pa.Table, rules: Sequence[BoundRule]) -> Iterator[tuple[BoundRule, pa.Table]]:
        ...


@dataclass
class HuntPlan:
    """The rules that will run, grouped by the table they read."""

    rule_set: RuleSet
    by_table: dict[str, list[BoundRule]]
    prefilter: PrefilterPlan
    config: Config = field(default_factory=Config)

    @property
    def problems(self) -> list[RuleProblem]:
        return self.rule_set.problems


def plan_hunt(rule_paths: Iterable[str] = (), config: Config | None = None, bundled: bool = True,
              prefilter: bool = True, filters: Iterable[str] = ()) -> HuntPlan:
    rule_set = load_rule_set(rule_paths, config, bundled=bundled, filters=filters)
    return plan_bound(rule_set, rule_set.by_table, config or Config(), prefilter=prefilter, literals=rule_set.literals)


def plan_bound(rule_set: RuleSet, by_table: dict[str, list[BoundRule]], config: Config,
               prefilter: bool = True,
               literals: Mapping[str, LiteralSet | None] | None = None) -> HuntPlan:
    """A plan for rules already bound to tables (also triage's programmatic searches).
    ``literals`` gives a table's prefilter literals when the caller knows them better
    than the expressions say (addresses compared by CIDR, known by their spellings)."""
    given = literals or {}
    plan = PrefilterPlan({table: given[table] if table in given else literals_for_table(b.expr for b in rules)
                          for table, rules in by_table.items()},
                         raw_tables={table for table, rules in by_table.items()
                                     if any(has_keywords(b.expr) for b in rules)},
                         enabled=prefilter)
    return HuntPlan(rule_set, dict(by_table), plan, config)


@dataclass
class HuntReport:
    """What a run read, skipped and found (filled while the hunt is iterated)."""

    stats: list[ReadStats] = field(default_factory=list)
    alerts_by_rule: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    bytes_on_disk: int = 0
    #: what the correlation limits cost (late events, windows cut short, groups closed early)
    correlation_losses: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def records(self) -> int:
        return sum(s.records for s in self.stats)

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_rule.values())


class Hunt:
    """Iterate to get alerts as they are found; the report is complete afterwards."""

    def __init__(self, inputs: list[InputFile], plan: HuntPlan, engine: Engine,
                 on_bytes: Callable[[int], None] | None = None, sources: Sequence[BatchSource] = (),
                 correlator: Correlator | None = None, watermark: float | None = None):
        """``correlator``: one that outlives this hunt (live mode runs one hunt per batch of
        new lines, and correlation windows span batches): its windows stay open at the end,
        and only the episodes no event after ``watermark`` (epoch seconds) can extend are
        reported."""
        self.plan = plan
        self._sources = sources
        self.engine = engine
        self.report = HuntReport()
        self._on_bytes = on_bytes
        self._reading = LogReading(inputs, plan.prefilter, self._count_bytes)
        self.report.stats = self._reading.stats
        self._columns: dict[str, set[str]] = defaultdict(set)
        self._correlator = correlator if correlator is not None else new_correlator(plan.rule_set.correlations)
        self._live, self._watermark = correlator is not None, watermark
        #: the newest time of an event the correlations observed (live mode's watermark)
        self.newest_event: float | None = None

    def _count_bytes(self, size: int) -> None:
        self.report.bytes_on_disk += size
        if self._on_bytes:
            self._on_bytes(size)

    def __iter__(self) -> Iterator[Alert]:
        """Alerts of the rules that alert on their own, then those of the correlations."""
        for bound, rows in self.matches():
            observed = self._correlator.wants(bound.rule.key)
            if not (observed or bound.rule.emit):
                continue
            for alert in build_alerts(bound.rule, bound.table, rows, self._columns.__getitem__):
                if observed and alert.original is not None:
                    self._observe(bound, alert.original)
                if bound.rule.emit:
                    self.report.alerts_by_rule[bound.rule.title] += 1
                    yield alert
            # episodes closed early (only when more events came than the correlations hold)
            yield from self._correlation_alerts(self._correlator.poll())
        if self._live:
            yield from self._correlation_alerts(self._correlator.poll(self._watermark))
        else:
            yield from self._correlation_alerts(self._correlator.finish())
        self.report.correlation_losses = self._correlator.losses()
        self.report.finished = time.perf_counter()

    def _correlation_alerts(self, found: Iterable[Alert]) -> Iterator[Alert]:
        for alert in found:
            self.report.alerts_by_rule[alert.rule.name] += 1
            yield alert

    def _observe(self, bound: BoundRule, record: dict) -> None:
        time_of = event_time(record, table_info(bound.table))
        if time_of is not None:
            self.newest_event = time_of if self.newest_event is None else max(self.newest_event, time_of)
            self._correlator.observe(bound.rule.key, Event(time_of, bound.rule.key, record, bound.renames,
                                                           bound.rule.title, bound.table))

    def matches(self) -> Iterator[tuple[BoundRule, pa.Table]]:
        """Each rule with the rows it matched (and their input in ``FILE_COLUMN``), before
        they become alerts: for callers that want columns, not one object per record."""
        pending: dict[str, list[pa.Table]] = defaultdict(list)
        sizes: Counter = Counter()
        for batch in self._batches():
            if batch.table not in self.plan.by_table:
                continue
            self._columns[batch.path].update(batch.data.column_names)
            pending[batch.table].append(_with_file(batch))
            sizes[batch.table] += batch.data.num_rows
            if sizes[batch.table] >= BATCH_ROWS:
                yield from self._run(batch.table, pending.pop(batch.table))
                sizes[batch.table] = 0
        for table, tables in pending.items():
            yield from self._run(table, tables)
        self.report.finished = time.perf_counter()

    def _batches(self) -> Iterator[TableBatch]:
        yield from self._reading.batches()
        for source in self._sources:
            yield from source.batches(self.report.stats)

    def _run(self, table: str, tables: list[pa.Table]) -> Iterator[tuple[BoundRule, pa.Table]]:
        rules = self.plan.by_table[table]
        for data in _unify(tables):
            yield from self.engine.match(data, rules)


def new_correlator(correlations: Sequence) -> Correlator:
    """A correlator with the run's limits ([limits] in rpcwatch.toml)."""
    limits = current().limits
    return Correlator(correlations, CorrelationLimits(
        max_reorder_events=limits.correlation_reorder_events, max_groups=limits.correlation_groups,
        max_window_events=limits.correlation_window_events, max_held_events=limits.correlation_held_events))


def _with_file(batch: TableBatch) -> pa.Table:
    """Tag rows with their input so batches from several files can run together."""
    column = pa.DictionaryArray.from_arrays(pa.array([0] * batch.data.num_rows, pa.int32()),
                                            pa.array([batch.path]))
    return batch.data.append_column(FILE_COLUMN, column)


def _unify(tables: list[pa.Table]) -> Iterator[pa.Table]:
    """As few tables as the schemas allow: tables of one schema are joined, then schemas
    that can be reconciled (missing columns become null, numbers widen). Every query costs
    the engine a fixed price, so many small inputs must not become many small batches."""
    if len(tables) == 1:
        yield tables[0]
        return
    by_schema: dict[pa.Schema, list[pa.Table]] = {}
    for table in tables:
        by_schema.setdefault(table.schema, []).append(table)
    merged: list[pa.Table] = []
    for group in by_schema.values():
        table = pa.concat_tables(group) if len(group) > 1 else group[0]
        for index, other in enumerate(merged):
            try:
                merged[index] = pa.concat_tables([other, table], promote_options="permissive")
                break
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                continue
        else:
            merged.append(table)
    yield from merged
