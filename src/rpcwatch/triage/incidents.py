"""Incidents: each internet source that got further than a probe, placed on the attack chain.

An incident gathers everything one internet source did to internal hosts, across every
input of the run (Zeek, pcap, Windows): the alerts and the evidence pass's records. It
is opened when a session was established or anything beyond stage 1 is direct; sources
whose probes were all refused or unanswered are folded into internet-scanning findings
(``scanning.py``).

Every piece of stage evidence has a strength. *Direct*: the record itself shows the stage
(the source's connection, its DCE/RPC operation, a process started by services.exe,
WmiPrvSE.exe or DcomLaunch on the victim right after the source's call, a service
installed then). *Circumstantial*: the victim did something afterwards; it counts for
stages 5-7 only when new for the victim and close in time (``circumstantial.py``).
Severity and risk follow the direct evidence. docs/triage.md has the rules.
"""
from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rpcwatch.alerts import Alert, iso_from_micros
from rpcwatch.config import Config
from rpcwatch.schema import table_info
from rpcwatch.triage.chain import Chain, attack_chain
from rpcwatch.triage.circumstantial import BehaviourJudge, Judgement
from rpcwatch.triage.evidence import Evidence, EvidenceSet, Targets, VictimWatch, evidence_from_alert
from rpcwatch.triage.flows import Flow, canonical, connections, flows_of, hosts_by_address
from rpcwatch.triage.risk import incident_risk, incident_severity
from rpcwatch.triage.scanning import ScanningFinding, fold_scanning
from rpcwatch.triage.scope import AddressScope

ALERT_SEARCH = "alerts"
DIRECT, CIRCUMSTANTIAL = "direct", "circumstantial"
#: evidence records listed per stage (the total is always given)
MAX_LISTED = 50


@dataclass
class StageFinding:
    number: int
    name: str
    brief: str
    summary: str = "not seen"
    direct: list[Evidence] = field(default_factory=list)
    circumstantial: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    #: why the victims' later records count for this stage or not (stages 5-7)
    judgement: list[str] = field(default_factory=list)
    #: the victims' records in the window judged part of their ordinary day
    ordinary: int = 0

    @property
    def evidence(self) -> list[Evidence]:
        return self.direct + self.circumstantial

    @property
    def reached(self) -> bool:
        return bool(self.direct or self.circumstantial)

    @property
    def strength(self) -> str | None:
        return DIRECT if self.direct else CIRCUMSTANTIAL if self.circumstantial else None

    def to_dict(self) -> dict[str, Any]:
        listed = sorted([(e, DIRECT) for e in self.direct] + [(e, CIRCUMSTANTIAL) for e in self.circumstantial],
                        key=lambda item: _time_order(item[0]))[:MAX_LISTED]
        return {"stage": self.number, "name": self.name, "reached": self.reached, "strength": self.strength,
                "summary": self.summary, "evidence_total": len(self.direct) + len(self.circumstantial),
                "evidence": [e.ref(strength) for e, strength in listed], "missing": self.missing,
                "judgement": self.judgement, "ordinary": self.ordinary}


@dataclass
class VictimProgress:
    address: str
    stage: int
    direct_stage: int
    hosts: list[str]
    first_seen: str | None
    last_seen: str | None
    baseline: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "stage": self.stage, "direct_stage": self.direct_stage,
                "hosts": self.hosts, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "baseline": self.baseline}


@dataclass
class Incident:
    id: str
    source: str
    stage: int
    stage_name: str
    #: the highest stage the direct evidence reaches (severity and risk follow it)
    direct_stage: int
    severity: str
    severity_reason: str
    risk_score: int
    first_seen: str | None
    last_seen: str | None
    alerts: int
    rules: list[str]
    victims: list[VictimProgress]
    stages: list[StageFinding]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "incident", "id": self.id, "source": self.source, "stage": self.stage,
                "stage_name": self.stage_name, "direct_stage": self.direct_stage, "severity": self.severity,
                "severity_reason": self.severity_reason, "risk_score": self.risk_score,
                "first_seen": self.first_seen, "last_seen": self.last_seen, "alerts": self.alerts,
                "rules": self.rules, "victims": [v.to_dict() for v in self.victims],
                "stages": [s.to_dict() for s in self.stages]}


@dataclass
class Findings:
    """What triage makes of a run: incidents, and the internet scanning folded per target."""

    incidents: list[Incident] = field(default_factory=list)
    scanning: list[ScanningFinding] = field(default_factory=list)


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


def targets_of(alerts: Iterable[Alert], scope: AddressScope, chain: Chain | None = None) -> Targets:
    """The internet sources of inbound alerts, and the victims they reached (an established
    session or an answered call): when each victim's first internet session began, and
    the times of those alerts, after which its own connections can matter."""
    chain = chain or attack_chain()
    sources: set[str] = set()
    sessions: dict[str, set[int]] = defaultdict(set)
    for alert in alerts:
        parties = inbound_parties(alert, scope, chain)
        if parties is None:
            continue
        sources.add(parties[0])
        if alert.outcome == "established" and alert.micros is not None:
            sessions[parties[1]].add(alert.micros)
    return Targets(frozenset(sources), {victim: VictimWatch(min(times), tuple(sorted(times)))
                                        for victim, times in sessions.items()})


class IncidentBuilder:
    def __init__(self, config: Config, alerts: list[Alert], evidence: EvidenceSet, chain: Chain | None = None):
        self.chain = chain or attack_chain()
        self.config = config
        self.scope = AddressScope(config)
        self.tables = evidence.tables_seen
        self.evidence = evidence
        self.baselines = evidence.baselines
        self.victim_numbers = {victim: number for number, victim in enumerate(evidence.victims)}
        names = [""] * len(evidence.peers)
        for address, number in evidence.peers.items():
            names[number] = address
        self.judge = BehaviourJudge(self.chain, names)
        self.alerts_by_source: dict[str, list[Alert]] = defaultdict(list)
        inbound: set[str] = set()
        for alert in alerts:
            parties = inbound_parties(alert, self.scope, self.chain)
            if parties is not None:
                inbound.add(parties[0])
                self.alerts_by_source[parties[0]].append(alert)
        for alert in alerts:  # correlations name the source alone
            named = canonical(alert.source_ip)
            if alert.correlation is not None and named is not None and named in inbound:
                self.alerts_by_source[named].append(alert)
        # correlation alerts summarise records that are evidence on their own already
        records = _unique([evidence_from_alert(a, ALERT_SEARCH) for a in alerts if a.original is not None]
                          + list(evidence.records()))
        self.flows = list(flows_of(records, inbound, self.scope))
        self.by_client: dict[str, list[Flow]] = defaultdict(list)
        for flow in self.flows:
            self.by_client[flow.client].append(flow)
        self.processes = sorted((e for e in records if e.is_process or self._is_service_install(e)),
                                key=_time_order)
        self.hosts = hosts_by_address(self.flows)
        for victim, host_names in evidence.hosts.items():
            self.hosts.setdefault(victim, set()).update(host_names)

    def build(self) -> Findings:
        incidents, probes = [], []
        for source in self.alerts_by_source:
            incident = self._incident(source)
            if incident is None:
                probes += [(source, f) for f in self.by_client[source] if self._is_probe(f)]
            else:
                incidents.append(incident)
        incidents.sort(key=lambda i: (-i.direct_stage, -i.stage, -i.risk_score, i.first_seen or "", i.source))
        for number, incident in enumerate(incidents, 1):
            incident.id = f"INC-{number:04d}"
        return Findings(incidents, fold_scanning(probes, self.alerts_by_source, self.config))

    # ---- one source ---------------------------------------------------------------------
    def _incident(self, source: str) -> Incident | None:
        """The source's incident, or None when all it did was probe."""
        findings = [StageFinding(s.number, s.name, s.brief) for s in self.chain.stages]
        inbound = [f for f in self.by_client[source] if f.server_scope == "internal"]
        direct = {victim: self._direct(victim, [f for f in inbound if f.server == victim])
                  for victim in sorted({f.server for f in inbound if self._is_contact(f)})}
        if not any(found.stage >= 2 for found in direct.values()):
            return None
        victims = []
        for victim, found in direct.items():
            judgement = self._judge(source, victim, found)
            victims.append(self._progress(victim, found, judgement, findings))
        self._summarise(source, findings)
        direct_stage = max(v.direct_stage for v in victims)
        stage = max(v.stage for v in victims)
        alerts = self.alerts_by_source[source]
        times = [e.micros for f in findings for e in f.evidence if e.micros is not None]
        return Incident(
            id="", source=source, stage=stage, stage_name=self.chain.stage(stage).name, direct_stage=direct_stage,
            severity=incident_severity(direct_stage, stage),
            severity_reason=self._severity_reason(direct_stage, stage),
            risk_score=incident_risk(direct_stage, stage),
            first_seen=_iso(min(times, default=None)), last_seen=_iso(max(times, default=None)),
            alerts=len(alerts), rules=sorted({a.rule.name for a in alerts}), victims=victims, stages=findings)

    def _is_contact(self, flow: Flow) -> bool:
        return flow.server_port == self.chain.rpc_port or flow.is_rpc_call

    def _is_probe(self, flow: Flow) -> bool:
        return flow.server_scope == "internal" and flow.server_port == self.chain.rpc_port and \
            flow.evidence.transport in (None, "tcp")

    def _direct(self, victim: str, inbound: list[Flow]) -> _Direct:
        """The stages the source's own records show on one victim."""
        chain = self.chain
        to_mapper = [f for f in inbound if f.server_port == chain.rpc_port and f.evidence.transport in (None, "tcp")]
        probes = [f for f in to_mapper if not f.is_rpc_call]
        calls = [f for f in inbound if f.is_rpc_call]
        # connections prove a session; without conn.log an answered call to 135 does
        sessions = [f for f in probes if f.established] or [f for f in to_mapper if f.is_rpc_call]
        session_start = _first(sessions)
        follow_ons = [f for f in inbound if not f.is_rpc_call and f.established and chain.is_dynamic_port(f.server_port)
                      and session_start is not None and (f.micros or 0) >= session_start]
        contacts = sorted(f.micros for f in sessions + calls + follow_ons if f.micros is not None)
        stages = {1: [f.evidence for f in probes or sessions], 2: [f.evidence for f in sessions],
                  3: [f.evidence for f in calls + follow_ons],
                  4: [f.evidence for f in calls if chain.is_execution(f.evidence.rpc_interface,
                                                                      f.evidence.rpc_operation)]
                  + self._started_after(victim, contacts)}
        return _Direct(stages, contacts)

    def _started_after(self, victim: str, contacts: list[int]) -> list[Evidence]:
        """Processes started by a service, WMI or DCOM host on the victim, and services
        installed there, within the execution window after a session or call of the source."""
        hosts = {h.lower() for h in self.hosts.get(victim, ())}
        if not contacts or not hosts:
            return []
        window = self.chain.execution_micros
        found = []
        for record in self.processes:
            if (record.host or "").lower() not in hosts or record.micros is None:
                continue
            before = bisect.bisect_right(contacts, record.micros)
            if before and record.micros - contacts[before - 1] <= window and (
                    self._is_service_install(record)
                    or self.chain.is_execution_parent(record.parent_image, record.parent_command_line)):
                found.append(record)
        return found

    def _is_service_install(self, record: Evidence) -> bool:
        return record.event_code in self.chain.service_install_codes and record.source_ip is None \
            and record.parent_image is None

    def _judge(self, source: str, victim: str, found: _Direct) -> Judgement:
        """The victim's later behaviour, judged against its baseline (``circumstantial.py``)."""
        number = self.victim_numbers.get(victim)
        if found.stage < 2 or not found.times or number is None:
            return Judgement()
        window = self.chain.window_micros
        anchors = found.times + [e.micros for e in found.stages[4] if e.micros is not None]
        return self.judge.judge(self.evidence.peers.get(source), self.baselines.get(victim),
                                [(t, t + window) for t in anchors], self.evidence.later.of(number), found.stage)

    def _progress(self, victim: str, found: _Direct, judgement: Judgement,
                  findings: list[StageFinding]) -> VictimProgress:
        """Adds this victim's evidence to each stage; returns its progress."""
        for number, records in found.stages.items():
            findings[number - 1].direct.extend(records)
        for number in (5, 6, 7):
            findings[number - 1].circumstantial.extend(self.evidence.later_records(judgement.counted[number]))
            findings[number - 1].judgement += [f"{victim}: {reason}" for reason in judgement.reasons[number]]
            findings[number - 1].ordinary += judgement.ordinary[number]
        stage = max([found.stage] + [n for n in (5, 6, 7) if judgement.counted[n].size])
        self._victim_missing(victim, found, findings)
        baseline = self.baselines.get(victim)
        times = [e.micros for records in found.stages.values() for e in records if e.micros is not None]
        times += [int(t) for ids in judgement.counted.values() for t in self.evidence.later.micros(ids)]
        return VictimProgress(victim, stage, found.stage, sorted(self.hosts.get(victim, ())),
                              _iso(min(times, default=None)), _iso(max(times, default=None)),
                              baseline.to_dict(self.judge.too_short(baseline)) if baseline is not None else None)

    def _severity_reason(self, direct_stage: int, stage: int) -> str:
        name = self.chain.stage(direct_stage).name.lower()
        reason = f"{incident_severity(direct_stage, direct_stage)}: the source's own records show stage " \
                 f"{direct_stage} ({name}) directly"
        if stage > direct_stage:
            reason += (f"; stage {stage} rests on circumstantial evidence only (what the victim did afterwards), "
                       "which raises severity to at most medium")
        return reason

    # ---- what the inputs cannot show ------------------------------------------------------
    def _victim_missing(self, victim: str, found: _Direct, findings: list[StageFinding]) -> None:
        if found.stage < 2:
            return
        if _host_logs(self.tables) and not self.hosts.get(victim):
            _note(findings[3], f"no Windows event names the host of {victim}: processes started there "
                               "cannot be tied to it")
        baseline = self.baselines.get(victim)
        if baseline is None or baseline.first_record is None:
            for finding in findings[4:]:
                _note(finding, f"no connection records from {victim} among the inputs: the sensor may not see "
                               "its own traffic (internal traffic is often not captured at the perimeter)")

    def _summarise(self, source: str, findings: list[StageFinding]) -> None:
        tables = self.tables
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
        if not windows:
            _note(findings[3], "no Windows event logs among the inputs: processes started by services.exe, "
                               "WmiPrvSE.exe or DcomLaunch on the victim cannot be seen")
        if not conn and not windows:
            for finding in findings[4:]:
                _note(finding, "no conn.log and no Windows network events among the inputs: the victim's "
                               "own connections cannot be seen")
        for finding in findings:
            finding.summary = _summary(finding, source, self.chain) if finding.reached else "not seen"
            if not finding.reached and finding.ordinary:
                finding.summary = f"not seen: {finding.ordinary} later connection(s) of the victim judged ordinary"


@dataclass
class _Direct:
    stages: dict[int, list[Evidence]]
    #: times of the source's sessions and calls on the victim (µs, sorted)
    times: list[int]

    @property
    def stage(self) -> int:
        return max((n for n, found in self.stages.items() if found), default=1)


def _summary(finding: StageFinding, source: str, chain: Chain) -> str:
    records = finding.evidence
    hosts = sorted({_victim_end(e, source) for e in records if not e.is_process and e.destination_ip})
    if finding.number == 1:
        outcomes = Counter(e.outcome or "unknown" for e in _one_per_connection(records, source))
        listing = ", ".join(f"{n} {o}" for o, n in outcomes.most_common())
        return f"TCP/{chain.rpc_port} attempted on {len(hosts)} internal host(s): {listing}"
    if finding.number == 2:
        sessions = len(_one_per_connection(records, source))
        return f"{sessions} established session(s) to TCP/{chain.rpc_port} on {', '.join(hosts)}"
    if finding.number in (3, 4):
        calls = Counter(f"{e.rpc_interface} {e.rpc_operation}" for e in records if e.rpc_operation)
        others = [e for e in records if not e.rpc_operation]
        parts = [f"{n}x {call}" for call, n in calls.most_common(6)]
        if others and finding.number == 3:
            parts.append(f"{len(_one_per_connection(others, source))} follow-on connection(s) to dynamic RPC ports")
        if others and finding.number == 4:
            processes = [e for e in others if e.is_process]
            if processes:
                parts.append(f"{len(processes)} process(es) started by a service, WMI or DCOM host: "
                             + ", ".join(sorted({e.image or '?' for e in processes})[:3]))
            if len(processes) < len(others):
                parts.append(f"{len(others) - len(processes)} service(s) installed (event "
                             + ", ".join(sorted({str(e.event_code) for e in others if not e.is_process})) + ")")
        return "; ".join(parts)
    hosts = sorted({canonical(e.destination_ip) or "?" for e in records if e.destination_ip})
    if finding.number in (5, 6):
        ports = sorted({e.destination_port for e in records if e.destination_port is not None})
        return f"{len(records)} connection(s) to {len(hosts)} other internal host(s) ({', '.join(hosts[:5])}) " \
               f"on port(s) {', '.join(map(str, ports))}"
    back = sum(1 for e in records if canonical(e.destination_ip) == source)
    return f"{back} connection(s) back to {source}; {len(hosts)} new external host(s): {', '.join(hosts[:5])}"


def _one_per_connection(records: list[Evidence], source: str) -> list[Evidence]:
    """One record per connection of the source (a connection seen by Zeek and by Sysmon is
    one), the established one where there is one."""
    flows = [Flow(e, source, canonical(e.source_ip) or "", e.source_port, "", "", e.destination_port)
             if canonical(e.destination_ip) == source else
             Flow(e, canonical(e.source_ip) or "", canonical(e.destination_ip) or "", e.destination_port, "", "",
                  e.source_port)
             for e in records]
    return [next((f.evidence for f in group if f.established), group[0].evidence) for group in connections(flows)]


def _victim_end(record: Evidence, source: str) -> str:
    """The end of a record that is not the source (host logs may name either way round)."""
    destination = canonical(record.destination_ip) or "?"
    return canonical(record.source_ip) or "?" if destination == source else destination


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


def _time_order(evidence: Evidence) -> tuple:
    return (evidence.micros is None, evidence.micros or 0)


def _iso(micros: int | None) -> str | None:
    return None if micros is None else iso_from_micros(micros)
