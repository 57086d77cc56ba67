"""MITRE ATT&CK context from a rule's Sigma tags, in ECS's ``threat`` shape."""
from __future__ import annotations

import re
from collections.abc import Iterable

from rpcwatch.triage.data import load

FRAMEWORK = "MITRE ATT&CK"
_TECHNIQUE = re.compile(r"t\d{4}(\.\d{3})?")


def threat_of(tags: Iterable[str]) -> dict | None:
    """``{framework, tactic: {id, name}, technique: {id, name}}`` for the ``attack.*`` tags;
    None when the rule has none. Unknown tactics are left out; an unknown technique keeps
    its id with an empty name, so nothing a rule says is lost."""
    data = load("mitre.yml")
    tactics, techniques = [], []
    for tag in tags:
        namespace, _, name = tag.lower().partition(".")
        if namespace != "attack":
            continue
        if _TECHNIQUE.fullmatch(name):
            technique = name.upper()
            techniques.append((technique, data["techniques"].get(technique, "")))
        elif (tactic := data["tactics"].get(name.replace("_", "-"))) is not None:
            tactics.append((tactic["id"], tactic["name"]))
    if not tactics and not techniques:
        return None
    return {"framework": FRAMEWORK,
            "tactic": {"id": [i for i, _ in tactics], "name": [n for _, n in tactics]},
            "technique": {"id": [i for i, _ in techniques], "name": [n for _, n in techniques]}}
