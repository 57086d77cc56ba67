"""The quick check that lets ``without_long_lines`` skip its regex agrees with the regex."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rpcwatch.sources.inputs import _long_line_pattern, without_long_lines

LIMIT = 16


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * LIMIT), max_size=12), st.booleans())
def test_long_lines_are_found_whether_or_not_the_quick_check_runs(lengths, last_newline):
    block = b"\n".join(b"x" * n for n in lengths) + (b"\n" if last_newline and lengths else b"")
    expected = [match.start() for match in _long_line_pattern(LIMIT).finditer(block)]
    kept, where = without_long_lines(block, LIMIT, 100)
    assert where == [100 + at for at in expected]
    assert kept == _long_line_pattern(LIMIT).sub(b"", block)


def test_a_block_of_short_lines_is_returned_as_it_is():
    block = b"a\tb\n" * 1000
    assert without_long_lines(block, LIMIT, 0) == (block, [])
