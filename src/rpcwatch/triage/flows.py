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
    client: str | None
    server: str | None
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
