"""Risk scores (0-100): one formula for alerts and one for incidents (docs/triage.md).

An alert starts from its rule's level and moves with what happened: a refused or
unanswered attempt shows exposure was tried and failed; an established session, and more
so one that carried data both ways or an answered RPC call, shows the service answered
the internet. An incident scores at least what its stage on the attack chain is worth.
"""
from __future__ import annotations

LEVEL_BASE = {"informational": 10, "low": 25, "medium": 45, "high": 65, "critical": 85}
#: level of a rule that names none (Sigma's level is optional)
DEFAULT_BASE = 45
OUTCOME_ADJUSTMENT = {"rejected": -30, "no-reply": -30, "blocked": -30, "established": 10}
#: an established session with payload both ways, or an RPC call that was answered
DATA_BONUS = 10
#: the least an incident scores at each stage of the attack chain
STAGE_FLOOR = {1: 30, 2: 50, 3: 65, 4: 85, 5: 90, 6: 95, 7: 100}


def clamp(score: int) -> int:
    return max(0, min(100, score))


def alert_risk(level: str | None, outcome: str | None, carried_data: bool) -> int:
    score = LEVEL_BASE.get((level or "").lower(), DEFAULT_BASE)
    score += OUTCOME_ADJUSTMENT.get(outcome or "", 0)
    if outcome == "established" and carried_data:
        score += DATA_BONUS
    return clamp(score)


def incident_risk(stage: int, alert_scores: list[int]) -> int:
    return clamp(max([STAGE_FLOOR.get(stage, 0), *alert_scores]))


def severity_of_stage(stage: int) -> str:
    """Incident severity rises with the stage reached."""
    if stage >= 4:
        return "critical"
    if stage == 3:
        return "high"
    if stage == 2:
        return "medium"
    return "low"
