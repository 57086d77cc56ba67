"""The rule index's scan: which rows hold which literal."""
from __future__ import annotations

import ahocorasick
import pyarrow as pa

from rpcwatch.engines.ruleindex import _scan


def automaton(*words: str) -> ahocorasick.Automaton:
    found = ahocorasick.Automaton()
    for number, word in enumerate(words):
        found.add_word(word, number)
    found.make_automaton()
    return found


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
