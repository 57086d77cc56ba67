"""Print the expression tree as an SQL condition for one table schema and one dialect.

Sigma compares by value, not by storage type: ``135`` matches a port stored as an
integer and as the text ``"135"``; ``'true'`` matches a boolean column; text is
case-insensitive unless ``|cased``; a list value matches when any element does. The
printer therefore looks at each column's Arrow type and writes the comparison that
gives Sigma's answer. Everything dialect-specific lives in a :class:`Dialect`.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Mapping

import pyarrow as pa

from rpcwatch.networks import merged_key_ranges
from rpcwatch.sources.base import RAW_COLUMN
from rpcwatch.sigma.expr import (
    And,
    BoolTest,
    CidrTest,
    Const,
    ExistsTest,
    Expr,
    FieldRefTest,
    Keyword,
    Match,
    Not,
    NullTest,
    NumberTest,
    Or,
    RegexTest,
    StringTest,
    Test,
    TimePartTest,
    Wildcard,
    plain_text,
)


_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)")
_TRUE_WORDS = ("true", "t")
_FALSE_WORDS = ("false", "f")
_TIME_PARTS = {"minute", "hour", "day", "week", "month", "year"}


class Dialect:
    """DuckDB SQL, as run by the embedded engine. Subclass for other engines."""

    name = "duckdb"
    #: ``engine``: functions the engine registers (fast); ``portable``: plain SQL only
    cidr_mode = "engine"
    #: a network list longer than this (in characters) is printed as a short handle that
    #: the engine resolves through :attr:`network_lists`: DuckDB hands a function its
    #: constant arguments once per row, and thousands of networks (triage's address
    #: searches) would be copied per row
    LONG_NETWORK_LIST = 512

    def __init__(self) -> None:
        self.network_lists: dict[str, str] = {}

    def ident(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def string(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def as_text(self, expr: str, dtype: pa.DataType) -> str:
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            return expr
        if pa.types.is_boolean(dtype):
            return f"CASE WHEN {expr} THEN 'true' WHEN NOT {expr} THEN 'false' END"
        return f"CAST({expr} AS VARCHAR)"

    def as_number(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS DOUBLE)"

    def any_element(self, column: str, variable: str, condition: str) -> str:
        return f"len(list_filter({column}, lambda {variable}: {condition})) > 0"

    def regex(self, expr: str, regex: str) -> str:
        return f"regexp_matches({expr}, {self.string(regex)})"

    def regex_full(self, expr: str, regex: str) -> str:
        return f"regexp_full_match({expr}, {self.string(regex)})"

    def like(self, expr: str, pattern: str) -> str:
        return f"{expr} LIKE {self.string(pattern)} ESCAPE '\\'"

    def cidr(self, expr: str, test: CidrTest) -> str:
        if self.cidr_mode == "engine":
            networks = ",".join(str(net) for net in test.networks)
            if len(networks) > self.LONG_NETWORK_LIST:
                handle = "@" + hashlib.sha256(networks.encode()).hexdigest()[:24]
                self.network_lists[handle] = networks
                networks = handle
            return f"rpcw_ip_in({expr}, {self.string(networks)})"
        key = f"rpcw_ip_key({expr})"
        ranges = merged_key_ranges(test.networks)
        if not ranges:
            return "FALSE"
        return "(" + " OR ".join(f"{key} BETWEEN '{lo}' AND '{hi}'" for lo, hi in ranges) + ")"

    def timestamp(self, expr: str, dtype: pa.DataType) -> str:
        if pa.types.is_timestamp(dtype):
            return expr
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
            return f"to_timestamp({expr})"
        return f"TRY_CAST({self.as_text(expr, dtype)} AS TIMESTAMP)"

    def time_part(self, part: str, timestamp: str) -> str:
        return f"date_part('{part}', {timestamp})"


class Unprintable(Exception):
    """A rule construct the dialect cannot express for this schema."""


class SqlPrinter:
    """Prints conditions against one table schema (column name -> Arrow type)."""

    def __init__(self, schema: Mapping[str, pa.DataType] | pa.Schema, dialect: Dialect | None = None,
                 lowered_columns: bool = False, sql_names: Mapping[str, str] | None = None):
        """With ``lowered_columns`` the lower-case text of a column is read from a column
        named :func:`lowered_name` that the caller computes once per row (instead of
        ``lower(column)`` in every comparison); :attr:`lowered` lists the ones needed.
        ``sql_names`` renames columns in the SQL (SQL names are case-insensitive, log field
        names are not: ``ProcessId`` and ``ProcessID`` can be two columns)."""
        self._sql_names = dict(sql_names or {})
        if isinstance(schema, pa.Schema):
            schema = {f.name: f.type for f in schema}
        self.schema = dict(schema)
        self.dialect = dialect or Dialect()
        self._folded = {}
        for name in self.schema:
            self._folded.setdefault(name.lower(), name)
        self._depth = 0
        self._precompute = lowered_columns
        self.lowered: set[str] = set()

    # ---- structure ------------------------------------------------------------------
    def condition(self, expr: Expr) -> str:
        if isinstance(expr, And):
            return "(" + " AND ".join(self.condition(item) for item in expr.items) + ")"
        if isinstance(expr, Or):
            return "(" + " OR ".join(self._or_terms(expr.items)) + ")"
        if isinstance(expr, Not):
            # Sigma's NOT is two-valued: a missing or unset field makes the inner test false
            return f"(NOT coalesce({self.condition(expr.item)}, FALSE))"
        if isinstance(expr, Const):
            return "TRUE" if expr.value else "FALSE"
        if isinstance(expr, Match):
            return self.match(expr.field, expr.test)
        if isinstance(expr, Keyword):
            return self.keyword(expr.test)
        raise Unprintable(f"unknown expression {type(expr).__name__}")

    def _or_terms(self, items) -> list[str]:
        """OR-ed string tests on one text column become one ``IN`` list and one RE2 regex
        (rule value lists, windash and base64 variants): a single pass over the value
        instead of one comparison per value."""
        groups: dict[tuple[str, bool], list[StringTest]] = {}
        keywords: dict[bool, list[StringTest]] = {}
        terms: list[str] = []
        for item in items:
            column = self.column(item.field) if isinstance(item, Match) else None
            if column is not None and isinstance(item.test, StringTest) and _is_string(self.schema[column]):
                groups.setdefault((column, item.test.case_sensitive), []).append(item.test)
            elif isinstance(item, Keyword) and isinstance(item.test, StringTest):
                keywords.setdefault(item.test.case_sensitive, []).append(item.test)
            else:
                terms.append(self.condition(item))
        for case_sensitive, tests in keywords.items():
            terms.append(self.keyword_list(tests, case_sensitive) if len(tests) > 1 else self.keyword(tests[0]))
        for (column, case_sensitive), tests in groups.items():
            if len(tests) == 1:
                terms.append(self.match(column, tests[0]))
            else:
                terms.append(self.string_list(column, tests, case_sensitive))
        return terms

    def string_list(self, column: str, tests: list[StringTest], case_sensitive: bool) -> str:
        subject = self.text(column, case_sensitive)
        fold = (lambda t: t) if case_sensitive else str.lower
        plain = [plain_text(t.pattern) for t in tests if plain_text(t.pattern) is not None]
        patterns = [t.pattern for t in tests if plain_text(t.pattern) is None]
        parts = []
        if plain:
            parts.append(f"{subject} IN ({', '.join(self.dialect.string(fold(p)) for p in dict.fromkeys(plain))})")
        if patterns:
            parts.append(self.dialect.regex(subject, _search_regex(patterns, fold)))
        return "(" + " OR ".join(parts) + ")"

    def text(self, column: str, case_sensitive: bool) -> str:
        """A string column's value for comparison: as it is, or lower case."""
        ident = self.ident(column)
        if case_sensitive:
            return ident
        if self._precompute:
            self.lowered.add(column)
            return self.dialect.ident(lowered_name(self.sql_name(column)))
        return f"lower({ident})"

    def sql_name(self, column: str) -> str:
        return self._sql_names.get(column, column)

    def ident(self, column: str) -> str:
        return self.dialect.ident(self.sql_name(column))

    def column(self, field: str) -> str | None:
        if field in self.schema:
            return field
        return self._folded.get(field.lower())

    def match(self, field: str, test: Test) -> str:
        column = self.column(field)
        if column is None:
            return "TRUE" if isinstance(test, NullTest) or test == ExistsTest(False) else "FALSE"
        if isinstance(test, FieldRefTest):
            return self.field_ref(column, test)
        if isinstance(test, StringTest) and _is_string(self.schema[column]):
            return self.string_test(self.ident(column), self.schema[column], test,
                                    subject=self.text(column, test.case_sensitive))
        return self.value_test(self.ident(column), self.schema[column], test)

    def keyword(self, test: Test) -> str:
        """Keywords search the raw record text when the reader kept it, else every text value."""
        if isinstance(test, StringTest):
            test = StringTest(_contains(test.pattern), test.case_sensitive)
        texts = self._keyword_columns()
        if not texts:
            return "FALSE"
        return "(" + " OR ".join(
            self.value_test(self.ident(name), self.schema[name], test) for name in texts) + ")"

    def keyword_list(self, tests: list[StringTest], case_sensitive: bool) -> str:
        """Several keywords: one search regex per text column (list columns element-wise)."""
        fold = (lambda t: t) if case_sensitive else str.lower
        regex = _search_regex([_contains(t.pattern) for t in tests], fold)
        terms = []
        for name in self._keyword_columns():
            dtype = self.schema[name]
            if _is_string(dtype):
                terms.append(self.dialect.regex(self.text(name, case_sensitive), regex))
            else:
                terms.append(" OR ".join(self.value_test(self.ident(name), dtype,
                                                         StringTest(_contains(t.pattern), case_sensitive))
                                         for t in tests))
        return "(" + " OR ".join(terms) + ")" if terms else "FALSE"

    def _keyword_columns(self) -> list[str]:
        return keyword_columns(self.schema)

    # ---- one value ------------------------------------------------------------------
    def value_test(self, expr: str, dtype: pa.DataType, test: Test) -> str:
        if isinstance(test, NullTest):
            return f"({expr} IS NULL)"
        if isinstance(test, ExistsTest):
            return f"({expr} IS {'NOT ' if test.exists else ''}NULL)"
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            variable = f"x{self._depth}"
            self._depth += 1
            try:
                inner = self.value_test(variable, dtype.value_type, test)
            finally:
                self._depth -= 1
            return f"coalesce({self.dialect.any_element(expr, variable, inner)}, FALSE)"
        if isinstance(test, StringTest):
            return self.string_test(expr, dtype, test)
        if isinstance(test, NumberTest):
            return self.number_test(expr, dtype, test)
        if isinstance(test, BoolTest):
            return self.bool_test(expr, dtype, test)
        if isinstance(test, CidrTest):
            return self.dialect.cidr(self.dialect.as_text(expr, dtype), test)
        if isinstance(test, RegexTest):
            return self.dialect.regex(self.dialect.as_text(expr, dtype), _regex_with_flags(test))
        if isinstance(test, TimePartTest):
            if test.part not in _TIME_PARTS:
                raise Unprintable(f"unknown time part {test.part}")
            part = self.dialect.time_part(test.part, self.dialect.timestamp(expr, dtype))
            return f"({part} {_sql_op(test.op)} {test.value})"
        raise Unprintable(f"unsupported test {type(test).__name__}")

    def string_test(self, expr: str, dtype: pa.DataType, test: StringTest, subject: str | None = None) -> str:
        text = plain_text(test.pattern)
        if text is not None and _is_numeric(dtype) and _DECIMAL.fullmatch(text.strip()):
            return f"({expr} = {_number(float(text))})"
        if text is not None and pa.types.is_boolean(dtype) and text.lower() in _TRUE_WORDS + _FALSE_WORDS:
            return f"({expr} = {'TRUE' if text.lower() in _TRUE_WORDS else 'FALSE'})"
        value = subject
        if value is None:
            value = self.dialect.as_text(expr, dtype)
            if not test.case_sensitive:
                value = f"lower({value})"
        if text is not None:
            literal = text if test.case_sensitive else text.lower()
            return f"({value} = {self.dialect.string(literal)})"
        pattern = _like_pattern(test.pattern)
        if not test.case_sensitive:
            pattern = pattern.lower()
        return f"({self.dialect.like(value, pattern)})"

    def number_test(self, expr: str, dtype: pa.DataType, test: NumberTest) -> str:
        if not isinstance(test.value, (int, float)) or (isinstance(test.value, float) and not math.isfinite(test.value)):
            return "FALSE"
        if _is_numeric(dtype):
            value = expr
        elif pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            value = self.dialect.as_number(expr)
        else:
            return "FALSE"
        return f"({value} {_sql_op(test.op)} {_number(test.value)})"

    def bool_test(self, expr: str, dtype: pa.DataType, test: BoolTest) -> str:
        if pa.types.is_boolean(dtype):
            return f"({expr} = {'TRUE' if test.value else 'FALSE'})"
        if _is_numeric(dtype):
            return f"({expr} = {1 if test.value else 0})"
        words = _TRUE_WORDS if test.value else _FALSE_WORDS
        listed = ", ".join(self.dialect.string(w) for w in words)
        return f"(lower({self.dialect.as_text(expr, dtype)}) IN ({listed}))"

    def field_ref(self, column: str, test: FieldRefTest) -> str:
        other = self.column(test.other)
        if other is None:
            return "FALSE"
        left = f"lower({self.dialect.as_text(self.ident(column), self.schema[column])})"
        right = f"lower({self.dialect.as_text(self.ident(other), self.schema[other])})"
        if test.starts_with and test.ends_with:
            return f"(contains({left}, {right}))"
        if test.starts_with:
            return f"(starts_with({left}, {right}))"
        if test.ends_with:
            return f"(ends_with({left}, {right}))"
        return f"({left} = {right})"


def lowered_name(column: str) -> str:
    """The name of the precomputed lower-case copy of a column."""
    return f"{column}\x1flower"


def _is_string(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _search_regex(patterns, fold) -> str:
    """Sigma patterns as one RE2 search regex. ``contains``/``startswith``/``endswith``
    shapes become bare, ``^``- or ``$``-anchored literals (RE2 runs an alternation of
    literals in one fast pass; ``.*x.*`` full matches of many values it does not); other
    shapes are anchored at both ends. ``(?s)`` lets ``.`` match any character."""
    alternatives = []
    for pattern in patterns:
        parts = list(pattern)
        start = "" if parts and parts[0] is Wildcard.ANY else "^"
        end = "" if parts and parts[-1] is Wildcard.ANY else "$"
        while parts and parts[0] is Wildcard.ANY:
            parts.pop(0)
        while parts and parts[-1] is Wildcard.ANY:
            parts.pop()
        body = "".join(".*" if p is Wildcard.ANY else "." if p is Wildcard.ONE else re.escape(fold(p)) for p in parts)
        alternatives.append(start + body + end)
    return "(?s)" + "|".join(dict.fromkeys(alternatives))


def keyword_columns(schema: Mapping[str, pa.DataType]) -> list[str]:
    """The columns a keyword searches: the raw record text when the reader kept it, else
    every text value."""
    if RAW_COLUMN in schema:
        return [RAW_COLUMN]
    return [name for name, dtype in schema.items() if _is_text_like(dtype) and not name.startswith("__")]


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def _is_text_like(dtype: pa.DataType) -> bool:
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _is_text_like(dtype.value_type)
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 63:
        return str(int(value))
    return repr(value)


def _sql_op(op: str) -> str:
    return "=" if op == "==" else op


def _like_pattern(pattern) -> str:
    out = []
    for part in pattern:
        if part is Wildcard.ANY:
            out.append("%")
        elif part is Wildcard.ONE:
            out.append("_")
        else:
            out.append(re.sub(r"([\\%_])", r"\\\1", part))
    return "".join(out)


def _contains(pattern) -> tuple:
    head = () if pattern and pattern[0] is Wildcard.ANY else (Wildcard.ANY,)
    tail = () if pattern and pattern[-1] is Wildcard.ANY else (Wildcard.ANY,)
    return head + tuple(pattern) + tail


def _regex_with_flags(test: RegexTest) -> str:
    flags = "".join(flag for flag, on in (("i", test.ignore_case), ("m", test.multiline),
                                          ("s", test.dotall)) if on)
    return f"(?{flags}){test.regex}" if flags else test.regex
