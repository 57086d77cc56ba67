"""Risk scores (0-100) and severities: one formula for alerts, one for incidents (docs/triage.md).

An alert starts from its rule's level and moves with what happened: a refused or
unanswered attempt shows exposure was tried and failed; an established session, and more
so one that carried data both ways or an answered RPC call, shows the service answered
the internet. An incident's severity and risk follow the stage its *direct* evidence
reaches; stages reached only by circumstantial evidence (what the victim did afterwards)
raise them to at most "medium".
"""
from __future__ import annotations

LEVEL_BASE = {"informational": 10, "low": 25, "medium": 45, "high": 65, "critical": 85}
#: level of a rule that names none (Sigma's level is optional)
DEFAULT_BASE = 45
OUTCOME_ADJUSTMENT = {"rejected": -30, "no-reply": -30, "blocked": -30, "established": 10}
#: an established session with payload both ways, or an RPC call that was answered
DATA_BONUS = 10
#: an incident's score at each stage of the attack chain its direct evidence reaches
STAGE_RISK = {1: 30, 2: 50, 3: 70, 4: 85, 5: 90, 6: 95, 7: 100}
SEVERITIES = ("low", "medium", "high", "critical")
#: the most that circumstantial evidence raises an incident to
CIRCUMSTANTIAL_CEILING = ("medium", 65)
#: points per stage that circumstantial evidence adds (up to the ceiling)
CIRCUMSTANTIAL_STEP = 3


def clamp(score: int) -> int:
    return max(0, min(100, score))


def alert_risk(level: str | None, outcome: str | None, carried_data: bool) -> int:
    score = LEVEL_BASE.get((level or "").lower(), DEFAULT_BASE)
    score += OUTCOME_ADJUSTMENT.get(outcome or "", 0)
    if outcome == "established" and carried_data:
        score += DATA_BONUS
    return clamp(score)


def severity_of_stage(stage: int) -> str:
    """Severity rises with the stage: 1 low, 2 medium, 3 high, 4 and beyond critical."""
    return SEVERITIES[min(max(stage, 1), 4) - 1]


def incident_severity(direct_stage: int, stage: int) -> str:
    """The severity of the direct stage; circumstantial stages beyond it lift a lower one
    to at most "medium"."""
    severity = severity_of_stage(direct_stage)
    if stage > direct_stage and SEVERITIES.index(severity) < SEVERITIES.index(CIRCUMSTANTIAL_CEILING[0]):
        return CIRCUMSTANTIAL_CEILING[0]
    return severity


def incident_risk(direct_stage: int, stage: int) -> int:
    direct = STAGE_RISK.get(direct_stage, 0)
    if stage <= direct_stage:
        return direct
    return max(direct, min(direct + CIRCUMSTANTIAL_STEP * (stage - direct_stage), CIRCUMSTANTIAL_CEILING[1]))
