"""Evidence: the records around the alerts, found by a second, targeted pass.

Once the hunt has named the external sources and the internal victims, searches for what
they did are built as expression trees (exact CIDR tests on the addresses, with the
addresses' spellings as prefilter literals, so only lines that mention one of them are
parsed) and run by the same
:class:`~rpcwatch.hunt.Hunt` and engine over the same inputs. Work beyond the byte scan
is proportional to the records of those addresses; a record becomes a Python object only
once it matched.

Windows searches use the ``windows`` table's native (Sysmon / Security) field names.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa

from rpcwatch.alerts import FILE_COLUMN, epoch_micros, iso_from_micros, iso_timestamp, outcome, record_id
from rpcwatch.config import Config
from rpcwatch.hunt import Engine, Hunt, HuntPlan, HuntReport, plan_bound
from rpcwatch.networks import address_spellings, parse_address
from rpcwatch.sigma.compiler import CompiledRule
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
from rpcwatch.sigma.logsources import BoundRule, table_info
from rpcwatch.sources import InputFile
from rpcwatch.sources.prefilter import Literal, LiteralSet
from rpcwatch.triage.chain import Chain, attack_chain

SOURCE_CONNECTIONS = "connections from the sources"
SOURCE_RPC = "DCE/RPC calls from the sources"
VICTIM_CONNECTIONS = "connections from the victims"
VICTIM_RPC = "DCE/RPC calls from the victims"
WINDOWS_NETWORK = "Windows network events of the sources and victims"
WINDOWS_PROCESS = "Windows processes started by service, WMI or DCOM hosts"

CONN_TABLE, RPC_TABLE, WINDOWS_TABLE = "zeek.conn", "zeek.dce_rpc", "windows"
#: Sysmon 3 (network connection), Security 5156 (permitted) and 5157 (blocked)
WINDOWS_NETWORK_EVENTS = (3, 5156, 5157)
WINDOWS_BLOCKED_EVENT = 5157
#: Sysmon 1 and Security 4688 (process creation)
WINDOWS_PROCESS_EVENTS = (1, 4688)
#: native Windows field names, first present wins (Sysmon first, then Security)
WINDOWS_FIELDS: Mapping[str, tuple[str, ...]] = {
    "source_ip": ("SourceIp", "SourceAddress"),
    "destination_ip": ("DestinationIp", "DestAddress"),
    "source_port": ("SourcePort",),
    "destination_port": ("DestinationPort", "DestPort"),
    "image": ("Image", "NewProcessName", "Application"),
    "parent_image": ("ParentImage", "ParentProcessName"),
    "parent_command_line": ("ParentCommandLine",),
    "command_line": ("CommandLine",),
    "host": ("Computer",),
    "time": ("TimeCreated_SystemTime", "UtcTime"),
}
#: Past this many address spellings the line prefilter costs more than it saves: with
#: thousands of alternatives and a victim on most lines, RE2 scans at a few MB/s
#: (measured: 4,239 literals, 40 % of lines kept, 6 MB/s), while full parsing runs at
#: tens of MB/s and the CIDR test still decides exactly.
MAX_PREFILTER_LITERALS = 1024
#: Security's Direction values: %%14593 outbound (the host initiated), %%14592 inbound
_DIRECTION_INITIATED = {"%%14593": True, "%%14592": False}


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
    #: Windows: the computer that logged it, whether it initiated the connection, the event
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
    def is_windows(self) -> bool:
        return self.table == WINDOWS_TABLE

    @property
    def is_process(self) -> bool:
        return self.is_windows and self.event_code in WINDOWS_PROCESS_EVENTS

    @property
    def identity(self) -> tuple:
        """Records found by several searches (and as alerts) count once."""
        return (self.table, self.file, self.record_id, self.micros, self.rpc_operation, self.host,
                self.event_code)

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
        if self.is_windows:
            return f"event {self.event_code} on {self.host}: {flow} {self.image or ''}".rstrip()
        return f"{flow}/{self.transport or '?'} {self.outcome or ''}".rstrip()


def evidence_from_alert(alert: dict, search: str) -> Evidence:
    """An evidence record from an alert (:func:`rpcwatch.alerts.build_alerts`)."""
    table = alert.get("event", {}).get("dataset", "")
    original = alert.get("original", {})
    path = alert.get("log", {}).get("file", {}).get("path")
    if table == WINDOWS_TABLE:
        return _windows_evidence(search, original, path, alert.get("@timestamp"))
    source, destination, rpc = alert.get("source", {}), alert.get("destination", {}), alert.get("rpc", {})
    return Evidence(
        search=search, table=table, micros=epoch_micros(alert.get("@timestamp")), file=path,
        record_id=record_id(alert), source_ip=source.get("ip"), source_port=_int(source.get("port")),
        destination_ip=destination.get("ip"), destination_port=_int(destination.get("port")),
        transport=alert.get("network", {}).get("transport"), outcome=alert["event"].get("outcome"),
        carried_data=_carried_data(rpc.get("operation"), source.get("bytes"), destination.get("bytes")),
        source_local=_locality(table, original, "source"),
        destination_local=_locality(table, original, "destination"),
        rpc_interface=rpc.get("interface"), rpc_operation=rpc.get("operation"))


def evidence_from_rows(search: str, table: str, rows: pa.Table) -> list[Evidence]:
    """Evidence records straight from matched rows, column by column: the second pass can
    match many records, and an alert dictionary per record would cost ten times more."""
    if table == WINDOWS_TABLE:
        return [_windows_evidence(search, record, record.get(FILE_COLUMN), None) for record in rows.to_pylist()]
    info = table_info(table)
    size = rows.num_rows

    def column(names: str | Sequence[str] | None) -> list:
        for name in [names] if isinstance(names, str) else (names or ()):
            if name in rows.column_names:
                return rows.column(name).to_pylist()
        return [None] * size

    outcome_spec = info.outcome.get("column")
    outcomes = [outcome({outcome_spec: value}, info) for value in column(outcome_spec)] if outcome_spec \
        else [outcome({}, info)] * size
    transports = [t or info.transport for t in column(info.ecs.get("network.transport"))]
    operations = column(info.ecs.get("rpc.operation"))
    carried = map(_carried_data, operations, column(info.ecs.get("source.bytes")),
                  column(info.ecs.get("destination.bytes")))
    locality = [[v if isinstance(v, bool) else None for v in column(info.locality.get(side))]
                for side in ("source", "destination")]
    return [Evidence(search, table, epoch_micros(iso_timestamp(ts)), path, _text(rid), sip, _int(sport),
                     dip, _int(dport), transport, out, data, src_local, dst_local, iface, op)
            for ts, path, rid, sip, sport, dip, dport, transport, out, data, src_local, dst_local, iface, op
            in zip(column(info.time), column(FILE_COLUMN), column(info.record_id),
                   column(info.ecs.get("source.ip")), column(info.ecs.get("source.port")),
                   column(info.ecs.get("destination.ip")), column(info.ecs.get("destination.port")),
                   transports, outcomes, carried, locality[0], locality[1],
                   column(info.ecs.get("rpc.interface")), operations)]


def _windows_evidence(search: str, original: Mapping, path: str | None, timestamp: str | None) -> Evidence:
    def first(name: str) -> Any:
        return next((original[f] for f in WINDOWS_FIELDS[name] if original.get(f) not in (None, "")), None)

    code = _int(original.get("EventID"))
    return Evidence(
        search=search, table=WINDOWS_TABLE, micros=epoch_micros(timestamp or iso_timestamp(first("time"))),
        file=path, record_id=_text(original.get("EventRecordID")),
        source_ip=_text(first("source_ip")), source_port=_int(first("source_port")),
        destination_ip=_text(first("destination_ip")), destination_port=_int(first("destination_port")),
        transport="tcp", outcome="blocked" if code == WINDOWS_BLOCKED_EVENT else "established",
        host=_text(first("host")), initiated=_initiated(original), event_code=code,
        image=_text(first("image")), parent_image=_text(first("parent_image")),
        parent_command_line=_text(first("parent_command_line")), command_line=_text(first("command_line")))


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
        return plan_bound(RuleSet(rules=rules), by_table, self.config, prefilter=prefilter, enrich=False,
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
        sources = address_literals(self.sources)
        yield Search(SOURCE_CONNECTIONS, CONN_TABLE, addresses_in(["id.orig_h"], self.sources), sources)
        yield Search(SOURCE_RPC, RPC_TABLE, addresses_in(["id.orig_h"], self.sources), sources)
        ip_fields = WINDOWS_FIELDS["source_ip"] + WINDOWS_FIELDS["destination_ip"]
        yield Search(WINDOWS_NETWORK, WINDOWS_TABLE, all_of([
            _one_of_numbers("EventID", WINDOWS_NETWORK_EVENTS),
            addresses_in(ip_fields, self.sources + self.victims)]), address_literals(self.sources + self.victims))
        if not self.victims:
            return
        victims = address_literals(self.victims)
        yield Search(VICTIM_CONNECTIONS, CONN_TABLE,
                     all_of([addresses_in(["id.orig_h"], self.victims), self._next_hop()]), victims)
        yield Search(VICTIM_RPC, RPC_TABLE, addresses_in(["id.orig_h"], self.victims), victims)
        yield Search(WINDOWS_PROCESS, WINDOWS_TABLE, all_of([
            _one_of_numbers("EventID", WINDOWS_PROCESS_EVENTS), self._execution_parent()]))

    def _next_hop(self) -> Expr:
        """What a victim's connection must be to matter: to a lateral-movement port, RPC, or
        out of the internal networks (the victim's routine internal traffic is not read)."""
        internal = any_of([Match("id.resp_h", CidrTest(self.config.internal.networks)),
                           Match("local_resp", BoolTest(True))])
        return any_of([_one_of_numbers("id.resp_p", sorted(self.chain.lateral_ports)),
                       Match("service", StringTest((Wildcard.ANY, "dce_rpc", Wildcard.ANY))),
                       negate(internal)])

    def _execution_parent(self) -> Expr:
        suffixes = [Match(name, StringTest((Wildcard.ANY, suffix)))
                    for name in WINDOWS_FIELDS["parent_image"] for suffix in self.chain.execution_parent_images]
        words = [Match(name, StringTest((Wildcard.ANY, word, Wildcard.ANY)))
                 for name in WINDOWS_FIELDS["parent_command_line"]
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


def _locality(table: str, original: dict, side: str) -> bool | None:
    column = table_info(table).locality.get(side)
    value = original.get(column) if column else None
    return value if isinstance(value, bool) else None


def _initiated(original: dict) -> bool | None:
    value = original.get("Initiated")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return _DIRECTION_INITIATED.get(str(original.get("Direction") or "").strip())


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip()) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
