"""Evidence: the records around the alerts, found by a second pass over the same inputs.

Once the hunt has named the internet sources and the internal victims (with the time of
each victim's first internet session), one streaming pass reads the same inputs through
the same readers and collects, batch by batch:

* every record of the sources (their connections and RPC calls; in a host's own log, a
  source at either end): few records, kept as :class:`Evidence`;
* every connection a victim opened: aggregated into its *contacts* (``baseline.py``):
  what it did before the intrusion and how it behaves on an ordinary day, without
  keeping a record; its connections in the time its incidents are judged on are kept as
  candidates for stages 5-7;
* processes started on a host by services.exe, WmiPrvSE.exe or a DcomLaunch svchost, and
  services installed, around the sessions.

Matching is vectorised over Arrow columns: each distinct address of a batch is parsed
once (exactly, any spelling) and looked up; no Python object exists per record until a
record is kept. The byte-level prefilter looks for the addresses' spellings, so with few
of them only lines that mention one are parsed.

Which tables are read, and which of their columns, follows from the tables' column roles
(``data/tables.yml``): every table with both ends of a connection, every table with a
parent process, every table with an event code and a host.
"""
from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from queue import Full, Queue
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.alerts import Alert, epoch_micros, iso_from_micros, iso_timestamp, outcome
from rpcwatch.config import Config
from rpcwatch.hunt import HuntReport
from rpcwatch.networks import address_spellings, parse_address
from rpcwatch.schema import Literal, LiteralSet, TableInfo, known_tables, table_info
from rpcwatch.sources import InputFile, LogReading, TableBatch
from rpcwatch.sources.prefilter import PrefilterPlan
from rpcwatch.triage.baseline import ANY_PORT, DYNAMIC_RPC_PORT, ContactLog, VictimBaseline
from rpcwatch.triage.chain import Chain, attack_chain
from rpcwatch.triage.later import COLUMNS as LATER_COLUMNS
from rpcwatch.triage.later import LaterConnections
from rpcwatch.triage.scope import AddressScope

SOURCE_RECORDS = "records of the sources"
VICTIM_CONNECTIONS = "connections of the victims"
EXECUTION_PROCESSES = "processes started by service, WMI or DCOM hosts"
SERVICE_INSTALLS = "services installed"
#: Past this many address spellings the line prefilter costs more than it saves: RE2's
#: scan for a line holding one of many addresses slows with their number (measured per
#: core on a generated conn.log: 10 addresses 89 MB/s, 100: 48, 200: 37, 500: 11, 3,000:
#: under 1), while reading every line runs at about 60 MB/s and the vectorised lookup
#: still decides exactly.
MAX_PREFILTER_LITERALS = 256
_INTERNAL, _INTERNET = 1, 2


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

    def ref(self, strength: str | None = None) -> dict[str, Any]:
        """Where to find the record, and what it says in one line."""
        ref = {"time": self.timestamp, "file": self.file, "record_id": self.record_id, "table": self.table,
               "summary": self.summary}
        if strength:
            ref["strength"] = strength
        return ref

    @property
    def summary(self) -> str:
        flow = f"{self.source_ip}:{self.source_port} -> {self.destination_ip}:{self.destination_port}"
        if self.rpc_operation or self.rpc_interface:
            return f"{self.rpc_interface} {self.rpc_operation} {flow}"
        if self.is_process:
            return f"event {self.event_code} on {self.host}: {self.parent_image} started {self.image}"
        if self.source_ip is None and self.destination_ip is None:
            return f"event {self.event_code} on {self.host}"
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


def evidence_from_rows(search: str, table: str, rows: pa.Table, path: str | None) -> list[Evidence]:
    """Evidence records straight from matched rows, column by column."""
    def column(name: str) -> list | None:
        return rows.column(name).to_pylist() if name in rows.column_names else None

    return _evidence(search, table, column, rows.num_rows, [path] * rows.num_rows)


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
    return [Evidence(search, table, record_micros(ts), path, _text(rid), _text(sip), _int(sport),
                     _text(dip), _int(dport), transport, out, data, src_local, dst_local, _text(iface), _text(op),
                     _text(host), init, _int(code), _text(image), _text(parent), _text(parent_cl), _text(cl))
            for (ts, path, rid, sip, sport, dip, dport, transport, out, data, src_local, dst_local, iface, op,
                 host, init, code, image, parent, parent_cl, cl)
            in zip(native(info.time), paths, native(info.record_id), role("source.ip"), role("source.port"),
                   role("destination.ip"), role("destination.port"), transports, outcomes, carried,
                   locality[0], locality[1], role("rpc.interface"), operations, role("host.name"), initiated,
                   role("event.code"), role("process.executable"), role("process.parent.executable"),
                   role("process.parent.command_line"), role("process.command_line"))]


def record_micros(value: Any) -> int | None:
    """Epoch microseconds of a record's time, rounded as ``iso_timestamp`` rounds; epoch
    seconds directly (the common case, per record), anything else through ISO text."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) < 1e11:
        fraction, whole = math.modf(value)
        return int(whole) * 1_000_000 + round(fraction * 1e6)
    return epoch_micros(iso_timestamp(value))


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


# ---- whom the pass looks for, and what it found ------------------------------------------

@dataclass(frozen=True)
class VictimWatch:
    """A victim: when its first internet session began, and the times of the sources'
    alerts on it (µs); its own connections within the window after one of them are
    kept for stages 5-7."""

    start: int
    anchors: tuple[int, ...]


@dataclass
class Targets:
    sources: frozenset[str] = frozenset()
    victims: dict[str, VictimWatch] = field(default_factory=dict)


@dataclass
class EvidenceSet:
    """What the second pass found."""

    #: records of the sources (their connections and calls; host logs: either end)
    sources: list[Evidence] = field(default_factory=list)
    #: the victims' connections around the sources' alerts (victims numbered as ``victims``)
    later: LaterConnections = field(default_factory=lambda: LaterConnections(0, 0))
    victims: list[str] = field(default_factory=list)
    #: canonical address -> number, as ``later`` and the baselines number peers
    peers: dict[str, int] = field(default_factory=dict)
    #: processes started by execution hosts, services installed
    processes: list[Evidence] = field(default_factory=list)
    baselines: dict[str, VictimBaseline] = field(default_factory=dict)
    #: victim address -> Windows host names that logged its connections
    hosts: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    tables_seen: set[str] = field(default_factory=set)
    report: HuntReport | None = None
    #: limits the pass reached, each with what it means
    limits: list[str] = field(default_factory=list)

    def records(self) -> Iterator[Evidence]:
        """The records kept as objects: the sources' and the processes (not the victims' connections)."""
        yield from self.sources
        yield from self.processes

    @property
    def count(self) -> int:
        return len(self.sources) + len(self.later) + len(self.processes)

    def later_records(self, ids: np.ndarray) -> list[Evidence]:
        """Records of the victims' connections with the given ids (``later``)."""
        return [record for table, path, rows in self.later.rows(ids)
                for record in evidence_from_rows(VICTIM_CONNECTIONS, table, rows, path)]


class EvidencePass:
    """One streaming pass over the inputs for the given sources and victims."""

    def __init__(self, targets: Targets, config: Config, chain: Chain | None = None):
        self.targets = targets
        self.chain = chain or attack_chain()
        self.scope = AddressScope(config)
        self.victims = sorted(targets.victims)
        self._index = {address: number for number, address in enumerate(self.victims)}
        watches = [targets.victims[v] for v in self.victims]
        self._starts = np.array([w.start for w in watches], dtype=np.int64)
        self._anchors = _Anchors([w.anchors for w in watches], self.chain.window_micros + self.chain.execution_micros)
        self.contacts = ContactLog(self.victims, self._starts, self.chain.limits)
        self.found = EvidenceSet(later=LaterConnections(len(self.victims), self.chain.limits.candidates_per_victim),
                                 victims=self.victims)
        self._lateral = np.array(sorted(self.chain.lateral_ports), dtype=np.int64)
        self._addresses = _AddressBook(self._classify, self._classify_ipv4)

    # ---- the pass ------------------------------------------------------------------------
    def prefilter(self, enabled: bool = True) -> PrefilterPlan:
        """Which tables to parse, and the literals a line of each must hold."""
        addresses = address_literals([*self.targets.sources, *self.victims])
        bounded = addresses if len(addresses) <= MAX_PREFILTER_LITERALS else None
        by_table: dict[str, LiteralSet | None] = {}
        for info in known_tables():
            sets = ([bounded] if info.is_network else []) + ([self._host_literals()] if _has_host_events(info)
                                                                else [])
            if sets:
                known = [s for s in sets if s is not None]
                by_table[info.name] = frozenset().union(*known) if len(known) == len(sets) else None
        columns = {info.name: columns_read(info) for info in known_tables() if info.name in by_table}
        return PrefilterPlan(by_table, enabled=enabled, columns=columns)

    def _host_literals(self) -> LiteralSet:
        images = {image.rsplit("\\", 1)[-1].lower() for image in self.chain.execution_parent_images}
        words = {word.lower() for word in self.chain.execution_parent_command_lines}
        return frozenset({Literal(text) for text in images | words}
                         | {Literal(str(code), "number") for code in self.chain.service_install_codes})

    def run(self, inputs: list[InputFile], prefilter: bool = True,
            on_bytes: Callable[[int], None] | None = None) -> EvidenceSet:
        if not self.targets.sources:
            return self.found
        report = HuntReport()
        reading = LogReading(inputs, self.prefilter(prefilter), on_bytes)
        report.stats = reading.stats
        for batch in read_ahead(reading.batches()):
            self.add(batch.table, batch.data, batch.path)
        # the parsed batches are gone: give their memory back before the baselines are built
        pa.default_memory_pool().release_unused()
        report.finished = time.perf_counter()
        self.found.tables_seen = {table for stats in report.stats for table in stats.tables}
        return self.finish(report)

    def add(self, table: str, data: pa.Table, path: str | None = None) -> None:
        """One batch of a table."""
        info = table_info(table)
        if data.num_rows == 0:
            return
        if info.is_network:
            self._connections(info, data, path)
        if _has_host_events(info):
            self._host_events(info, data, path)

    def finish(self, report: HuntReport | None = None) -> EvidenceSet:
        found = self.found
        found.report = report
        found.baselines = self.contacts.baselines()
        found.limits += [f"{victim}: more than {self.chain.limits.contacts_per_victim:,} distinct peers; its "
                         "baseline is capped and its first contacts are not judged" for victim in self.contacts.capped]
        found.later.finish()
        found.peers = self._addresses.numbers
        found.limits += [f"{self.victims[number]}: more than {self.chain.limits.candidates_per_victim:,} connections "
                         "in the windows after the sources' alerts; the later ones were not kept"
                         for number in sorted(found.later.full)]
        if self.contacts.beacon_times_full:
            found.limits.append(f"more than {self.chain.limits.beacon_times:,} connection times of victims to "
                                "new internet hosts; later ones were not kept for the beacon test")
        return found

    # ---- connections -----------------------------------------------------------------------
    def _connections(self, info: TableInfo, data: pa.Table, path: str | None) -> None:
        size = data.num_rows
        client = self._addresses.column(_role(data, info, "source.ip"), size)
        server = self._addresses.column(_role(data, info, "destination.ip"), size)
        from_source = client.is_source | server.is_source if info.inbound else client.is_source
        if from_source.any():
            rows = data.filter(pa.array(from_source))
            self.found.sources.extend(evidence_from_rows(SOURCE_RECORDS, info.name, rows, path))
        victim = client.victim
        micros = _micros(_column(data, info.time), size)
        mine = (victim >= 0) & (_initiated_column(info, data) != 0) & (micros != _NO_TIME)
        if not mine.any():
            return
        self.contacts.add_records(victim[mine], micros[mine])
        if info.inbound:
            self._host_names(victim[mine], _role(data, info, "host.name"), mine)
        self._victims_contacts(info, data, path, client, server, mine, micros)

    def _victims_contacts(self, info: TableInfo, data: pa.Table, path: str | None, client: _Addresses,
                          server: _Addresses, mine: np.ndarray, micros: np.ndarray) -> None:
        """The victims' connections that make contacts: to other internal hosts on a lateral
        port or by RPC, or to the internet; those near an alert are kept as columns too."""
        port = _integers(_role(data, info, "destination.port"), data.num_rows)
        calls = _calls(info, data)
        lateral = np.isin(port, self._lateral)
        internal = server.internal(_column(data, info.locality.get("destination"))) & ~server.same_as(client)
        rpc = calls | _contains(_role(data, info, "network.protocol"), "dce_rpc")
        to_internet = server.scope == _INTERNET
        hop = mine & ((internal & (lateral | (_dynamic(port, self.chain) & rpc))) | to_internet)
        if not hop.any():
            return
        victim = client.victim
        contact_port = np.where(to_internet, ANY_PORT, np.where(lateral, port, DYNAMIC_RPC_PORT))
        sent = _role(data, info, "source.bytes")
        sent = np.full(data.num_rows, np.nan) if sent is None else \
            _integers_array(sent).cast(pa.float64()).to_numpy(zero_copy_only=False)
        self.contacts.add_contacts(victim[hop], server.number[hop], contact_port[hop], micros[hop], sent[hop])
        near = hop & self._anchors.near(victim, micros)
        if not near.any():
            return
        established = _established(info, data)
        moves = np.where(calls, self._executions(info, data),
                         established & _carried_data_not_none_false(info, data, calls))
        columns = {"victim": victim, "peer": server.number, "port": port, "contact": contact_port, "micros": micros,
                   "internet": to_internet, "recon": internal & (lateral | calls), "moves": moves,
                   "established": established}
        self.found.later.add(info.name, path, data.filter(pa.array(near)),
                             {name: columns[name][near] for name in LATER_COLUMNS})

    def _executions(self, info: TableInfo, data: pa.Table) -> np.ndarray:
        """Calls of a remote-execution operation (``chain.yml``)."""
        interface, operation = _role(data, info, "rpc.interface"), _role(data, info, "rpc.operation")
        if interface is None or operation is None:
            return np.zeros(data.num_rows, dtype=bool)
        pairs = pc.binary_join_element_wise(interface.cast(pa.string()), operation.cast(pa.string()), "\x00")
        wanted = pa.array(sorted(f"{i}\x00{o}" for i, ops in self.chain.execution_operations.items() for o in ops))
        return _filled(pc.is_in(pairs, value_set=wanted))

    def _host_names(self, victim: np.ndarray, hosts: pa.Array | None, rows: np.ndarray) -> None:
        """The computer that logged a victim's own connection is the victim."""
        if hosts is None:
            return
        pairs = pa.table({"victim": victim, "host": hosts.filter(pa.array(rows)).cast(pa.string())})
        pairs = pairs.group_by(["victim", "host"]).aggregate([])
        for number, host in zip(pairs.column("victim").to_pylist(), pairs.column("host").to_pylist()):
            if host:
                self.found.hosts[self.victims[number]].add(host)

    def _classify(self, text: str) -> tuple[str | None, int, bool, int]:
        """(canonical address, victim number or -1, is a source, scope) of one spelling."""
        parsed = parse_address(text)
        if parsed is None:
            return None, -1, False, 0
        address, scope = str(parsed), self.scope.of_address(parsed)
        return (address, self._index.get(address, -1), address in self.targets.sources,
                _INTERNAL if scope == "internal" else _INTERNET if scope == "internet" else 0)

    def _classify_ipv4(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_classify` for many IPv4 addresses in their canonical spelling: victim
        numbers, whether sources, scopes (without a Python object per address)."""
        victim = _filled_int(pc.index_in(texts, value_set=pa.array(self.victims, pa.string())), -1)
        source = _filled(pc.is_in(texts, value_set=pa.array(sorted(self.targets.sources), pa.string())))
        octets = pc.list_flatten(pc.split_pattern(texts, ".")).cast(pa.int64()).to_numpy().reshape(-1, 4)
        internal, non_routable = self.scope.of_ipv4(octets @ np.array([1 << 24, 1 << 16, 1 << 8, 1]))
        return victim, source, np.where(internal, _INTERNAL, np.where(non_routable, 0, _INTERNET))

    # ---- processes and services on the hosts -------------------------------------------------
    def _host_events(self, info: TableInfo, data: pa.Table, path: str | None) -> None:
        micros = _micros(_column(data, info.time), data.num_rows)
        keep = self._anchors.during(micros)
        started = np.zeros(data.num_rows, dtype=bool)
        parent = _role(data, info, "process.parent.executable")
        if parent is not None:
            lowered = pc.utf8_lower(parent.cast(pa.string()))
            for image in self.chain.execution_parent_images:
                started |= _filled(pc.ends_with(lowered, image.lower()))
        command = _role(data, info, "process.parent.command_line")
        if command is not None:
            for word in self.chain.execution_parent_command_lines:
                started |= _filled(pc.match_substring(command.cast(pa.string()), word, ignore_case=True))
        code = _role(data, info, "event.code")
        installed = np.zeros(data.num_rows, dtype=bool)
        if code is not None and info.has_role("host.name"):
            codes = pa.array(sorted(str(c) for c in self.chain.service_install_codes))
            installed = _filled(pc.is_in(code.cast(pa.string()), value_set=codes))
        for mask, search in ((started & keep, EXECUTION_PROCESSES), (installed & keep & ~started, SERVICE_INSTALLS)):
            if mask.any():
                self.found.processes.extend(evidence_from_rows(search, info.name, data.filter(pa.array(mask)), path))

#: an IPv4 address as Python's ipaddress writes it (no leading zeros, no blanks)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = rf"^(?:{_OCTET}\.){{3}}{_OCTET}$"
_NO_TIME = np.iinfo(np.int64).min
_NO_PORT = -3


class _Anchors:
    """Whether a victim's connection falls within ``slack`` after one of its anchors: one
    sorted array of keys (victim, time) searched for all rows of a batch at once."""

    def __init__(self, anchors: Sequence[Sequence[int]], slack: int):
        self.slack = slack
        times = [t for each in anchors for t in each]
        self.first, self.last = (min(times), max(times)) if times else (0, -1)
        self._span = self.last + slack - self.first + 2
        self._keys = np.sort(np.array([number * self._span + (t - self.first + 1) for number, each in
                                       enumerate(anchors) for t in each], dtype=np.int64))

    def during(self, micros: np.ndarray) -> np.ndarray:
        """Within ``slack`` after any anchor of any victim."""
        return (micros >= self.first) & (micros <= self.last + self.slack)

    def near(self, victim: np.ndarray, micros: np.ndarray) -> np.ndarray:
        inside = (victim >= 0) & self.during(micros)
        keys = np.where(inside, victim * self._span + (micros - self.first + 1), 0)
        at = np.searchsorted(self._keys, keys, side="right") - 1
        anchor = self._keys[np.maximum(at, 0)] if len(self._keys) else keys
        return inside & (at >= 0) & (anchor // self._span == victim) & (keys - anchor <= self.slack)


def _calls(info: TableInfo, data: pa.Table) -> np.ndarray:
    """Records of an RPC call (they name an operation or an interface)."""
    called = np.zeros(data.num_rows, dtype=bool)
    for role in ("rpc.operation", "rpc.interface"):
        values = _role(data, info, role)
        if values is not None:
            called |= ~np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool)
    return called


def _established(info: TableInfo, data: pa.Table) -> np.ndarray:
    """``event.outcome`` is ``established``, by the table's outcome mapping."""
    column = info.outcome.get("column")
    if column is None:
        return np.full(data.num_rows, outcome({}, info) == "established")
    values = _column(data, column)
    if values is None:
        return np.full(data.num_rows, outcome({}, info) == "established")
    encoded = pc.dictionary_encode(values.cast(pa.string()))
    verdicts = [outcome({column: value}, info) == "established" for value in encoded.dictionary.to_pylist()]
    return np.array(verdicts + [outcome({}, info) == "established"], dtype=bool)[
        _filled_int(encoded.indices.cast(pa.int64()), len(verdicts))]


def _carried_data_not_none_false(info: TableInfo, data: pa.Table, calls: np.ndarray) -> np.ndarray:
    """Payload both ways, or the log cannot tell (the record's ``carried_data`` is not False)."""
    sent, received = _role(data, info, "source.bytes"), _role(data, info, "destination.bytes")
    if sent is None or received is None:
        return np.ones(data.num_rows, dtype=bool)
    sent_n = _integers_array(sent).cast(pa.float64()).to_numpy(zero_copy_only=False)
    received_n = _integers_array(received).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return calls | np.isnan(sent_n) | np.isnan(received_n) | ((sent_n > 0) & (received_n > 0))


def read_ahead(batches: Iterator[TableBatch], depth: int = 2) -> Iterator[TableBatch]:
    """The batches, read on a thread of their own ``depth`` batches ahead: parsing (Arrow's
    CSV reader and compute kernels) and matching (numpy, Arrow) release the GIL for most of
    their time, so on two cores the next batch is parsed while this one is matched. The
    thread runs in the caller's run context (limits, worker pool); an error in it is
    raised here."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item: object) -> bool:
        """Put the item in the queue unless the consumer has stopped."""
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(produce,), name="rpcwatch-evidence-read", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _AddressBook:
    """Every distinct address spelling of the run, classified once: a batch's spellings are
    looked up in Arrow (a hash table of the known ones); only new ones reach Python. Each
    canonical address gets a number (``numbers``), the same for all its spellings."""

    #: the codes of an unset or unreadable value: no number, no victim, not a source, no scope
    UNSET = (-1, -1, 0, 0)

    def __init__(self, classify: Callable[[str], tuple[str | None, int, bool, int]],
                 classify_ipv4: Callable[[pa.Array], tuple[np.ndarray, np.ndarray, np.ndarray]]):
        self._classify, self._classify_ipv4 = classify, classify_ipv4
        self._known = pa.array([], pa.string())
        self.numbers: dict[str, int] = {}
        # per known spelling: canonical number (-1: not an address), victim number, is a source, scope;
        # the last row holds the codes of an unset value
        self._codes = np.array([self.UNSET], dtype=np.int64)

    def column(self, values: pa.Array | None, size: int) -> _Addresses:
        values = pa.nulls(size, pa.string()) if values is None else values.cast(pa.string())
        encoded = pc.dictionary_encode(values)
        spellings = encoded.dictionary
        positions = _filled_int(pc.index_in(spellings, value_set=self._known), -1)
        new = positions < 0
        if new.any():  # the new spellings take the next positions, in order
            positions[new] = len(self._codes) - 1 + np.arange(np.count_nonzero(new))
            self._learn(spellings.filter(pa.array(new)))
        unset = len(self._codes) - 1
        rows = _filled_int(encoded.indices.cast(pa.int64()), -1)
        at = np.where(rows < 0, unset, positions[np.maximum(rows, 0)]) if len(spellings) else \
            np.full(size, unset, dtype=np.int64)
        codes = self._codes[at]
        return _Addresses(codes[:, 0], codes[:, 1], codes[:, 2].astype(bool), codes[:, 3])

    def _learn(self, spellings: pa.Array) -> None:
        """Classify new spellings: IPv4 in its canonical spelling (most of a log's
        addresses) column-wise, any other spelling one by one through the exact parser."""
        codes = np.empty((len(spellings), 4), dtype=np.int64)
        canonical = _filled(pc.match_substring_regex(spellings, _CANONICAL_IPV4))
        if canonical.any():
            texts = spellings.filter(pa.array(canonical))
            victim, source, scope = self._classify_ipv4(texts)
            numbers = [self.numbers.setdefault(address, len(self.numbers)) for address in texts.to_pylist()]
            codes[canonical] = np.column_stack([numbers, victim, source, scope])
        others = ~canonical
        if others.any():
            classified = [self._classify(text) for text in spellings.filter(pa.array(others)).to_pylist()]
            codes[others] = [(-1 if address is None else self.numbers.setdefault(address, len(self.numbers)), *rest)
                             for address, *rest in classified]
        self._known = pa.concat_arrays([self._known, spellings])
        self._codes = np.vstack([self._codes[:-1], codes, [self.UNSET]])


@dataclass
class _Addresses:
    """One address column of a batch, per row: the canonical address's number (-1 if not
    an address), victim number (-1 if none), whether a source, scope."""

    number: np.ndarray
    victim: np.ndarray
    is_source: np.ndarray
    scope: np.ndarray

    def internal(self, sensor_local: pa.Array | None) -> np.ndarray:
        """Internal by the configured networks or by the sensor's own verdict."""
        internal = self.scope == _INTERNAL
        if sensor_local is not None and pa.types.is_boolean(sensor_local.type):
            internal |= _filled(sensor_local)
        return internal

    def same_as(self, other: _Addresses) -> np.ndarray:
        return (self.number == other.number) & (self.number >= 0)


def _column(data: pa.Table, name: str | None) -> pa.Array | None:
    return _role_of(data, (name,) if name else ())


def _role(data: pa.Table, info: TableInfo, role: str) -> pa.Array | None:
    """The values of a role (the first present column wins; empty text is unset)."""
    return _role_of(data, info.columns_of(role))


def _role_of(data: pa.Table, names: Sequence[str]) -> pa.Array | None:
    present = [_unset_empty(data.column(name).combine_chunks()) for name in names if name in data.column_names]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    if len({array.type for array in present}) > 1:
        present = [array.cast(pa.string()) for array in present]
    return pc.coalesce(*present)


def _unset_empty(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
    return values


def _initiated_column(info: TableInfo, data: pa.Table) -> np.ndarray:
    """1 when the logging host opened the connection, 0 when inbound, -1 when the log does not say."""
    verdict = np.full(data.num_rows, -1, dtype=np.int8)
    for name, inbound in info.inbound.items():
        if name not in data.column_names:
            continue
        text = pc.utf8_lower(pc.utf8_trim_whitespace(data.column(name).combine_chunks().cast(pa.string())))
        known = ~np.asarray(pc.is_null(text).to_numpy(zero_copy_only=False), dtype=bool)
        inbound_rows = _filled(pc.is_in(text, value_set=pa.array(sorted(inbound))))
        verdict = np.where((verdict == -1) & known, np.where(inbound_rows, 0, 1), verdict)
    return verdict


def _micros(values: pa.Array | None, size: int) -> np.ndarray:
    """Epoch microseconds of a time column (epoch seconds, timestamps or ISO-8601 text)."""
    if values is None:
        return np.full(size, _NO_TIME, dtype=np.int64)
    if pa.types.is_floating(values.type) or pa.types.is_integer(values.type):
        seconds = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        valid = np.isfinite(seconds) & (np.abs(seconds) < 1e11)
        return np.where(valid, np.round(np.where(valid, seconds, 0) * 1e6), _NO_TIME).astype(np.int64)
    if pa.types.is_timestamp(values.type):
        micros = values.cast(pa.timestamp("us")).cast(pa.int64())
        return _filled_int(micros, _NO_TIME)
    encoded = pc.dictionary_encode(values.cast(pa.string()))
    parsed = [epoch_micros(iso_timestamp(text)) for text in encoded.dictionary.to_pylist()]
    table = np.array([_NO_TIME if t is None else t for t in parsed] + [_NO_TIME], dtype=np.int64)
    indices = _filled_int(encoded.indices.cast(pa.int64()), len(table) - 1)
    return table[indices]


def _integers(values: pa.Array | None, size: int) -> np.ndarray:
    """Whole numbers of a column written as numbers or text; unset and unreadable as -3."""
    if values is None:
        return np.full(size, _NO_PORT, dtype=np.int64)
    return _filled_int(_integers_array(values), _NO_PORT)


def _integers_array(values: pa.Array) -> pa.Array:
    if pa.types.is_integer(values.type):
        return values.cast(pa.int64())
    if pa.types.is_floating(values.type):
        return values.cast(pa.int64(), safe=False)
    encoded = pc.dictionary_encode(values.cast(pa.string()))
    table = pa.array([_int(text) for text in encoded.dictionary.to_pylist()], pa.int64())
    return table.take(encoded.indices)


def _filled_int(values: pa.Array, fill: int) -> np.ndarray:
    return pc.fill_null(values, fill).to_numpy(zero_copy_only=False).astype(np.int64)


def _filled(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _contains(values: pa.Array | None, word: str) -> np.ndarray | bool:
    if values is None:
        return False
    if pa.types.is_list(values.type):
        values = pc.binary_join(values.cast(pa.list_(pa.string())), ",")
    return _filled(pc.match_substring(values.cast(pa.string()), word))


def _dynamic(ports: np.ndarray, chain: Chain) -> np.ndarray:
    dynamic = np.zeros(len(ports), dtype=bool)
    for lo, hi in chain.dynamic_ports:
        dynamic |= (ports >= lo) & (ports <= hi)
    return dynamic


def columns_read(info: TableInfo) -> frozenset[str]:
    """The columns of a table the evidence pass looks at: its time and record id, the
    columns of its roles, outcome, transport, direction and locality. Readers may leave the
    others out (at 8 M conn rows that is a third of parsing)."""
    named = [info.time, info.record_id, info.outcome.get("column"), info.transport,
             *info.inbound, *info.locality.values(), *(c for columns in info.roles.values() for c in columns)]
    return frozenset(name for name in named if name)


def _has_host_events(info: TableInfo) -> bool:
    return info.has_role("process.parent.executable") or (info.has_role("event.code") and info.has_role("host.name"))


def address_literals(addresses: Iterable[str]) -> LiteralSet:
    """Text that every line holding one of the addresses contains."""
    parsed = {a for a in map(parse_address, addresses) if a is not None}
    return frozenset(Literal(text.lower()) for address in parsed for text in address_spellings(address))


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
