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
  browses), so first contacts count when the host's own usual rate of first contacts (its
  busiest hour) explains that many in the window with a probability below the
  significance level (one-sided Poisson test); a connection back to the source, and
  periodic connections to a new internet host (a beacon, scored as RITA does), count on
  their own.

When the baseline is too short to show the host's usual rate it is measured after the
window instead, and contacts the host keeps making after the window are taken as part
of its day. When neither is possible, first contacts count only after direct evidence of
RPC use (stage 3 or more). Every decision says why, in the stage's ``judgement``.

The victim's connections arrive as columns (``later.py``); the judgement returns the
ids of those that count.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rpcwatch.triage.baseline import ANY_PORT, ContactStats, VictimBaseline, contact_key
from rpcwatch.triage.beacon import beacon_score
from rpcwatch.triage.chain import MICROS, Chain
from rpcwatch.triage.later import LaterView

HOUR = 3600 * MICROS
_NONE = np.empty(0, dtype=np.int64)


@dataclass
class Judgement:
    """The victim's later behaviour for one incident: what counts, for which stage, and why."""

    #: stage -> ids of the victim's connections (``later.py``) that count
    counted: dict[int, np.ndarray] = field(default_factory=lambda: {5: _NONE, 6: _NONE, 7: _NONE})
    #: stage -> sentences saying why the victim's later records count or not
    reasons: dict[int, list[str]] = field(default_factory=lambda: {5: [], 6: [], 7: []})
    #: stage -> connections in the window judged part of the host's ordinary day
    ordinary: dict[int, int] = field(default_factory=lambda: {5: 0, 6: 0, 7: 0})


@dataclass(frozen=True)
class _Reference:
    """Where a host's usual rate of first contacts is measured."""

    since: int
    until: int
    where: str

    @property
    def hours(self) -> float:
        return (self.until - self.since) / HOUR

    def rate(self, baseline: VictimBaseline, internet: bool) -> tuple[float, int]:
        """First contacts per hour, and how many there were. The rate is that of the
        busiest whole hour, or the average with one added (so that none seen is not a rate
        of zero) where that is higher: a day has busy hours and quiet ones, and the window
        may fall in a busy one."""
        times = baseline.first_contacts(internet, self.since, self.until)
        hours = int(self.hours)
        busiest = int(np.bincount((times - self.since) // HOUR, minlength=1)[:hours].max()) if hours and len(times) \
            else 0
        return max(busiest, (len(times) + 1) / max(self.hours, 1e-9)), len(times)


@dataclass(frozen=True)
class _Case:
    """One victim of one incident."""

    source: int | None
    baseline: VictimBaseline
    stats: dict[tuple[int, int], ContactStats]
    references: list[_Reference]
    windows: list[tuple[int, int]]
    hours: float
    end: int
    short: bool
    direct_stage: int


class BehaviourJudge:
    def __init__(self, chain: Chain, names: Sequence[str]):
        """``names``: canonical address of each peer number."""
        self.chain = chain
        self.settings = chain.circumstantial
        self.names = names

    def too_short(self, baseline: VictimBaseline) -> bool:
        """Whether the baseline is too short to show the host's usual rate of first contacts."""
        return baseline.span < self.settings.baseline_minimum * MICROS

    def judge(self, source: int | None, baseline: VictimBaseline | None, windows: list[tuple[int, int]],
              later: LaterView | None, direct_stage: int) -> Judgement:
        """``source``: the source's peer number (None if the victim never contacted it);
        ``windows``: the times after the source's direct evidence on the victim;
        ``later``: the victim's kept connections."""
        judgement = Judgement()
        if baseline is None or later is None or not len(later):
            return judgement
        merged = merged_windows(windows)
        micros = later["micros"]
        inside = np.zeros(len(later), dtype=bool)
        for lo, hi in merged:
            inside |= (micros >= lo) & (micros <= hi)
        recon, internet = inside & later["recon"], inside & later["internet"]
        if not recon.any() and not internet.any():
            return judgement
        keys = set(zip(later["peer"][recon | internet].tolist(), later["contact"][recon | internet].tolist()))
        end = merged[-1][1]
        short = self.too_short(baseline)
        case = _Case(source, baseline, baseline.stats(keys), self._references(baseline, end, short), merged,
                     sum(hi - lo for lo, hi in merged) / HOUR, end, short, direct_stage)

        counted = self._first_contacts(case, later, recon, internet=False, judgement=judgement)
        judgement.counted[5] = later.ids[counted]
        judgement.counted[6] = later.ids[counted & later["moves"]]
        if counted.any() and not judgement.counted[6].size:
            judgement.reasons[6].append("none of them carried a session with data or a remote-execution call")
        judgement.counted[7] = later.ids[self._internet(case, later, internet, judgement)]
        return judgement

    # ---- first contacts ------------------------------------------------------------------
    def _first_contacts(self, case: _Case, later: LaterView, rows: np.ndarray, internet: bool,
                        judgement: Judgement) -> np.ndarray:
        """The rows that count, as a mask over ``later``."""
        stage, what = (7, "internet hosts") if internet else (5, "other internal hosts (lateral ports, RPC)")
        none = np.zeros(len(later), dtype=bool)
        if not rows.any():
            return none
        new = rows & self._new(case, later)
        judgement.ordinary[stage] += int(rows.sum() - new.sum())
        if not new.any():
            judgement.reasons[stage].append(
                f"{int(rows.sum())} connection(s) to {what} in the window went to peers the host had contacted "
                "before its first internet session: its ordinary day")
            return none
        contacts = len(set(zip(later["peer"][new].tolist(), later["contact"][new].tolist())))
        seen = f"{contacts} first contact(s) with {what} within {_hours(case.hours)} after the direct evidence"
        if not case.references:
            if case.direct_stage >= 3:
                judgement.reasons[stage].append(
                    f"{seen}; no baseline or later traffic shows this host's usual rate, and the source used RPC "
                    f"on it directly (stage {case.direct_stage}): counted")
                return new
            judgement.ordinary[stage] += int(new.sum())
            judgement.reasons[stage].append(
                f"{seen}; no baseline or later traffic shows this host's usual rate, and nothing but a session "
                "is direct: not counted")
            return none
        (rate, usual), reference = max(((reference.rate(case.baseline, internet), reference)
                                        for reference in case.references), key=lambda item: item[0][0])
        chance = poisson_tail(contacts, rate * case.hours)
        rate_text = (f"the host's usual rate is up to {rate:.2g} per hour ({usual} first contact(s) in "
                     f"{_hours(reference.hours)} {reference.where}, the busiest hour counted)")
        if chance < self.settings.significance:
            judgement.reasons[stage].append(f"{seen}; {rate_text}: unusual (p = {chance:.1g}), counted")
            return new
        judgement.ordinary[stage] += int(new.sum())
        judgement.reasons[stage].append(f"{seen}; {rate_text}: ordinary for this host (p = {chance:.2g}), "
                                        "not counted")
        return none

    def _internet(self, case: _Case, later: LaterView, rows: np.ndarray, judgement: Judgement) -> np.ndarray:
        """Internet contacts that count: many first contacts, a connection back to the
        source, or periodic connections to a host first contacted in the window."""
        counted = self._first_contacts(case, later, rows, internet=True, judgement=judgement)
        if counted.any():
            return counted
        for peer in sorted(set(later["peer"][rows].tolist())):
            stats = case.stats.get((peer, ANY_PORT))
            back = peer == case.source
            if not back and (stats is None or stats.count < self.settings.beacon_connections):
                continue  # neither the source nor enough connections for a beacon
            to_peer = rows & (later["peer"] == peer)
            first = stats.first if stats is not None else int(later["micros"][to_peer][0])
            if first < case.baseline.start or not any(lo <= first <= hi for lo, hi in case.windows):
                continue
            name = self.names[peer]
            if back:
                counted |= to_peer
                judgement.reasons[7].append(f"{int(to_peer.sum())} connection(s) back to the source {name}, "
                                            "which the host had not contacted before: counted")
                continue
            score = beacon_score(*case.baseline.connection_times(peer))
            if score is not None and score.score >= self.settings.beacon_score:
                counted |= to_peer
                judgement.reasons[7].append(f"periodic connections to {name}, first made in the window: "
                                            f"{score.describe()}: a beacon, counted")
        judgement.ordinary[7] -= int(counted.sum())
        return counted

    def _new(self, case: _Case, later: LaterView) -> np.ndarray:
        """Connections to contacts the baseline does not have (with a short baseline, not
        those the host keeps making long after the window either)."""
        recurring_after = case.end + self.settings.recurring_after * MICROS
        known = [key for key, stats in case.stats.items() if stats.first < case.baseline.start or (
            case.short and stats.count >= self.settings.recurring_connections and stats.last >= recurring_after)]
        if not known:
            return np.ones(len(later), dtype=bool)
        keys = np.array([contact_key(peer, port) for peer, port in known], dtype=np.int64)
        return ~np.isin(contact_key(later["peer"].astype(np.int64), later["contact"]), keys)

    def _references(self, baseline: VictimBaseline, end: int, short: bool) -> list[_Reference]:
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
    """Overlapping time ranges joined, in order."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(windows):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _hours(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
