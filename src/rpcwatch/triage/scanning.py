"""Internet scanning: refused and unanswered probes folded into one finding per target.

A source whose TCP/135 attempts were all refused or unanswered, and that did nothing else
the logs show directly, is the internet's background noise; the analyst needs to know
that (and how much) the hosts are scanned, not to read one incident per scanner. A log
that cannot tell whether the host answered (a packet log, a flow record without a state)
leaves a probe's outcome unknown: it is folded too, and counted apart. Probes
are folded per target: a host, or when several hosts of one network were probed, the
smallest network on an octet boundary (IPv4 /24, /16, /8; IPv6 /64, /48, /32) that covers
them within the configured internal network they belong to (or, for hosts that only the
sensor calls local, within their /16 or /48).
"""
from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rpcwatch.alerts import Alert, iso_from_micros
from rpcwatch.config import Config
from rpcwatch.triage.evidence import Evidence
from rpcwatch.triage.flows import Flow, connections

MAX_LISTED = 50
#: outcomes that show the host refused a probe or never answered it
REFUSED = frozenset({"rejected", "no-reply", "blocked"})
TOP_SOURCES = 10
_PREFIXES = {4: (32, 24, 16, 8), 6: (128, 64, 48, 32)}
_SENSOR_LOCAL_GROUP = {4: 16, 6: 48}


@dataclass
class ScanningFinding:
    id: str
    #: the probed host, or the network that covers the probed hosts
    target: str
    #: probed host -> probes
    hosts: Counter
    #: source -> probes
    sources: Counter
    outcomes: Counter
    first_seen: str | None
    last_seen: str | None
    rules: list[str]
    alerts: int
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def probes(self) -> int:
        return sum(self.sources.values())

    @property
    def unknown_outcome(self) -> int:
        """Probes the logs do not show refused or unanswered (they cannot say either way)."""
        return sum(n for outcome, n in self.outcomes.items() if outcome not in REFUSED)

    def to_dict(self) -> dict[str, Any]:
        listed = sorted(self.evidence, key=lambda e: (e.micros is None, e.micros or 0))[:MAX_LISTED]
        return {"kind": "scanning", "id": self.id, "target": self.target, "probes": self.probes,
                "outcomes": dict(self.outcomes.most_common()), "unknown_outcome": self.unknown_outcome,
                "hosts": len(self.hosts),
                "probed_hosts": [{"address": a, "probes": n} for a, n in _ranked(self.hosts)[:TOP_SOURCES]],
                "sources": len(self.sources),
                "top_sources": [{"address": a, "probes": n} for a, n in _ranked(self.sources)[:TOP_SOURCES]],
                "source_addresses": [a for a, _ in _ranked(self.sources)],
                "first_seen": self.first_seen, "last_seen": self.last_seen, "rules": self.rules,
                "alerts": self.alerts, "evidence_total": len(self.evidence),
                "evidence": [e.ref("direct") for e in listed]}

    @property
    def summary(self) -> str:
        outcomes = ", ".join(f"{n} {o}" for o, n in self.outcomes.most_common())
        hosts = "" if len(self.hosts) == 1 else f" on {len(self.hosts)} hosts"
        return f"{self.probes} probe(s) of TCP/135{hosts} from {len(self.sources)} source(s): {outcomes}"


def fold_scanning(probes: Iterable[tuple[str, Flow]], alerts_by_source: dict[str, list[Alert]],
                  config: Config) -> list[ScanningFinding]:
    """``probes``: (source, flow) of the sources that opened no incident."""
    groups: dict[str, list[Flow]] = defaultdict(list)
    for _, flow in probes:
        if flow.server is not None:
            groups[_group_of(flow.server, config)].append(flow)
    findings = []
    for group, flows in groups.items():
        probed = [group_flows for group_flows in connections(flows)]
        hosts = Counter(group_flows[0].server for group_flows in probed)
        sources = Counter(group_flows[0].client for group_flows in probed)
        outcomes = Counter(_outcome(group_flows) for group_flows in probed)
        times = [f.micros for f in flows if f.micros is not None]
        alerts = [a for source in sources for a in alerts_by_source.get(source, ())]
        findings.append(ScanningFinding(
            id="", target=_target(list(hosts), group), hosts=hosts, sources=sources, outcomes=outcomes,
            first_seen=iso_from_micros(min(times)) if times else None,
            last_seen=iso_from_micros(max(times)) if times else None,
            rules=sorted({a.rule.name for a in alerts}), alerts=len(alerts),
            evidence=list({f.evidence.identity: f.evidence for f in flows}.values())))
    findings.sort(key=lambda f: (-f.probes, f.target))
    for number, finding in enumerate(findings, 1):
        finding.id = f"SCAN-{number:04d}"
    return findings


def _outcome(records: list[Flow]) -> str:
    """A connection seen by several records: established if any says so, else the first's."""
    outcomes = [f.evidence.outcome or "unknown" for f in records]
    return "established" if "established" in outcomes else outcomes[0]


def _group_of(address: str, config: Config) -> str:
    """The configured internal network holding the address, else its /16 (/48)."""
    parsed = ipaddress.ip_address(address)
    for network in config.internal.networks:
        if parsed.version == network.version and parsed in network:
            return str(network)
    return str(ipaddress.ip_network(f"{address}/{_SENSOR_LOCAL_GROUP[parsed.version]}", strict=False))


def _target(hosts: list[str], group: str) -> str:
    """The host itself, or the smallest octet-aligned network covering all of them within the group."""
    if len(hosts) == 1:
        return hosts[0]
    limit = ipaddress.ip_network(group)
    parsed = [ipaddress.ip_address(h) for h in hosts]
    for prefix in _PREFIXES[limit.version][1:]:
        if prefix < limit.prefixlen:
            break
        networks = {ipaddress.ip_network(f"{a}/{prefix}", strict=False) for a in parsed}
        if len(networks) == 1:
            return str(networks.pop())
    return str(limit)


def _ranked(counts: Counter) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
