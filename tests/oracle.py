"""An independent, event-by-event evaluator of the expression tree, used only by tests.

It restates Sigma's semantics in plain Python (no SQL) so that the SQL path can be
checked against it: same field lookup, same type coercions, same two-valued NOT.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, lru_cache

import re2

from rpcwatch.networks import address_in, parse_address
from rpcwatch.sigma.expr import (
    And,
    BoolTest,
    CidrTest,
    Const,
    ExistsTest,
    FieldRefTest,
    Keyword,
    Match,
    Not,
    NullTest,
    NumberTest,
    Or,
    RegexTest,
    StringTest,
    TimePartTest,
    Wildcard,
    plain_text,
)

_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)")
_OPS = {"==": lambda a, b: a == b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def evaluate(expr, event: dict) -> bool:
    if isinstance(expr, And):
        return all(evaluate(item, event) for item in expr.items)
    if isinstance(expr, Or):
        return any(evaluate(item, event) for item in expr.items)
    if isinstance(expr, Not):
        return not evaluate(expr.item, event)
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Match):
        return _match(expr.field, expr.test, event)
    if isinstance(expr, Keyword):
        return _keyword(expr.test, event)
    raise TypeError(expr)


def _lookup(event: dict, field: str):
    if field in event:
        return True, event[field]
    key = _folded_keys(tuple(event)).get(field.lower())
    return (True, event[key]) if key is not None else (False, None)


@lru_cache(maxsize=1024)
def _folded_keys(keys: tuple[str, ...]) -> dict[str, str]:
    """Lower-case name -> the first key of that name (events of one table share keys)."""
    folded: dict[str, str] = {}
    for key in keys:
        folded.setdefault(key.lower(), key)
    return folded


def _match(field, test, event) -> bool:
    present, value = _lookup(event, field)
    if not present:
        return isinstance(test, NullTest) or test == ExistsTest(False)
    if isinstance(test, FieldRefTest):
        other_present, other = _lookup(event, test.other)
        if not other_present or value is None or other is None:
            return False
        left, right = _text(value).lower(), _text(other).lower()
        if test.starts_with and test.ends_with:
            return right in left
        if test.starts_with:
            return left.startswith(right)
        if test.ends_with:
            return left.endswith(right)
        return left == right
    return _value(value, test)


def _value(value, test) -> bool:
    if isinstance(test, NullTest):
        return value is None or value == ""
    if isinstance(test, ExistsTest):
        return (value is not None) == test.exists
    if value is None:
        return False
    if isinstance(value, list):
        return any(_value(item, test) for item in value)
    if isinstance(test, StringTest):
        return _string(value, test)
    if isinstance(test, NumberTest):
        if isinstance(value, bool):
            return False
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return False
            if not math.isfinite(value):
                return False
        return _OPS[test.op](value, test.value)
    if isinstance(test, BoolTest):
        if isinstance(value, bool):
            return value == test.value
        if isinstance(value, (int, float)):
            return value == (1 if test.value else 0)
        return value.lower() in (("true", "t") if test.value else ("false", "f"))
    if isinstance(test, CidrTest):
        address = parse_address(_text(value))
        return address is not None and address_in(address, test.networks)
    if isinstance(test, RegexTest):
        return _re2(test).search(_text(value)) is not None
    if isinstance(test, TimePartTest):
        moment = _moment(value)
        if moment is None:
            return False
        part = {"minute": moment.minute, "hour": moment.hour, "day": moment.day, "month": moment.month,
                "year": moment.year, "week": moment.isocalendar()[1]}[test.part]
        return _OPS[test.op](part, test.value)
    raise TypeError(test)


def _string(value, test: StringTest) -> bool:
    if not isinstance(value, str):
        text = plain_text(test.pattern)
        if text is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and _DECIMAL.fullmatch(text.strip()):
            return value == float(text)
        if text is not None and isinstance(value, bool) and text.lower() in ("true", "t", "false", "f"):
            return value == (text.lower() in ("true", "t"))
        value = _text(value)
    return _pattern_matcher(test)(value if test.case_sensitive else value.lower())


@cache
def _pattern_matcher(test: StringTest) -> Callable[[str], bool]:
    """Whole-value match of a pattern: equality, containment, prefix and suffix as string
    operations (most rule values are one of these), anything else as a regex."""
    parts = tuple(p if isinstance(p, Wildcard) or test.case_sensitive else p.lower() for p in test.pattern)
    shape = tuple(p if isinstance(p, Wildcard) else str for p in parts)
    if shape == (str,):
        return parts[0].__eq__
    if shape == (Wildcard.ANY, str, Wildcard.ANY):
        return lambda subject: parts[1] in subject
    if shape == (str, Wildcard.ANY):
        return lambda subject: subject.startswith(parts[0])
    if shape == (Wildcard.ANY, str):
        return lambda subject: subject.endswith(parts[1])
    regex = re.compile("".join(".*" if p is Wildcard.ANY else "." if p is Wildcard.ONE else re.escape(p)
                               for p in parts), re.DOTALL)
    return lambda subject: regex.fullmatch(subject) is not None


@cache
def _re2(test: RegexTest):
    flags = "".join(f for f, on in (("i", test.ignore_case), ("m", test.multiline), ("s", test.dotall)) if on)
    return re2.compile(f"(?{flags}){test.regex}" if flags else test.regex)


def _keyword(test, event) -> bool:
    if isinstance(test, StringTest):
        pattern = tuple(test.pattern)
        if not pattern or pattern[0] is not Wildcard.ANY:
            pattern = (Wildcard.ANY,) + pattern
        if pattern[-1] is not Wildcard.ANY:
            pattern = pattern + (Wildcard.ANY,)
        test = StringTest(pattern, test.case_sensitive)
    for key, value in event.items():
        if key.startswith("__"):
            continue
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(t, str) and _value(t, test) for t in texts):
            return True
    return False


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _moment(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
