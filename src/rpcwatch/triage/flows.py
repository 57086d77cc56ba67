"""Records as client -> server flows, the one shape the attack chain reasons about.

A sensor's records are already oriented (Zeek's ``id.orig_h`` opened the connection). A
host's own network events are oriented by who logged them (``inbound`` in tables.yml): an
event the host initiated (Sysmon ``Initiated: true``, Security ``Direction: %%14593``) has
the host as its source; for an inbound event the producers disagree on which side is
``Source`` (reference §5.1.3), so the end that is a known external source is the client.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from rpcwatch.networks import parse_address
from rpcwatch.triage.evidence import Evidence
from rpcwatch.triage.scope import AddressScope

#: records of the same ports this close in time are one connection seen by several logs
SAME_CONNECTION_MICROS = 300 * 1_000_000


@lru_cache(maxsize=1 << 16)
def canonical(address: str | None) -> str | None:
    """One spelling per address (IPv6 case and compression, IPv4-mapped IPv6)."""
    if address is None:
        return None
    parsed = parse_address(address)
    return str(parsed) if parsed is not None else address


@dataclass(frozen=True)
class Flow:
    evidence: Evidence
    client: str
    server: str
    server_port: int | None
    client_scope: str
    server_scope: str
    client_port: int | None = None

    @property
    def micros(self) -> int | None:
        return self.evidence.micros

    @property
    def established(self) -> bool:
        return self.evidence.outcome == "established"

    @property
    def is_rpc_call(self) -> bool:
        return bool(self.evidence.rpc_operation or self.evidence.rpc_interface)


def flows_of(records: Iterable[Evidence], known_sources: Collection[str], scope: AddressScope) -> Iterator[Flow]:
    """Every record with two ends as a flow; process events and unaddressed records are left out."""
    for record in records:
        client, server = canonical(record.source_ip), canonical(record.destination_ip)
        client_port, server_port = record.source_port, record.destination_port
        if client is None or server is None:
            continue
        if record.initiated is False and server in known_sources and client not in known_sources:
            client, server = server, client
            client_port, server_port = server_port, client_port
        yield Flow(record, client, server, server_port,
                   scope.of(client, record.source_local), scope.of(server, record.destination_local), client_port)


def hosts_by_address(flows: Iterable[Flow]) -> dict[str, set[str]]:
    """Windows computer names by address: the host that logged an event is its local end."""
    hosts: dict[str, set[str]] = defaultdict(set)
    for flow in flows:
        record = flow.evidence
        if record.host and record.initiated is not None:
            hosts[flow.client if record.initiated else flow.server].add(record.host)
    return hosts


def connections(flows: Iterable[Flow]) -> list[list[Flow]]:
    """The flows grouped into connections, however many records show each: Zeek's conn
    and dce_rpc records of a connection share its uid and ports, and the victim's own log
    of it (Sysmon 3, Security 5156) has the same client port, within minutes. Records
    without ports or time are a connection each, by record id."""
    grouped: list[list[Flow]] = []
    alone: dict[tuple, list[Flow]] = {}
    by_ports: dict[tuple, list[Flow]] = defaultdict(list)
    for flow in flows:
        if flow.client_port is None or flow.micros is None:
            key = (flow.client, flow.server, flow.evidence.record_id or id(flow))
            if key not in alone:
                alone[key] = []
                grouped.append(alone[key])
            alone[key].append(flow)
        else:
            by_ports[(flow.client, flow.server, flow.client_port, flow.server_port)].append(flow)
    for same_ports in by_ports.values():
        same_ports.sort(key=lambda f: f.micros or 0)
        ids: set = set()
        last: int | None = None
        for flow in same_ports:
            micros = flow.micros or 0  # flows without a time were grouped alone above
            if last is None or (micros - last > SAME_CONNECTION_MICROS and flow.evidence.record_id not in ids):
                grouped.append([])
                ids = set()
            grouped[-1].append(flow)
            ids.add(flow.evidence.record_id)
            last = micros
    return grouped
