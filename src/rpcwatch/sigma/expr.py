"""The engine-neutral form of a rule's detection: a small boolean expression tree.

A rule is compiled into this tree once (:mod:`rpcwatch.sigma.compiler`); each engine
prints it for its own dialect (:mod:`rpcwatch.sigma.sql`); the test oracle evaluates it
event by event. Leaves say *what* is compared, never *how* a dialect does it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from rpcwatch.networks import IPNetwork


class Wildcard(Enum):
    """Sigma wildcards inside a string pattern."""

    ANY = "*"  # any run of characters, also empty
    ONE = "?"  # exactly one character


#: A Sigma string: literal text and wildcards, in order.
Pattern = tuple[str | Wildcard, ...]


def plain_text(pattern: Pattern) -> str | None:
    """The literal text of a pattern without wildcards, else None."""
    if all(isinstance(part, str) for part in pattern):
        return "".join(pattern)  # type: ignore[arg-type]
    return None


# ---- value tests (what a field's value must satisfy) ---------------------------------

@dataclass(frozen=True)
class StringTest:
    """Whole-value match of a pattern; wildcards give contains/startswith/endswith."""

    pattern: Pattern
    case_sensitive: bool = False


@dataclass(frozen=True)
class NumberTest:
    """Numeric comparison; a text value that reads as a decimal number compares too."""

    op: str  # one of == < <= > >=
    value: int | float


@dataclass(frozen=True)
class BoolTest:
    value: bool


@dataclass(frozen=True)
class NullTest:
    """The field has no value: absent, unset, or empty text (EVTX writes "no value" as an
    empty element)."""


@dataclass(frozen=True)
class ExistsTest:
    """The field is present with some value (``|exists: true``); absent when False."""

    exists: bool


@dataclass(frozen=True)
class CidrTest:
    """The value is an IP address inside one of the networks (same IP version)."""

    networks: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class RegexTest:
    """RE2 search (unanchored, as Sigma's ``|re``); flags from ``i``, ``m``, ``s``."""

    regex: str
    ignore_case: bool = False
    multiline: bool = False
    dotall: bool = False


@dataclass(frozen=True)
class FieldRefTest:
    """The value equals (or starts/ends with, or contains) another field's value."""

    other: str
    starts_with: bool = False
    ends_with: bool = False


@dataclass(frozen=True)
class TimePartTest:
    """A part of the field's timestamp (minute ... year) compared with a number."""

    part: str  # minute, hour, day, week, month, year
    op: str
    value: int


Test = (StringTest | NumberTest | BoolTest | NullTest | ExistsTest | CidrTest | RegexTest
        | FieldRefTest | TimePartTest)


# ---- boolean structure ------------------------------------------------------------------

@dataclass(frozen=True)
class Match:
    """A field's value passes a test. A list value passes when any element does."""

    field: str
    test: Test


@dataclass(frozen=True)
class Keyword:
    """A field-less (keyword) test: passes when the record's text does (see docs/sigma-support.md)."""

    test: Test


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


@dataclass(frozen=True)
class Const:
    value: bool


Expr = Match | Keyword | And | Or | Not | Const

TRUE = Const(True)
FALSE = Const(False)


def all_of(items) -> Expr:
    """AND with the trivial cases folded."""
    flat: list[Expr] = []
    for item in items:
        if item == TRUE:
            continue
        if item == FALSE:
            return FALSE
        flat.extend(item.items if isinstance(item, And) else (item,))
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def any_of(items) -> Expr:
    """OR with the trivial cases folded."""
    flat: list[Expr] = []
    for item in items:
        if item == FALSE:
            continue
        if item == TRUE:
            return TRUE
        flat.extend(item.items if isinstance(item, Or) else (item,))
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def negate(item: Expr) -> Expr:
    if isinstance(item, Const):
        return Const(not item.value)
    if isinstance(item, Not):
        return item.item
    return Not(item)


def fields_of(expr: Expr) -> Iterator[str]:
    """Every field name the expression reads (field references included)."""
    if isinstance(expr, Match):
        yield expr.field
        if isinstance(expr.test, FieldRefTest):
            yield expr.test.other
    elif isinstance(expr, (And, Or)):
        for item in expr.items:
            yield from fields_of(item)
    elif isinstance(expr, Not):
        yield from fields_of(expr.item)


def has_keywords(expr: Expr) -> bool:
    """Whether the expression searches record text without a field."""
    if isinstance(expr, Keyword):
        return True
    if isinstance(expr, (And, Or)):
        return any(has_keywords(item) for item in expr.items)
    if isinstance(expr, Not):
        return has_keywords(expr.item)
    return False
