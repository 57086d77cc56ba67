"""SigmaHQ's rule repository as it is: every file loads, and each rule either runs or is
rejected with a reason."""
from __future__ import annotations

from collections import Counter

import pytest
import yaml

from rpcwatch.hunt import plan_hunt


@pytest.fixture(scope="module")
def sigmahq(corpus):
    roots = sorted(str(p) for p in (corpus / "sigmahq-sigma").glob("rules*") if p.is_dir())
    return roots, plan_hunt(roots, bundled=False)


def documents(roots):
    from pathlib import Path

    count = 0
    for root in roots:
        for path in Path(root).rglob("*.yml"):
            count += sum(1 for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict))
    return count


def test_every_rule_runs_or_is_rejected_with_a_reason(sigmahq):
    roots, plan = sigmahq
    rule_set = plan.rule_set
    assert len(rule_set.rules) + len(rule_set.correlations) + len(rule_set.problems) == documents(roots) == 3782
    assert all(problem.reason and problem.path for problem in rule_set.problems)
    assert len(rule_set.rules) >= 2850


def test_windows_rules_are_runnable(sigmahq):
    _, plan = sigmahq
    windows = [r for r in plan.rule_set.rules if r.logsource.get("product") == "windows"]
    rejected = Counter(p.reason for p in plan.problems if p.logsource.startswith("windows")
                       and "placeholder" not in p.reason)
    assert len(windows) >= 2400
    # apart from unconfigured placeholders, only what is not an event log channel at all
    # (kernel file ETW) is refused
    assert set(rejected) <= {"no table for logsource (category: file_access, product: windows)",
                             "no table for logsource (category: file_rename, product: windows)",
                             "no table for logsource (product: windows)"}


def test_placeholder_rules_need_configuration(sigmahq, corpus):
    _, plan = sigmahq
    placeholder = [p for p in plan.problems if "rules-placeholder" in p.path]
    assert placeholder and all("placeholder" in p.reason or "no table" in p.reason for p in placeholder)


def test_placeholders_resolve_from_configuration(corpus):
    from rpcwatch.config import Config

    rule = corpus / "sigmahq-sigma/rules-placeholder/windows/process_creation/proc_creation_win_sysinternals_tools_masquerading.yml"
    if not rule.exists():
        rule = next((corpus / "sigmahq-sigma/rules-placeholder").rglob("*.yml"))
    text = rule.read_text()
    names = {part.split("%")[0] for part in text.split("'%")[1:]}
    config = Config(placeholders={name: ("x",) for name in names})
    plan = plan_hunt([str(rule)], config=config, bundled=False)
    assert not [p for p in plan.problems if "placeholder" in p.reason]
