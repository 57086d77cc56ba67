"""Which literals a bound rule demands of a record, for the byte-level prefilter.

Sound by construction: a literal is only derived where every record that can match must
contain it in its raw text (see :mod:`rpcwatch.sources.prefilter` for the formats' side).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

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


def literals_for_table(rules: Iterable[tuple[Expr | None, Expr]]) -> LiteralSet | None:
    """Union over the rules that run on one table (``None`` if any rule demands nothing),
    each given as its log source's selection and its own condition (``BoundRule.parts``)."""
    return _union(_rule_literals(where, body) for where, body in rules)


def _rule_literals(where: Expr | None, body: Expr) -> LiteralSet | None:
    """What a rule's own condition demands, when it demands a literal: a log source's
    selection (a channel, a provider) is in nearly every event of that log, so its literals,
    however long, select nothing there. Sound either way: a match satisfies both parts."""
    own = required_literals(body)
    return own if own is not None or where is None else required_literals(where)


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


#: literals at least one of which a record's values hold (a disjunction)
Clause = frozenset[FieldLiteral]


def field_clauses(expr: Expr) -> tuple[Clause, ...] | None:
    """What a matching record's values must hold, as clauses that must all be satisfied
    (each satisfied by any one of its literals): every conjunct that demands a literal is a
    clause of its own, so ``Image|endswith: '\\powershell.exe'`` and
    ``CommandLine|contains: 'readtoend'`` narrow to the rows holding both. Each literal is
    tied to the field whose value must contain it (lower-cased; any characters, since it is
    looked for in parsed values, not raw bytes; a keyword's literal has
    :data:`KEYWORD_FIELD`). ``None`` when nothing is demanded (negations, regexes...); an
    empty clause when nothing can match."""
    if isinstance(expr, (Match, Keyword)):
        text = _value_text(expr.test)
        field = expr.field if isinstance(expr, Match) else KEYWORD_FIELD
        return (frozenset({(field, text)}),) if text else None
    if isinstance(expr, And):
        return all_clauses(*map(field_clauses, expr.items))
    if isinstance(expr, Or):
        # a disjunction of conjunctions: each item stands for its most selective clause
        union: set[FieldLiteral] = set()
        for item in expr.items:
            found = field_clauses(item)
            if found is None:
                return None
            union |= max(found, key=_selectivity) if found else frozenset()
        return (frozenset(union),)
    if isinstance(expr, Const):
        return (frozenset(),) if not expr.value else None
    return None


def all_clauses(*parts: tuple[Clause, ...] | None) -> tuple[Clause, ...] | None:
    """The clauses of a conjunction of parts (``None``: a part that demands nothing)."""
    clauses = [clause for part in parts for clause in (part or ())]
    return tuple(dict.fromkeys(clauses)) if clauses else None


def _selectivity(clause: AbstractSet[FieldLiteral]) -> tuple[int, int]:
    """Longer literals are rarer; fewer alternatives keep fewer rows (an empty clause: nothing)."""
    return (min((len(text) for _, text in clause), default=1 << 30), -len(clause))


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
