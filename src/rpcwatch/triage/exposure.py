"""Exposure inventory: internal hosts that accepted TCP/135 from the internet.

What the advisory's "review and harden systems that provide RPC services" needs: every
internal host with an established session to its endpoint mapper from an internet
source (probes that were refused or unanswered do not count), when, from whom, and the
records that show it.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rpcwatch.alerts import iso_from_micros
from rpcwatch.triage.chain import Chain, attack_chain
from rpcwatch.triage.evidence import Evidence
from rpcwatch.triage.flows import Flow

MAX_LISTED = 50


@dataclass
class ExposedHost:
    address: str
    hosts: list[str]
    first_seen: str | None
    last_seen: str | None
    #: internet sources with the number of accepted sessions (connections) from each
    sources: Counter
    evidence: list[Evidence]

    def to_dict(self) -> dict[str, Any]:
        listed = sorted(self.evidence, key=lambda e: (e.micros is None, e.micros or 0))[:MAX_LISTED]
        return {"address": self.address, "hosts": self.hosts, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "sessions": sum(self.sources.values()),
                "sources": [{"address": a, "sessions": n} for a, n in self.sources.most_common()],
                "evidence_total": len(self.evidence), "evidence": [e.ref() for e in listed]}


def exposure_inventory(flows: Iterable[Flow], hosts: Mapping[str, set[str]],
                       chain: Chain | None = None) -> list[ExposedHost]:
    chain = chain or attack_chain()
    accepted: dict[str, list[Flow]] = defaultdict(list)
    for flow in flows:
        if (flow.client_scope == "internet" and flow.server_scope == "internal"
                and flow.server_port == chain.rpc_port and flow.evidence.transport in (None, "tcp")
                and flow.established):
            accepted[flow.server].append(flow)
    inventory = []
    for address, sessions in accepted.items():
        times = [f.micros for f in sessions if f.micros is not None]
        inventory.append(ExposedHost(
            address=address, hosts=sorted(hosts.get(address, ())),
            first_seen=iso_from_micros(min(times)) if times else None,
            last_seen=iso_from_micros(max(times)) if times else None,
            sources=_sessions_per_source(sessions), evidence=[f.evidence for f in sessions]))
    inventory.sort(key=lambda h: (h.first_seen or "", h.address))
    return inventory


#: records of the same ports this close in time are one connection seen by several logs
SAME_SESSION_MICROS = 300 * 1_000_000


def _sessions_per_source(flows: list[Flow]) -> Counter:
    """Connections per source, however many records show each: Zeek's conn and dce_rpc
    records of a connection share its uid, and the victim's own log of it (Sysmon 3,
    Security 5156) has the same client port, within minutes. Records without ports or
    time count by record id."""
    sessions: Counter = Counter()
    by_ports: dict[tuple, list[Flow]] = defaultdict(list)
    counted: set[tuple] = set()
    for flow in flows:
        if flow.client_port is None or flow.micros is None:
            key = (flow.client, flow.evidence.record_id or id(flow))
            if key not in counted:
                counted.add(key)
                sessions[flow.client] += 1
        else:
            by_ports[(flow.client, flow.client_port, flow.server_port)].append(flow)
    for (client, _, _), same_ports in by_ports.items():
        same_ports.sort(key=lambda f: f.micros)
        ids: set = set()
        last = None
        for flow in same_ports:
            if last is None or (flow.micros - last > SAME_SESSION_MICROS and flow.evidence.record_id not in ids):
                sessions[client] += 1
                ids = set()
            ids.add(flow.evidence.record_id)
            last = flow.micros
    return sessions
