"""The rule index's scan: which rows hold which literal."""
from __future__ import annotations

import pyarrow as pa
import pytest

from rpcwatch.engines import ruleindex
from rpcwatch.engines.ruleindex import _literal_database, _scan


def automaton(*words: str):
    return _literal_database([(word.encode(), number) for number, word in enumerate(words)])


def rows(found: dict) -> dict[int, list[int]]:
    return {literal: sorted(int(r) for r in positions) for literal, positions in found.items()}


def test_rows_holding_each_literal_with_nulls_slices_and_non_ascii_text():
    values = pa.array(["x", "C:\\Windows\\WHOAMI.exe", None, "ünïcode whoami", "", "whoami", "cmd.exe"])
    column = pa.chunked_array([values.slice(1), pa.array(["nothing", "CMD.EXE /c"])])
    found = rows(_scan(automaton("whoami", "cmd.exe"), column))
    assert found[0] == [0, 2, 4]      # positions in the column, the null counted
    assert found[1] == [5, 7]


def test_large_strings_and_lists():
    assert rows(_scan(automaton("abc"), pa.chunked_array([pa.array(["xabcx", "ab"], pa.large_string())]))) == {0: [0]}
    lists = pa.chunked_array([pa.array([["q", "ABC"], None, ["a", "bc"]])])
    # list items are joined with a separator: "a" and "bc" do not make "abc"
    assert rows(_scan(automaton("abc"), lists)) == {0: [0]}


def test_a_literal_across_two_values_only_adds_a_candidate():
    found = rows(_scan(automaton("abc"), pa.chunked_array([pa.array(["xa", "bc", "abc"])])))
    assert 2 in found[0] and 0 not in found[0]  # the holder is always found; row 1 may be a candidate


def test_overlapping_and_repeated_literals_each_find_their_rows():
    column = pa.chunked_array([pa.array(["aaa", "xab", "b", "ab ab ab", "ba"])])
    found = rows(_scan(automaton("a", "ab", "aa", "b"), column))
    assert found == {0: [0, 1, 3, 4], 1: [1, 3], 2: [0], 3: [1, 2, 3, 4]}


def test_a_column_scanned_in_pieces_finds_the_same_rows(monkeypatch):
    values = pa.chunked_array([pa.array([f"row {i} " + ("cmd.exe" if i % 7 == 0 else "x" * (i % 5)) for i in range(200)]
                                        + ["\u00fcnic\u00f6de cmd.exe"])])
    whole = rows(_scan(automaton("cmd.exe", "row 1"), values))
    monkeypatch.setattr(ruleindex, "SCAN_BYTES", 64)  # a handful of values per piece
    assert rows(_scan(automaton("cmd.exe", "row 1"), values)) == whole
    assert whole[0] == [i for i in range(200) if i % 7 == 0] + [200]
    assert whole[1] == [1] + list(range(10, 20)) + list(range(100, 200))


@pytest.mark.parametrize("text", ["", None])
def test_nothing_to_scan(text):
    assert _scan(automaton("abc"), pa.chunked_array([pa.array([text, text], pa.string())])) == {}


def test_a_column_of_few_distinct_values_is_scanned_by_value_with_the_same_rows(monkeypatch):
    channels = ["Security", "Microsoft-Windows-Sysmon/Operational", None, "System", "Windows PowerShell"]
    column = pa.chunked_array([pa.array([channels[i % 5] for i in range(3000)]),
                               pa.array([channels[(i * 7) % 5] for i in range(2000)])])
    numbers = pa.chunked_array([pa.array([(4104, 1, 4688, None)[i % 4] for i in range(5000)], pa.int64())])
    database = automaton("sysmon", "security", "1", "4688", "operational")
    assert ruleindex._few_distinct(column.combine_chunks())
    by_value = rows(_scan(database, column)), rows(_scan(database, numbers))
    monkeypatch.setattr(ruleindex, "_few_distinct", lambda values: False)
    assert (rows(_scan(database, column)), rows(_scan(database, numbers))) == by_value
    expected_sysmon = [i for i in range(3000) if i % 5 == 1] + [3000 + i for i in range(2000) if (i * 7) % 5 == 1]
    assert by_value[0][0] == by_value[0][4] == expected_sysmon
    assert by_value[1][2] == [i for i in range(5000) if i % 4 in (0, 1)]  # "1" in 4104 and 1
    assert by_value[1][3] == [i for i in range(5000) if i % 4 == 2]


def test_a_second_index_of_the_same_rules_loads_its_matchers_from_the_rule_cache(monkeypatch, tmp_path):
    from sigma.rule import SigmaRule

    from rpcwatch.sigma.compiler import compile_rule
    from rpcwatch.sigma.logsources import BoundRule

    monkeypatch.setenv("RPCWATCH_CACHE_DIR", str(tmp_path))
    rules = []
    for number, (field, word) in enumerate([("Image", "\\\\whoami.exe"), ("CommandLine", "/all"), ("Image", "cmd")] * 9):
        compiled = compile_rule(SigmaRule.from_dict({
            "title": f"r{number}", "logsource": {"product": "windows"},
            "detection": {"sel": {f"{field}|contains": word, "User|contains": f"u{number % 3}"}, "condition": "sel"}}))
        rules.append(BoundRule(compiled, "windows", compiled.expr))
    view = pa.table({"Image": ["C:\\\\Windows\\\\whoami.exe", "cmd.exe", None], "CommandLine": ["whoami /all", None, "x"],
                     "User": ["u0", "u1", "u2"]})

    def found(index):
        return sorted((group.rules, group.rows.tolist()) for group in index.candidates(view))

    first = found(ruleindex.RuleIndex(rules))
    monkeypatch.setattr(ruleindex, "_literal_database", lambda words: pytest.fail("compiled again"))
    assert found(ruleindex.RuleIndex(rules)) == first
    # every clause must hold: row 0 has "/all" but not u1, row 1 "cmd" but not u2
    assert first == [(tuple(range(0, 27, 3)), [0])]
