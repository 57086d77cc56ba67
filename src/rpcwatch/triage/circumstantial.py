"""Stages 5-7 from what the victim did afterwards: circumstantial evidence, judged against
the victim's own ordinary day.

A victim's later connections never show by themselves that the intruder made them; they
count only when they are *new* for this host and *close in time* to the intrusion
(docs/triage.md, "Evidence strength"):

* **close in time**: within the window (1 h by default) after direct evidence of the
  source on the victim (its sessions, calls, the processes they started);
* **new**: a contact (an internal host and port, an internet host) the victim did not
  make before its first internet session (its *baseline*);
* **unusual for the host**: hosts meet new peers on an ordinary day too (a workstation
  browses), so first contacts count when the host's own usual rate of first contacts
  explains that many in the window with a probability below the significance level
  (one-sided Poisson test); a connection back to the source, and periodic connections to
  a new internet host (a beacon, scored as RITA does), count on their own.

When the baseline is too short to show the host's usual rate it is measured after the
window instead, and contacts the host keeps making after the window are taken as part
of its day. When neither is possible, first contacts count only after direct evidence of
RPC use (stage 3 or more). Every decision says why, in the stage's ``judgement``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rpcwatch.triage.baseline import ANY_PORT, DYNAMIC_RPC_PORT, ContactStats, VictimBaseline
from rpcwatch.triage.beacon import beacon_score
from rpcwatch.triage.chain import MICROS, Chain
from rpcwatch.triage.flows import Flow

HOUR = 3600 * MICROS


@dataclass
class Judgement:
    """The victim's later behaviour for one incident: what counts, for which stage, and why."""

    counted: dict[int, list[Flow]] = field(default_factory=lambda: {5: [], 6: [], 7: []})
    #: stage -> sentences saying why the victim's later records count or not
    reasons: dict[int, list[str]] = field(default_factory=lambda: {5: [], 6: [], 7: []})
    #: stage -> records in the window judged part of the host's ordinary day
    ordinary: dict[int, int] = field(default_factory=lambda: {5: 0, 6: 0, 7: 0})
    baseline_too_short: bool = False


@dataclass(frozen=True)
class _Reference:
    """Where a host's usual rate of first contacts is measured, and what it says."""

    since: int
    until: int
    where: str

    @property
    def hours(self) -> float:
        return (self.until - self.since) / HOUR

    def rate(self, baseline: VictimBaseline, internet: bool) -> tuple[float, int]:
        """First contacts per hour (one added, so that none seen is not a rate of zero), and the count."""
        usual = baseline.first_contacts(internet, self.since, self.until)
        return (usual + 1) / max(self.hours, 1e-9), usual


class BehaviourJudge:
    def __init__(self, chain: Chain):
        self.chain = chain
        self.settings = chain.circumstantial

    def judge(self, source: str, victim: str, baseline: VictimBaseline | None, windows: list[tuple[int, int]],
              later: list[Flow], direct_stage: int) -> Judgement:
        """``later``: the victim's connections from its first internet session on;
        ``windows``: the times after the source's direct evidence on the victim."""
        judgement = Judgement()
        in_window = [f for f in later if f.micros is not None and any(lo <= f.micros <= hi for lo, hi in windows)]
        internal = [f for f in in_window if f.server_scope == "internal" and f.server != victim
                    and (f.server_port in self.chain.lateral_ports or f.is_rpc_call)]
        internet = [f for f in in_window if f.server_scope == "internet"]
        if not internal and not internet:
            return judgement
        if baseline is None:
            baseline = VictimBaseline(victim, min(lo for lo, _ in windows), None, None, 0)
        end = max(hi for _, hi in windows)
        hours = sum(hi - lo for lo, hi in merged_windows(windows)) / HOUR
        short = self.too_short(baseline)
        judgement.baseline_too_short = short
        references = self._references(baseline, end, short)
        stats = baseline.stats({self._key(f) for f in internal + internet})
        context = _Context(baseline, stats, references, windows, hours, end, short, direct_stage, source)

        recon = self._judge_first_contacts(context, internal, internet=False, judgement=judgement)
        judgement.counted[5] = recon
        judgement.counted[6] = [f for f in recon if self._moves_laterally(f)]
        if recon and not judgement.counted[6]:
            judgement.reasons[6].append("none of them carried a session with data or a remote-execution call")
        judgement.counted[7] = self._judge_internet(context, internet, judgement)
        return judgement

    def too_short(self, baseline: VictimBaseline) -> bool:
        """Whether the baseline is too short to show the host's usual rate of first contacts."""
        return baseline.span < self.settings.baseline_minimum * MICROS

    # ---- first contacts ------------------------------------------------------------------
    def _judge_first_contacts(self, context: "_Context", flows: list[Flow], internet: bool,
                              judgement: Judgement) -> list[Flow]:
        stage, what = (7, "internet hosts") if internet else (5, "other internal hosts (lateral ports, RPC)")
        new = [f for f in flows if self._is_new(context, self._key(f))]
        judgement.ordinary[stage] += len(flows) - len(new)
        if not new:
            if flows:
                judgement.reasons[stage].append(
                    f"{len(flows)} connection(s) to {what} in the window went to peers the host had contacted "
                    "before its first internet session: its ordinary day")
            return []
        contacts = len({self._key(f) for f in new})
        seen = f"{contacts} first contact(s) with {what} within {_hours(context.hours)} after the direct evidence"
        if not context.references:
            if context.direct_stage >= 3:
                judgement.reasons[stage].append(
                    f"{seen}; no baseline or later traffic shows this host's usual rate, and the source used RPC "
                    f"on it directly (stage {context.direct_stage}): counted")
                return new
            judgement.ordinary[stage] += len(new)
            judgement.reasons[stage].append(
                f"{seen}; no baseline or later traffic shows this host's usual rate, and nothing but a session "
                "is direct: not counted")
            return []
        (rate, usual), reference = max(((reference.rate(context.baseline, internet), reference)
                                        for reference in context.references), key=lambda item: item[0][0])
        chance = poisson_tail(contacts, rate * context.hours)
        rate_text = (f"the host's usual rate is {rate:.2g} per hour ({usual} first contact(s) in "
                     f"{_hours(reference.hours)} {reference.where})")
        if chance < self.settings.significance:
            judgement.reasons[stage].append(f"{seen}; {rate_text}: unusual (p = {chance:.1g}), counted")
            return new
        judgement.ordinary[stage] += len(new)
        judgement.reasons[stage].append(f"{seen}; {rate_text}: ordinary for this host (p = {chance:.2g}), "
                                        "not counted")
        return []

    def _judge_internet(self, context: "_Context", flows: list[Flow], judgement: Judgement) -> list[Flow]:
        counted = self._judge_first_contacts(context, flows, internet=True, judgement=judgement)
        if counted:
            return counted
        by_peer: dict[str, list[Flow]] = {}
        for flow in flows:
            stats = context.stats.get(self._key(flow))
            first = stats.first if stats is not None else flow.micros
            if flow.server and first is not None and first >= context.baseline.start and \
                    any(lo <= first <= hi for lo, hi in context.windows):
                by_peer.setdefault(flow.server, []).append(flow)
        for peer, to_peer in sorted(by_peer.items()):
            if peer == context.source:
                counted += to_peer
                judgement.reasons[7].append(f"{len(to_peer)} connection(s) back to the source {peer}, "
                                            "which the host had not contacted before: counted")
                continue
            stats = context.stats.get((peer, ANY_PORT))
            if stats is None or stats.count < self.settings.beacon_connections:
                continue
            score = beacon_score(*context.baseline.connection_times(peer))
            if score is not None and score.score >= self.settings.beacon_score:
                counted += to_peer
                judgement.reasons[7].append(f"periodic connections to {peer}, first made in the window: "
                                            f"{score.describe()}: a beacon, counted")
        judgement.ordinary[7] -= len(counted)
        return counted

    def _is_new(self, context: "_Context", key: tuple[str, int]) -> bool:
        stats = context.stats.get(key)
        if stats is None:
            return True
        if stats.first < context.baseline.start:
            return False
        return not (context.short and self._recurs(stats, context.end))

    def _recurs(self, stats: ContactStats, end: int) -> bool:
        """A contact the host keeps making long after the window: one of its usual peers."""
        return stats.count >= self.settings.recurring_connections and \
            stats.last >= end + self.settings.recurring_after * MICROS

    def _references(self, baseline: VictimBaseline, end: int, short: bool) -> list["_Reference"]:
        """Where the host's usual rate of first contacts is measured: the later half of its
        baseline (the first half is the log warming up: everything is a first contact), and
        the time after the window (a day has busy hours and quiet ones); the higher rate
        is taken. A short baseline is not used."""
        references = []
        if not short:
            half = baseline.span // 2
            references.append(_Reference(baseline.start - half, baseline.start, "in the later half of its baseline"))
        last = baseline.last_record
        if last is not None and last - end >= self.settings.reference_minimum * MICROS:
            where = "after the window" + (" (the baseline is too short)" if short else "")
            references.append(_Reference(end, last, where))
        return references

    def _key(self, flow: Flow) -> tuple[str, int]:
        if flow.server_scope == "internet":
            return (flow.server or "", ANY_PORT)
        port = flow.server_port
        if port in self.chain.lateral_ports or port is None:
            return (flow.server or "", -3 if port is None else port)
        return (flow.server or "", DYNAMIC_RPC_PORT if self.chain.is_dynamic_port(port) else port)

    def _moves_laterally(self, flow: Flow) -> bool:
        """A session with data to another internal host, or remote execution called on it
        (other RPC calls from the victim, such as ept_lookup, are reconnaissance)."""
        record = flow.evidence
        if flow.is_rpc_call:
            return self.chain.is_execution(record.rpc_interface, record.rpc_operation)
        return flow.established and record.carried_data is not False


@dataclass(frozen=True)
class _Context:
    baseline: VictimBaseline
    stats: dict[tuple[str, int], ContactStats]
    references: list[_Reference]
    windows: list[tuple[int, int]]
    hours: float
    end: int
    short: bool
    direct_stage: int
    source: str


def poisson_tail(count: int, expected: float) -> float:
    """P(X >= count) for X ~ Poisson(expected)."""
    if count <= 0:
        return 1.0
    if expected <= 0:
        return 0.0
    term = total = math.exp(-expected)
    for index in range(1, count):
        term *= expected / index
        total += term
    return max(0.0, 1.0 - total)


def merged_windows(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping time ranges joined."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(windows):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _hours(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
