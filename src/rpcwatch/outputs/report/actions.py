"""The report's "what to do now": the hosts to isolate, investigate and harden, in that order.

* **Isolate**: a victim on which the source's own records show remote execution (stage 4
  direct): the intruder ran code there; take it off the network, then investigate.
* **Investigate**: a victim with RPC negotiated directly (stage 3), or whose later
  behaviour was unusual enough to count (circumstantial stages 5-7).
* **Harden**: every other host that accepted TCP/135 from the internet: close the port at
  the perimeter and review the RPC services it runs (the advisory's remedy).
Internet scanning that was refused or unanswered needs no action per scanner; the report
says so in one line, and names the targets of probes whose outcome the logs cannot show
(confirm TCP/135 is closed there).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rpcwatch.triage.run import TriageResult


@dataclass
class Action:
    verb: str
    host: str
    names: list[str]
    why: str
    finding: str | None = None
    sources: list[str] = field(default_factory=list)


def actions(result: TriageResult) -> dict:
    """``steps``: the actions in order; ``scanning``: the one line about scanning (or None)."""
    steps: list[Action] = []
    listed: set[str] = set()
    for verb, wanted in (("Isolate", _isolate), ("Investigate", _investigate)):
        for incident in result.incidents:
            for victim in incident.victims:
                why = wanted(incident, victim)
                if why and victim.address not in listed:
                    listed.add(victim.address)
                    steps.append(Action(verb, victim.address, victim.hosts, why, incident.id, [incident.source]))
    for host in result.exposure:
        if host.address not in listed:
            listed.add(host.address)
            sessions = sum(host.sources.values())
            steps.append(Action("Harden", host.address, host.hosts,
                                f"accepted {sessions} TCP/135 session(s) from {len(host.sources)} internet "
                                f"source(s) since {host.first_seen}: close TCP/135 at the perimeter and review "
                                "the RPC services it runs", sources=[a for a, _ in host.sources.most_common(3)]))
    return {"steps": [step.__dict__ for step in steps], "scanning": _scanning_line(result)}


def _scanning_line(result: TriageResult) -> str | None:
    if not result.scanning:
        return None
    unknown = [s for s in result.scanning if s.unknown_outcome]
    refused = sum(s.probes for s in result.scanning) - sum(s.unknown_outcome for s in unknown)
    sources = len({a for s in result.scanning for a in s.sources})
    line = (f"{refused:,} probe(s) of TCP/135 from {sources:,} internet source(s) on {len(result.scanning):,} "
            "target(s) were refused or unanswered: nothing to do per scanner; keep TCP/135 closed at the perimeter")
    if unknown:
        targets = ", ".join(s.target for s in unknown[:5]) + (f" and {len(unknown) - 5:,} more" if len(unknown) > 5
                                                               else "")
        line += (f". {sum(s.unknown_outcome for s in unknown):,} probe(s) have no outcome in the logs (they do "
                 f"not say whether the host answered): confirm TCP/135 is closed on {targets}")
    return line


def _isolate(incident, victim) -> str | None:
    if victim.direct_stage < 4:
        return None
    return (f"{incident.id}: {incident.source} executed code remotely (stage {victim.direct_stage}, direct)"
            + (f"; its later behaviour reaches stage {victim.stage}" if victim.stage > victim.direct_stage else "")
            + f"; block {incident.source}")


def _investigate(incident, victim) -> str | None:
    if victim.direct_stage == 3:
        return f"{incident.id}: {incident.source} negotiated RPC on it (stage 3, direct)"
    if victim.stage > victim.direct_stage:
        return (f"{incident.id}: after a session from {incident.source}, its own behaviour was unusual "
                f"(stage {victim.stage}, circumstantial; see the incident's judgement)")
    return None
