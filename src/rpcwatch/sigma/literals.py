"""Which literals a bound rule demands of a record, for the byte-level prefilter.

Sound by construction: a literal is only derived where every record that can match must
contain it in its raw text (see :mod:`rpcwatch.sources.prefilter` for the formats' side).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable

from rpcwatch.schema import SAFE_LITERAL, Literal, LiteralSet
from rpcwatch.sigma.expr import (
    And,
    Const,
    Expr,
    Keyword,
    Match,
    Not,
    NumberTest,
    Or,
    StringTest,
    plain_text,
)

#: string values that compare against booleans (``T`` in Zeek TSV), so their text is not required
_BOOLEAN_WORDS = {"true", "false", "t", "f"}
_DECIMAL = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")



def best_alternative(alternatives: Iterable[LiteralSet]) -> LiteralSet | None:
    """Of several sets that are each sufficient (children of an AND), the most selective."""
    best, best_score = None, -1
    for candidate in alternatives:
        score = min(lit.score for lit in candidate) * 100 - len(candidate)
        if score > best_score:
            best, best_score = candidate, score
    return best


def required_literals(expr: Expr) -> LiteralSet | None:
    """A set of literals at least one of which every matching record contains; ``None``
    when no such set can be derived (the prefilter then keeps every line)."""
    if isinstance(expr, Match):
        return _test_literals(expr.test)
    if isinstance(expr, Keyword):
        return _test_literals(expr.test)
    if isinstance(expr, And):
        return best_alternative(s for s in map(required_literals, expr.items) if s is not None)
    if isinstance(expr, Or):
        return _union(required_literals(item) for item in expr.items)
    if isinstance(expr, Const):
        return frozenset() if not expr.value else None
    if isinstance(expr, Not):
        return None
    return None


def literals_for_table(exprs: Iterable[Expr]) -> LiteralSet | None:
    """Union over the rules that run on one table (``None`` if any rule demands nothing)."""
    return _union(required_literals(expr) for expr in exprs)


def _union(sets: Iterable[LiteralSet | None]) -> LiteralSet | None:
    union: set[Literal] = set()
    for literals in sets:
        if literals is None:
            return None
        union |= literals
    return frozenset(union)


def _test_literals(test) -> LiteralSet | None:
    if _is_boolean_word(test):
        return None
    number = _exact_number(test)
    if number is not None:
        return frozenset({Literal(number, "number")})
    if isinstance(test, StringTest):
        piece = _longest_safe_piece(test.pattern)
        return frozenset({Literal(piece, "string", test.case_sensitive)}) if piece else None
    return None


def _exact_number(test) -> str | None:
    """The decimal text of the one number a value passing ``test`` equals: a numeric
    equality, or a plain decimal string (which may compare as a number)."""
    if isinstance(test, NumberTest):
        if test.op == "==" and isinstance(test.value, (int, float)) and math.isfinite(test.value):
            return _number_text(test.value)
        return None
    if isinstance(test, StringTest):
        text = plain_text(test.pattern)
        if text is not None and _DECIMAL.fullmatch(text.strip()):
            return _number_text(float(text))
    return None


def _is_boolean_word(test) -> bool:
    """A string that compares against booleans (``T`` in Zeek TSV): its text is not required."""
    if not isinstance(test, StringTest):
        return False
    text = plain_text(test.pattern)
    return text is not None and text.lower() in _BOOLEAN_WORDS


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else repr(value)


def _longest_safe_piece(pattern) -> str:
    best = ""
    for part in pattern:
        if isinstance(part, str):
            for piece in SAFE_LITERAL.findall(part):
                if len(piece) > len(best):
                    best = piece
    return best


#: a piece of text a named field's value must contain (lower case)
FieldLiteral = tuple[str, str]


#: the field of a keyword's literal: found in any value a keyword searches
KEYWORD_FIELD = ""


def field_literals(expr: Expr) -> frozenset[FieldLiteral] | None:
    """Like :func:`required_literals`, but each literal is tied to the field whose value
    must contain it (lower-cased; any characters, since it is looked for in parsed values,
    not raw bytes; a keyword's literal has :data:`KEYWORD_FIELD`). ``None`` when no such set
    exists (negations, regexes...)."""
    if isinstance(expr, (Match, Keyword)):
        text = _value_text(expr.test)
        field = expr.field if isinstance(expr, Match) else KEYWORD_FIELD
        return frozenset({(field, text)}) if text else None
    if isinstance(expr, And):
        options = [s for s in map(field_literals, expr.items) if s is not None]
        return max(options, key=lambda s: (min(len(t) for _, t in s), -len(s)), default=None) if options else None
    if isinstance(expr, Or):
        union: set[FieldLiteral] = set()
        for item in expr.items:
            found = field_literals(item)
            if found is None:
                return None
            union |= found
        return frozenset(union)
    if isinstance(expr, Const):
        return frozenset() if not expr.value else None
    return None


def _foldable_runs(text: str) -> list[str]:
    """Runs of ASCII or caseless characters (emoji, symbols): Python and Arrow lower-case them alike."""
    if text.isascii():  # nearly every rule value: one run, without a look at each character
        return [text]
    runs, current = [], []
    for char in text:
        if char.isascii() or char.lower() == char == char.upper():
            current.append(char)
        elif current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return runs


def _value_text(test) -> str | None:
    """Text that every value passing the test contains, as the value reads when cast to text."""
    if _is_boolean_word(test):
        return None
    number = _exact_number(test)
    if number is not None:
        return number if "e" not in number else None
    if isinstance(test, StringTest):
        # characters Python and Arrow lower-case alike: ASCII, and characters without case
        pieces = [run for part in test.pattern if isinstance(part, str) for run in _foldable_runs(part)]
        return max(pieces, key=len).lower() if pieces else None
    return None
