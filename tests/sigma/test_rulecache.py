"""The compiled rule set cache: a hit gives the rule set a cold load gives, any change to
the rule files or the configuration is a miss, and nothing in the cache directory that
this user did not write, unverified, is ever unpickled."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from rpcwatch.config import Config
from rpcwatch.sigma import loader, rulecache

REPO = Path(__file__).resolve().parents[2]
RULE = """title: Calc started
id: 7e3a1f0c-5b2d-4c8e-9a6f-1d0e2c3b4a59
logsource: {category: process_creation, product: windows}
detection:
    selection: {Image|endswith: '\\\\calc.exe'}
    condition: selection
level: low
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(rulecache.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    return tmp_path / "cache" / "rules"


@pytest.fixture
def compiles(monkeypatch) -> list[int]:
    """How many times the rules were compiled rather than read from the cache."""
    calls: list[int] = []
    from rpcwatch.sigma import parse

    compile_rule_set = parse.compile_rule_set

    def counted(*args):
        calls.append(1)
        return compile_rule_set(*args)

    monkeypatch.setattr(parse, "compile_rule_set", counted)
    return calls


def rules_dir(tmp_path: Path, text: str = RULE) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / "calc.yml").write_text(text, encoding="utf-8")
    return folder


def summary(rule_set) -> tuple:
    return ([(r.title, r.expr) for r in rule_set.rules], sorted(rule_set.by_table),
            {t: sorted(map(str, ls or ())) for t, ls in rule_set.literals.items()},
            [p.reason for p in rule_set.problems], [c.title for c in rule_set.correlations])


def test_a_second_load_is_read_from_the_cache_and_equals_a_cold_load(tmp_path, cache, compiles):
    folder = rules_dir(tmp_path)
    first = loader.load_rule_set([folder])
    second = loader.load_rule_set([folder])
    assert len(compiles) == 1 and summary(second) == summary(first)
    assert len(second.rules) == 5 and second.by_table["windows"]  # the four bundled detection rules, this one
    entries = list(cache.glob("*.ruleset"))
    assert len(entries) == 1 and not list(cache.glob(".tmp-*"))
    assert (cache.stat().st_mode & 0o777, entries[0].stat().st_mode & 0o777, (cache / "key").stat().st_mode & 0o777) \
        == (0o700, 0o600, 0o600)


def test_changed_content_or_configuration_is_a_miss(tmp_path, cache, compiles):
    folder = rules_dir(tmp_path)
    loader.load_rule_set([folder])
    rules_dir(tmp_path, RULE.replace("calc.exe", "mspaint.exe"))
    changed = loader.load_rule_set([folder])
    assert len(compiles) == 2
    assert any("mspaint" in str(rule.expr) for rule in changed.rules)
    loader.load_rule_set([folder], Config().with_internal(["198.51.100.0/24"]))
    loader.load_rule_set([folder], bundled=False)
    loader.load_rule_set([], filters=[folder])  # the same file as a filter, not a rule
    assert len(compiles) == 5
    loader.load_rule_set([folder], Config().with_internal(["198.51.100.0/24"]))
    assert len(compiles) == 5


def test_a_tampered_or_foreign_entry_is_a_miss_and_is_never_unpickled(tmp_path, cache, compiles):
    folder = rules_dir(tmp_path)
    expected = summary(loader.load_rule_set([folder]))
    [entry] = cache.glob("*.ruleset")
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    data = entry.read_bytes()
    entry.write_bytes(data[:40] + pickle.dumps(Payload()))  # the right header, another payload
    assert summary(loader.load_rule_set([folder])) == expected
    entry.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    assert summary(loader.load_rule_set([folder])) == expected
    entry.write_bytes(b"not a cache file")
    assert summary(loader.load_rule_set([folder])) == expected
    assert len(compiles) == 4 and not marker.exists()


@pytest.mark.parametrize("loosen", ["directory", "key"])
def test_a_cache_others_can_write_or_read_is_not_used(tmp_path, cache, compiles, loosen):
    folder = rules_dir(tmp_path)
    loader.load_rule_set([folder])
    os.chmod(cache if loosen == "directory" else cache / "key", 0o777 if loosen == "directory" else 0o644)
    loader.load_rule_set([folder])
    assert len(compiles) == 2


def test_without_the_cache_every_load_compiles(tmp_path, cache, compiles, monkeypatch):
    monkeypatch.setenv(rulecache.CACHE_SWITCH_VARIABLE, "0")
    folder = rules_dir(tmp_path)
    loader.load_rule_set([folder])
    loader.load_rule_set([folder])
    assert len(compiles) == 2 and not cache.exists()


def test_concurrent_runs_share_the_cache_safely(tmp_path, cache):
    """Four processes load the same rules into an empty cache at once: each gets the rules,
    and what is left is one verified entry and no temporary file."""
    folder = rules_dir(tmp_path)
    script = ("import sys; from rpcwatch.sigma.loader import load_rule_set; "
              "print(len(load_rule_set([sys.argv[1]]).rules))")
    env = {**os.environ, rulecache.CACHE_DIR_VARIABLE: str(cache.parent)}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(4)]
    assert [run.communicate()[0].strip() for run in runs] == ["5"] * 4
    assert len(list(cache.glob("*.ruleset"))) == 1 and not list(cache.glob(".tmp-*"))
    key = loader.rule_set_key([*loader.bundled_rule_files(), *loader.rule_files([folder])], [], Config())
    assert isinstance(rulecache.load(key), loader.RuleSet)
