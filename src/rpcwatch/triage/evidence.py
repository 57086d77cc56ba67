"""Evidence: the records around the alerts, found by a second, targeted pass.

Once the hunt has named the external sources and the internal victims, searches for what
they did are built as expression trees (exact CIDR tests on the addresses, with the
addresses' spellings as prefilter literals, so only lines that mention one of them are
parsed) and run by the same
:class:`~rpcwatch.hunt.Hunt` and engine over the same inputs. Work beyond the byte scan
is proportional to the records of those addresses; a record becomes a Python object only
once it matched.

Which tables are searched, and which of their columns, follows from the tables' column
roles (``data/tables.yml``): every table with both ends of a connection is searched for
connections, every table with an RPC operation for calls, every table with a parent
process for processes started by service, WMI or DCOM hosts.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rpcwatch.alerts import Alert, epoch_micros, iso_from_micros, iso_timestamp, outcome
from rpcwatch.config import Config
from rpcwatch.hunt import Engine, Hunt, HuntPlan, HuntReport, plan_bound
from rpcwatch.networks import address_spellings, parse_address
from rpcwatch.schema import FILE_COLUMN, Literal, LiteralSet, TableInfo, known_tables, table_info
from rpcwatch.sigma.compiled import CompiledRule
from rpcwatch.sigma.expr import (
    FALSE,
    BoolTest,
    CidrTest,
    Expr,
    Match,
    NumberTest,
    StringTest,
    Wildcard,
    all_of,
    any_of,
    negate,
)
from rpcwatch.sigma.literals import required_literals
from rpcwatch.sigma.loader import RuleSet
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sources import InputFile
from rpcwatch.triage.chain import Chain, attack_chain

SOURCE_CONNECTIONS = "connections from the sources"
SOURCE_RPC = "DCE/RPC calls from the sources"
VICTIM_CONNECTIONS = "connections from the victims"
VICTIM_RPC = "DCE/RPC calls from the victims"
HOST_CONNECTIONS = "connections logged by hosts, with a source or victim at either end"
EXECUTION_PROCESSES = "processes started by service, WMI or DCOM hosts"
#: Past this many address spellings the line prefilter costs more than it saves: with
#: thousands of alternatives and a victim on most lines, RE2 scans at a few MB/s
#: (measured: 4,239 literals, 40 % of lines kept, 6 MB/s), while full parsing runs at
#: tens of MB/s and the CIDR test still decides exactly.
MAX_PREFILTER_LITERALS = 1024


@dataclass(frozen=True, slots=True)
class Evidence:
    """One matched record, reduced to what the attack chain reasons about."""

    search: str
    table: str
    micros: int | None
    file: str | None
    record_id: str | None
    source_ip: str | None = None
    source_port: int | None = None
    destination_ip: str | None = None
    destination_port: int | None = None
    transport: str | None = None
    outcome: str | None = None
    #: payload both ways or an answered RPC call; None when the log cannot tell
    carried_data: bool | None = None
    #: the sensor's own verdict that an end is local (Zeek local_orig/local_resp), if logged
    source_local: bool | None = None
    destination_local: bool | None = None
    rpc_interface: str | None = None
    rpc_operation: str | None = None
    #: a host's own log: the computer that logged it, whether it initiated the connection
    #: (None where the log does not say: a sensor between the ends), the event code
    host: str | None = None
    initiated: bool | None = None
    event_code: int | None = None
    image: str | None = None
    parent_image: str | None = None
    parent_command_line: str | None = None
    command_line: str | None = None

    @property
    def timestamp(self) -> str | None:
        return None if self.micros is None else iso_from_micros(self.micros)

    @property
    def is_process(self) -> bool:
        """A process start (it has a parent), not a connection."""
        return self.parent_image is not None or (self.image is not None and self.source_ip is None
                                                 and self.destination_ip is None)

    @property
    def identity(self) -> tuple:
        """Records found by several searches (and as alerts) count once. All that a record
        says is its identity: a record id alone is not unique in every log (Suricata's
        flow_id is shared by a flow's alert, flow and protocol events)."""
        return tuple(getattr(self, name) for name in self.__slots__ if name != "search")

    def ref(self) -> dict[str, Any]:
        """Where to find the record, and what it says in one line."""
        return {"time": self.timestamp, "file": self.file, "record_id": self.record_id,
                "table": self.table, "summary": self.summary}

    @property
    def summary(self) -> str:
        flow = f"{self.source_ip}:{self.source_port} -> {self.destination_ip}:{self.destination_port}"
        if self.rpc_operation or self.rpc_interface:
            return f"{self.rpc_interface} {self.rpc_operation} {flow}"
        if self.is_process:
            return f"event {self.event_code} on {self.host}: {self.parent_image} started {self.image}"
        if self.host is not None:
            return f"event {self.event_code} on {self.host}: {flow} {self.image or ''}".rstrip()
        return f"{flow}/{self.transport or '?'} {self.outcome or ''}".rstrip()


def evidence_from_alert(alert: Alert, search: str) -> Evidence:
    """The evidence record of an alert's record (read from its native fields, as the
    second pass reads rows, so a record seen both ways is one piece of evidence)."""
    record = alert.original or {}
    [evidence] = _evidence(search, alert.dataset, lambda name: [record[name]] if name in record else None,
                           1, [alert.file])
    return evidence


def evidence_from_rows(search: str, table: str, rows: pa.Table) -> list[Evidence]:
    """Evidence records straight from matched rows, column by column: the second pass can
    match many records, and an object per record would cost ten times more."""
    def column(name: str) -> list | None:
        return rows.column(name).to_pylist() if name in rows.column_names else None

    paths = column(FILE_COLUMN) or [None] * rows.num_rows
    return _evidence(search, table, column, rows.num_rows, paths)


def _evidence(search: str, table: str, column: Callable[[str], list | None], size: int,
              paths: Sequence[str | None]) -> list[Evidence]:
    """Evidence from a table's columns through its roles; ``column(name)`` gives a
    column's values, or None when the record(s) do not have it."""
    info = table_info(table)

    def role(name: str) -> list:
        present = [values for values in map(column, info.columns_of(name)) if values is not None]
        if len(present) == 1:
            return [None if v == "" else v for v in present[0]]
        return [next((v for v in row if v not in (None, "")), None) for row in zip(*present)] if present \
            else [None] * size

    def native(name: str | None) -> list:
        values = column(name) if name else None
        return values if values is not None else [None] * size

    outcome_column = info.outcome.get("column")
    outcomes = [outcome({outcome_column: value}, info) for value in native(outcome_column)] if outcome_column \
        else [outcome({}, info)] * size
    transports = [_transport(t, info) for t in role("network.transport")]
    operations = role("rpc.operation")
    carried = map(_carried_data, operations, role("source.bytes"), role("destination.bytes"))
    initiated = _initiated(info, column, size)
    locality = [[v if isinstance(v, bool) else None for v in native(info.locality.get(side))]
                for side in ("source", "destination")]
    return [Evidence(search, table, epoch_micros(iso_timestamp(ts)), path, _text(rid), _text(sip), _int(sport),
                     _text(dip), _int(dport), transport, out, data, src_local, dst_local, _text(iface), _text(op),
                     _text(host), init, _int(code), _text(image), _text(parent), _text(parent_cl), _text(cl))
            for (ts, path, rid, sip, sport, dip, dport, transport, out, data, src_local, dst_local, iface, op,
                 host, init, code, image, parent, parent_cl, cl)
            in zip(native(info.time), paths, native(info.record_id), role("source.ip"), role("source.port"),
                   role("destination.ip"), role("destination.port"), transports, outcomes, carried,
                   locality[0], locality[1], role("rpc.interface"), operations, role("host.name"), initiated,
                   role("event.code"), role("process.executable"), role("process.parent.executable"),
                   role("process.parent.command_line"), role("process.command_line"))]


def _transport(value: Any, info: TableInfo) -> str | None:
    if value is None:
        return info.transport
    text = str(value)
    return info.transports.get(text) or text.lower()


def _initiated(info: TableInfo, column: Callable[[str], list | None], size: int) -> list[bool | None]:
    """Per record: True when the logging host opened the connection, False when it was
    inbound, None when the log does not say (``inbound`` in tables.yml)."""
    verdicts: list[bool | None] = [None] * size
    for name, inbound in info.inbound.items():
        values = column(name)
        if values is None:
            continue
        for index, value in enumerate(values):
            if verdicts[index] is None and value is not None:
                verdicts[index] = str(value).strip().lower() not in inbound
    return verdicts


@dataclass
class EvidenceSet:
    """What the second pass found, per search, and which tables the inputs held."""

    found: dict[str, list[Evidence]] = field(default_factory=lambda: defaultdict(list))
    tables_seen: set[str] = field(default_factory=set)
    report: HuntReport | None = None

    def of(self, search: str) -> list[Evidence]:
        return self.found.get(search, [])

    def add_rows(self, bound: BoundRule, rows: pa.Table) -> None:
        self.found[bound.rule.title].extend(evidence_from_rows(bound.rule.title, bound.table, rows))


@dataclass(frozen=True)
class Search:
    name: str
    table: str
    expr: Expr
    #: the prefilter literals; None: derived from the expression
    literals: LiteralSet | None = None


class EvidenceSearch:
    """The targeted searches for given external sources and internal victims.

    Addresses are compared exactly (a CIDR test parses every spelling); the prefilter
    looks for the spellings logs use, which is what keeps the second pass cheap."""

    def __init__(self, sources: Collection[str], victims: Collection[str], config: Config,
                 chain: Chain | None = None):
        self.sources = sorted(set(sources))
        self.victims = sorted(set(victims))
        self.config = config
        self.chain = chain or attack_chain()

    def bound_rules(self) -> list[BoundRule]:
        return [BoundRule(_query(s.name, s.expr), s.table, s.expr) for s in self.searches()]

    def plan(self, prefilter: bool = True) -> HuntPlan:
        by_table: dict[str, list[BoundRule]] = defaultdict(list)
        literals: dict[str, list[LiteralSet | None]] = defaultdict(list)
        for search in self.searches():
            by_table[search.table].append(BoundRule(_query(search.name, search.expr), search.table, search.expr))
            literals[search.table].append(search.literals if search.literals is not None
                                          else required_literals(search.expr))
        rules = [b.rule for bound in by_table.values() for b in bound]
        return plan_bound(RuleSet(rules=rules), by_table, self.config, prefilter=prefilter,
                          literals={table: _bounded(_union(sets)) for table, sets in literals.items()})

    def run(self, inputs: list[InputFile], engine: Engine, prefilter: bool = True) -> EvidenceSet:
        evidence = EvidenceSet()
        if self.sources:
            hunt = Hunt(inputs, self.plan(prefilter), engine)
            for bound, rows in hunt.matches():
                evidence.add_rows(bound, rows)
            evidence.report = hunt.report
            evidence.tables_seen = {table for stats in hunt.report.stats for table in stats.tables}
        return evidence

    def searches(self) -> Iterator[Search]:
        """For every table, by its roles: connections and RPC calls of the sources and of
        the victims, and processes started by execution hosts."""
        sources, victims = address_literals(self.sources), address_literals(self.victims)
        for info in known_tables():
            if info.is_network:
                yield from self._network_searches(info, sources, victims)
            if self.victims and info.has_role("process.parent.executable"):
                yield Search(EXECUTION_PROCESSES, info.name, self._execution_parent(info))

    def _network_searches(self, info: TableInfo, sources: LiteralSet, victims: LiteralSet) -> Iterator[Search]:
        clients = info.columns_of("source.ip")
        if info.inbound:  # a host's own log: the remote end may be logged on either side
            ends = clients + info.columns_of("destination.ip")
            yield Search(HOST_CONNECTIONS, info.name, addresses_in(ends, self.sources + self.victims),
                         sources | victims)
            return
        rpc = info.has_role("rpc.operation")
        yield Search(SOURCE_RPC if rpc else SOURCE_CONNECTIONS, info.name, addresses_in(clients, self.sources),
                     sources)
        if self.victims:
            from_victims = addresses_in(clients, self.victims)
            yield Search(VICTIM_RPC if rpc else VICTIM_CONNECTIONS, info.name,
                         from_victims if rpc else all_of([from_victims, self._next_hop(info)]), victims)

    def _next_hop(self, info: TableInfo) -> Expr:
        """What a victim's connection must be to matter: to a lateral-movement port, RPC, or
        out of the internal networks (the victim's routine internal traffic is not read)."""
        internal = [Match(name, CidrTest(self.config.internal.networks)) for name in info.columns_of("destination.ip")]
        if "destination" in info.locality:
            internal.append(Match(info.locality["destination"], BoolTest(True)))
        ports = [_one_of_numbers(name, sorted(self.chain.lateral_ports)) for name in info.columns_of("destination.port")]
        rpc = [Match(name, StringTest((Wildcard.ANY, "dce_rpc", Wildcard.ANY)))
               for name in info.columns_of("network.protocol")]
        return any_of([*ports, *rpc, negate(any_of(internal))])

    def _execution_parent(self, info: TableInfo) -> Expr:
        suffixes = [Match(name, StringTest((Wildcard.ANY, suffix)))
                    for name in info.columns_of("process.parent.executable")
                    for suffix in self.chain.execution_parent_images]
        words = [Match(name, StringTest((Wildcard.ANY, word, Wildcard.ANY)))
                 for name in info.columns_of("process.parent.command_line")
                 for word in self.chain.execution_parent_command_lines]
        return any_of(suffixes + words)


def addresses_in(fields: Sequence[str], addresses: Iterable[str]) -> Expr:
    """Any of ``fields`` holds one of ``addresses``, however the log spells it."""
    networks = tuple(ipaddress.ip_network(a) for a in _parsed(addresses))
    return any_of(Match(name, CidrTest(networks)) for name in fields) if networks else FALSE


def address_literals(addresses: Iterable[str]) -> LiteralSet:
    """Text that every line holding one of the addresses contains."""
    return frozenset(Literal(text.lower()) for address in _parsed(addresses) for text in address_spellings(address))


def _parsed(addresses: Iterable[str]) -> list:
    return sorted({a for a in map(parse_address, addresses) if a is not None}, key=lambda a: (a.version, int(a)))


def _bounded(literals: LiteralSet | None) -> LiteralSet | None:
    """No prefilter past :data:`MAX_PREFILTER_LITERALS`: parsing every line is then cheaper."""
    return literals if literals is not None and len(literals) <= MAX_PREFILTER_LITERALS else None


def _union(sets: list[LiteralSet | None]) -> LiteralSet | None:
    if any(s is None for s in sets):
        return None
    return frozenset().union(*sets)


def _one_of_numbers(field_name: str, numbers: Iterable[int]) -> Expr:
    return any_of(Match(field_name, NumberTest("==", n)) for n in numbers)


def _query(name: str, expr: Expr) -> CompiledRule:
    return CompiledRule(id=f"triage:{name}", title=name, level="informational", tags=(),
                        logsource={}, expr=expr)


def _carried_data(operation: str | None, sent: Any, received: Any) -> bool | None:
    if operation:
        return True
    if sent is None or received is None:
        return None
    return bool(sent) and bool(received)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip()) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
