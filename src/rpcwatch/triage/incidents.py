"""Incidents: each external source placed on the advisory's attack chain.

An incident gathers everything one internet source did to internal hosts, across every
input of the run (Zeek, pcap, Windows): the alerts and the second pass's evidence. Each
victim is taken as far along the chain as its evidence goes; the incident reaches the
highest stage of any victim. A stage lists its evidence (records with file, record id
and time) and what the inputs cannot show (``missing``). docs/triage.md has the rules.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rpcwatch.alerts import Alert, iso_from_micros
from rpcwatch.config import Config
from rpcwatch.schema import table_info
from rpcwatch.triage.chain import Chain, attack_chain
from rpcwatch.triage.evidence import Evidence, EvidenceSet, evidence_from_alert
from rpcwatch.triage.flows import Flow, canonical, flows_of, hosts_by_address
from rpcwatch.triage.risk import incident_risk, severity_of_stage
from rpcwatch.triage.scope import AddressScope

ALERT_SEARCH = "alerts"
#: evidence records listed per stage (the total is always given)
MAX_LISTED = 50


@dataclass
class StageFinding:
    number: int
    name: str
    brief: str
    summary: str = "not seen"
    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return bool(self.evidence)

    def to_dict(self) -> dict[str, Any]:
        listed = sorted(self.evidence, key=_time_order)[:MAX_LISTED]
        return {"stage": self.number, "name": self.name, "reached": self.reached, "summary": self.summary,
                "evidence_total": len(self.evidence), "evidence": [e.ref() for e in listed],
                "missing": self.missing}


@dataclass
class VictimProgress:
    address: str
    stage: int
    hosts: list[str]
    first_seen: str | None
    last_seen: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "stage": self.stage, "hosts": self.hosts,
                "first_seen": self.first_seen, "last_seen": self.last_seen}


@dataclass
class Incident:
    id: str
    source: str
    stage: int
    stage_name: str
    severity: str
    risk_score: int
    first_seen: str | None
    last_seen: str | None
    alerts: int
    rules: list[str]
    victims: list[VictimProgress]
    stages: list[StageFinding]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "stage": self.stage, "stage_name": self.stage_name,
                "severity": self.severity, "risk_score": self.risk_score, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "alerts": self.alerts, "rules": self.rules,
                "victims": [v.to_dict() for v in self.victims], "stages": [s.to_dict() for s in self.stages]}


def inbound_parties(alert: Alert, scope: AddressScope, chain: Chain) -> tuple[str, str] | None:
    """(external source, internal victim) of an alert about traffic from the internet, else None.
    Windows may log an inbound connection with the local host as ``source`` (port 135 there)."""
    source, destination = scope.of_endpoint(alert, "source"), scope.of_endpoint(alert, "destination")
    ips = canonical(alert.source_ip), canonical(alert.destination_ip)
    if ips[0] is None or ips[1] is None:
        return None
    if source == "internet" and destination == "internal":
        return ips[0], ips[1]
    if source == "internal" and destination == "internet" and alert.source_port == chain.rpc_port:
        return ips[1], ips[0]
    return None


def entities(alerts: Iterable[Alert], scope: AddressScope, chain: Chain | None = None) -> tuple[set[str], set[str]]:
    """The external sources of inbound alerts, and the victims they reached (established)."""
    chain = chain or attack_chain()
    sources, victims = set(), set()
    for alert in alerts:
        parties = inbound_parties(alert, scope, chain)
        if parties is None:
            continue
        sources.add(parties[0])
        if alert.outcome == "established":
            victims.add(parties[1])
    return sources, victims


class IncidentBuilder:
    def __init__(self, config: Config, alerts: list[Alert], evidence: EvidenceSet, chain: Chain | None = None):
        self.chain = chain or attack_chain()
        self.scope = AddressScope(config)
        self.tables = evidence.tables_seen
        self.alerts_by_source: dict[str, list[Alert]] = defaultdict(list)
        for alert in alerts:
            parties = inbound_parties(alert, self.scope, self.chain)
            if parties is not None:
                self.alerts_by_source[parties[0]].append(alert)
        # correlation alerts summarise records that are evidence on their own already
        records = _unique([evidence_from_alert(a, ALERT_SEARCH) for a in alerts if a.original is not None]
                          + [e for found in evidence.found.values() for e in found])
        self.flows = list(flows_of(records, set(self.alerts_by_source), self.scope))
        self.by_client: dict[str, list[Flow]] = defaultdict(list)
        for flow in self.flows:
            self.by_client[flow.client].append(flow)
        self.processes = [e for e in records if e.is_process]
        self.hosts = hosts_by_address(self.flows)

    def build(self) -> list[Incident]:
        incidents = [self._incident(source) for source in self.alerts_by_source]
        incidents.sort(key=lambda i: (-i.stage, -i.risk_score, i.first_seen or "", i.source))
        for number, incident in enumerate(incidents, 1):
            incident.id = f"INC-{number:04d}"
        return incidents

    # ---- one source ---------------------------------------------------------------------
    def _incident(self, source: str) -> Incident:
        findings = [StageFinding(s.number, s.name, s.brief) for s in self.chain.stages]
        inbound = [f for f in self.by_client[source] if f.server_scope == "internal"]
        victims = []
        for victim in sorted({f.server for f in inbound if self._is_contact(f)}):
            stage, times = self._victim(source, victim, [f for f in inbound if f.server == victim], findings)
            victims.append(VictimProgress(victim, stage, sorted(self.hosts.get(victim, ())),
                                          _iso(min(times, default=None)), _iso(max(times, default=None))))
        self._summarise(source, victims, findings)
        stage = max((f.number for f in findings if f.reached), default=1)
        alerts = self.alerts_by_source[source]
        times = [e.micros for f in findings for e in f.evidence if e.micros is not None]
        return Incident(
            id="", source=source, stage=stage, stage_name=self.chain.stage(stage).name,
            severity=severity_of_stage(stage),
            risk_score=incident_risk(stage, [a.risk_score or 0 for a in alerts]),
            first_seen=_iso(min(times, default=None)), last_seen=_iso(max(times, default=None)),
            alerts=len(alerts), rules=sorted({a.rule.name for a in alerts}),
            victims=victims, stages=findings)

    def _is_contact(self, flow: Flow) -> bool:
        return flow.server_port == self.chain.rpc_port or flow.is_rpc_call

    def _victim(self, source: str, victim: str, inbound: list[Flow],
                findings: list[StageFinding]) -> tuple[int, list[int]]:
        """Adds this victim's evidence to each stage; returns its stage and evidence times."""
        chain = self.chain
        to_mapper = [f for f in inbound if f.server_port == chain.rpc_port and f.evidence.transport in (None, "tcp")]
        probes = [f for f in to_mapper if not f.is_rpc_call]
        calls = [f for f in inbound if f.is_rpc_call]
        # connections prove a session; without conn.log an answered call to 135 does
        sessions = [f for f in probes if f.established] or [f for f in to_mapper if f.is_rpc_call]
        session_start = _first(sessions)
        follow_ons = [f for f in inbound if not f.is_rpc_call and f.established and chain.is_dynamic_port(f.server_port)
                      and session_start is not None and (f.micros or 0) >= session_start]
        start = _first(sessions + calls + follow_ons)
        outbound = [f for f in self.by_client.get(victim, ()) if _after(f, start)]
        recon = [f for f in outbound if f.server != victim and f.server_scope == "internal"
                 and (f.server_port in chain.lateral_ports or f.is_rpc_call)]
        earlier = {f.server for f in self.by_client.get(victim, ()) if not _after(f, start)}
        stages = {
            1: probes or sessions,
            2: sessions,
            3: calls + follow_ons,
            4: [f for f in calls if chain.is_execution(f.evidence.rpc_interface, f.evidence.rpc_operation)],
            5: recon,
            6: [f for f in recon if self._moves_laterally(f)],
            7: [f for f in outbound if f.server_scope == "internet" and (f.server == source or f.server not in earlier)],
        }
        records = {n: [f.evidence for f in flows] for n, flows in stages.items()}
        records[4] += self._execution_processes(victim, start)
        for finding in findings:
            finding.evidence.extend(records[finding.number])
        self._victim_missing(victim, start, findings)
        times = [e.micros for found in records.values() for e in found if e.micros is not None]
        return max((n for n, found in records.items() if found), default=1), times

    def _moves_laterally(self, flow: Flow) -> bool:
        """A session with data to another internal host, or remote execution called on it
        (other RPC calls from the victim, such as ept_lookup, are reconnaissance)."""
        record = flow.evidence
        if flow.is_rpc_call:
            return self.chain.is_execution(record.rpc_interface, record.rpc_operation)
        return flow.established and record.carried_data is not False

    def _execution_processes(self, victim: str, start: int | None) -> list[Evidence]:
        """Processes started by service, WMI or DCOM hosts on the victim shortly after the session."""
        hosts = {h.lower() for h in self.hosts.get(victim, ())}
        if start is None or not hosts:
            return []
        end = start + int(self.chain.execution_window * 1_000_000)
        return [e for e in self.processes if (e.host or "").lower() in hosts and e.micros is not None
                and start <= e.micros <= end and self.chain.is_execution_parent(e.parent_image, e.parent_command_line)]

    # ---- what the inputs cannot show ------------------------------------------------------
    def _victim_missing(self, victim: str, start: int | None, findings: list[StageFinding]) -> None:
        if start is None:
            return
        if _host_logs(self.tables) and not self.hosts.get(victim):
            _note(findings[3], f"no Windows event names the host of {victim}: processes started there "
                               "cannot be tied to it")
        if not self.by_client.get(victim):
            for finding in findings[4:]:
                _note(finding, f"no connection records from {victim} among the inputs: the sensor may not see "
                               "its own traffic (internal traffic is often not captured at the perimeter)")
        elif not any(not _after(f, start) for f in self.by_client[victim]):
            _note(findings[6], f"no records from {victim} before the inbound session: every external host it "
                               "contacted afterwards counts as new")

    def _summarise(self, source: str, victims: list[VictimProgress], findings: list[StageFinding]) -> None:
        tables, sessions = self.tables, any(v.stage >= 2 for v in victims)
        rpc = any(table_info(t).has_role("rpc.operation") for t in tables)
        conn = any(table_info(t).is_network and not table_info(t).has_role("rpc.operation")
                   and not table_info(t).inbound for t in tables)
        windows = _host_logs(tables)
        if not rpc:
            _note(findings[2], "no dce_rpc.log among the inputs: RPC negotiation (endpoint-mapper calls) "
                               "cannot be seen")
            _note(findings[3], "no dce_rpc.log among the inputs: remote-execution operations (svcctl, atsvc, "
                               "ITaskSchedulerService, IWbemServices, DCOM activation) cannot be seen")
        if not conn:
            _note(findings[2], "no conn.log among the inputs: follow-on connections to dynamic RPC ports "
                               "cannot be seen")
        if sessions and not windows:
            _note(findings[3], "no Windows event logs among the inputs: processes started by services.exe, "
                               "WmiPrvSE.exe or DcomLaunch on the victim cannot be seen")
        if sessions and not conn and not windows:
            for finding in findings[4:]:
                _note(finding, "no conn.log and no Windows network events among the inputs: the victim's "
                               "own connections cannot be seen")
        for finding in findings:
            finding.summary = _summary(finding, source, self.chain) if finding.reached else (
                "does not apply: no inbound session was established" if finding.number >= 4 and not sessions
                else "not seen")


def _summary(finding: StageFinding, source: str, chain: Chain) -> str:
    records = finding.evidence
    hosts = sorted({canonical(e.destination_ip) or "?" for e in records if not e.is_process})
    outcomes = Counter(e.outcome or "unknown" for e in records)
    listing = ", ".join(f"{n} {o}" for o, n in outcomes.most_common())
    if finding.number == 1:
        return f"TCP/{chain.rpc_port} attempted on {len(hosts)} internal host(s): {listing}"
    if finding.number == 2:
        return f"{len(records)} established session(s) to TCP/{chain.rpc_port} on {', '.join(hosts)}"
    if finding.number in (3, 4):
        calls = Counter(f"{e.rpc_interface} {e.rpc_operation}" for e in records if e.rpc_operation)
        others = [e for e in records if not e.rpc_operation]
        parts = [f"{n}x {call}" for call, n in calls.most_common(6)]
        if others and finding.number == 3:
            parts.append(f"{len(others)} follow-on connection(s) to dynamic RPC ports")
        if others and finding.number == 4:
            parts.append(f"{len(others)} process(es) started by a service, WMI or DCOM host: "
                         + ", ".join(sorted({e.image or '?' for e in others})[:3]))
        return "; ".join(parts)
    if finding.number in (5, 6):
        ports = sorted({e.destination_port for e in records if e.destination_port is not None})
        return f"{len(records)} connection(s) to {len(hosts)} other internal host(s) ({', '.join(hosts[:5])}) " \
               f"on port(s) {', '.join(map(str, ports))}"
    back = sum(1 for e in records if canonical(e.destination_ip) == source)
    return f"{back} connection(s) back to {source}; {len(hosts)} new external host(s): {', '.join(hosts[:5])}"


def _host_logs(tables: Iterable[str]) -> bool:
    """Whether the inputs hold a host's own logs (process starts, its connections either way)."""
    return any(table_info(t).has_role("process.parent.executable") or table_info(t).inbound for t in tables)


def _note(finding: StageFinding, text: str) -> None:
    if text not in finding.missing:
        finding.missing.append(text)


def _unique(records: list[Evidence]) -> list[Evidence]:
    return list({record.identity: record for record in records}.values())


def _first(flows: list[Flow]) -> int | None:
    return min((f.micros for f in flows if f.micros is not None), default=None)


def _after(flow: Flow, start: int | None) -> bool:
    return start is not None and flow.micros is not None and flow.micros >= start


def _time_order(evidence: Evidence) -> tuple:
    return (evidence.micros is None, evidence.micros or 0)


def _iso(micros: int | None) -> str | None:
    return None if micros is None else iso_from_micros(micros)
