"""Hostile rule files: whatever the YAML, loading never raises (each bad document is a
listed problem, the other rules still run), and the alias limits hold before anything is
expanded."""
from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcwatch.hunt import plan_hunt
from rpcwatch.sigma.loader import MAX_YAML_ALIASES, MAX_YAML_NODES, load_rule_set

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD_RULE = """title: Good rule
id: 9d0b4f5e-2c1a-4c59-9c0e-5f7c1d2b3a4e
logsource: {category: process_creation, product: windows}
detection:
    selection: {Image|endswith: '\\calc.exe'}
    condition: selection
level: low
"""
SIGMA_KEYS = ("title", "id", "logsource", "detection", "condition", "selection", "product", "category",
              "service", "level", "status", "tags", "Image|endswith", "CommandLine|contains|all", "EventID",
              "correlation", "rules", "filter", "type", "timespan", "group-by", "|re", "1 of them", "rpcwatch")
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(SIGMA_KEYS))
sigma_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(SIGMA_KEYS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=30)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def load(path: Path):
    rule_set = load_rule_set([path], bundled=False)
    assert all(problem.reason and problem.path == str(path) for problem in rule_set.problems)
    return rule_set


@FUZZ
@given(st.text(max_size=400))
def test_any_text_loads_without_raising(tmp_path, text):
    rule_set = load(write(tmp_path, "any.yml", text))
    assert len(rule_set.rules) <= text.count("\n") + 1


@FUZZ
@given(st.lists(sigma_like, min_size=1, max_size=3))
def test_sigma_shaped_documents_load_without_raising_and_the_good_rule_still_runs(tmp_path, documents):
    text = yaml.safe_dump_all([*documents, yaml.safe_load(GOOD_RULE)], allow_unicode=True)
    rule_set = load(write(tmp_path, "shapes.yml", text))
    assert "Good rule" in {rule.title for rule in rule_set.rules}
    assert len(rule_set.rules) + len(rule_set.problems) >= 1


def alias_bomb(width: int, depth: int) -> str:
    """``depth`` lists of ``width`` items, each list made of aliases to the one before."""
    lines = ["title: Bomb", "logsource: {product: windows}", "detection:",
             f"    l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"    l{d}: &l{d} [{', '.join([f'*l{d - 1}'] * width)}]" for d in range(1, depth)]
    lines += [f"    selection: {{CommandLine: *l{depth - 1}}}", "    condition: selection"]
    return "\n".join(lines) + "\n"


def bomb_nodes(width: int, depth: int) -> int:
    """Nodes of :func:`alias_bomb`'s document with every alias expanded, counted from how
    it is written: 14 fixed nodes, each list level with its key, the selection's copy."""
    levels = [1 + width]
    for _ in range(1, depth):
        levels.append(1 + width * levels[-1])
    return 14 + sum(1 + size for size in levels) + levels[-1]


@FUZZ
@given(st.integers(1, 12), st.integers(1, 12))
def test_alias_limits_hold_before_expansion(tmp_path, width, depth):
    rule_set = load(write(tmp_path, "bomb.yml", alias_bomb(width, depth) + "---\n" + GOOD_RULE))
    aliases = width * (depth - 1) + 1
    nodes = bomb_nodes(width, depth)
    refused = [p.reason for p in rule_set.problems if p.reason.startswith("YAML document 1 refused")]
    assert bool(refused) == (aliases > MAX_YAML_ALIASES or nodes > MAX_YAML_NODES)
    if refused and aliases <= MAX_YAML_ALIASES:
        assert refused[0].endswith("(MAX_YAML_NODES)")
    if refused and nodes <= MAX_YAML_NODES:
        assert refused[0].endswith("(MAX_YAML_ALIASES)")
    if not refused:
        assert "Bomb" in {rule.title for rule in rule_set.rules} | {p.title for p in rule_set.problems}
    assert "Good rule" in {rule.title for rule in rule_set.rules}


def test_a_700_byte_bomb_is_refused_at_once_and_named(tmp_path):
    bomb = alias_bomb(9, 9)
    assert len(bomb) < 700  # 9 ** 9 = 387,420,489 strings once expanded
    plan = plan_hunt([str(write(tmp_path, "bomb.yml", bomb))], bundled=False)
    assert [p.reason for p in plan.problems] == [
        f"YAML document 1 refused: more than {MAX_YAML_NODES:,} YAML nodes with its aliases expanded "
        "(MAX_YAML_NODES)"]


def test_recursive_alias_is_refused(tmp_path):
    rule_set = load(write(tmp_path, "loop.yml", "title: Loop\ndetection: &d {selection: *d}\n"))
    assert [p.reason for p in rule_set.problems] == [
        "YAML document 1 refused: a YAML alias refers to a node that contains it (recursive alias)"]


def test_rules_validate_refuses_the_bomb_too(tmp_path):
    from rpcwatch.sigma.validate import validate_rules

    findings = validate_rules([write(tmp_path, "bomb.yml", alias_bomb(9, 9))])
    assert [(f.title, f.check, f.message.split(":")[0]) for f in findings] == [("Bomb", "parse", "YAML document 1 refused")]
