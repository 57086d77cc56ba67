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
from collections.abc import Mapping

import pyarrow as pa

from rpcwatch.networks import merged_key_ranges
from rpcwatch.schema import RAW_COLUMN
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
LIKE_ESCAPE = "\\"
#: a dotted-quad IPv4 address as Python's ``ipaddress`` accepts it (no leading zeros)
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_ADDRESS = r"\.".join([_OCTET] * 4)
#: IPv4 keys are ``::ffff:a.b.c.d`` (see rpcwatch.networks)
_V4_KEY_PREFIX = "00000000000000000000ffff"
#: end of input in RE2 and Java regexes alike (Java's ``$`` also matches before a final newline)
_END = r"\z"


class Dialect:
    """DuckDB SQL, as run by the embedded engine. Subclass for other engines."""

    name = "duckdb"
    #: ``engine``: functions the engine registers (fast); ``portable``: plain SQL only
    cidr_mode = "engine"
    #: evaluate rules (or rules sharing a route selection) as UNION ALL branches rather
    #: than one OR (see engines/query.py)
    union_rule_groups = False
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
        return f"{expr} LIKE {self.string(pattern)} ESCAPE {self.string(LIKE_ESCAPE)}"

    def starts_with(self, text: str, prefix: str) -> str:
        return f"starts_with({text}, {prefix})"

    def ends_with(self, text: str, suffix: str) -> str:
        return f"ends_with({text}, {suffix})"

    def contains(self, text: str, part: str) -> str:
        return f"contains({text}, {part})"

    def non_null_list(self, items: list[str]) -> str:
        """A list of the items that are not NULL (the rules a row matched)."""
        return f"list_filter([{', '.join(items)}], lambda r: r IS NOT NULL)"

    def not_empty(self, expr: str) -> str:
        """The list is not empty."""
        return f"len({expr}) > 0"

    def cidr(self, expr: str, test: CidrTest) -> str:
        if self.cidr_mode == "engine":
            networks = ",".join(str(net) for net in test.networks)
            if len(networks) > self.LONG_NETWORK_LIST:
                handle = "@" + hashlib.sha256(networks.encode()).hexdigest()[:24]
                self.network_lists[handle] = networks
                networks = handle
            return f"rpcw_ip_in({expr}, {self.string(networks)})"
        ranges = merged_key_ranges(test.networks)
        if not ranges:
            return "FALSE"
        # the key is computed once per test, not once per range
        return self.bind(self.ip_key(expr), "rpcw_k",
                         " OR ".join(f"rpcw_k BETWEEN '{lo}' AND '{hi}'" for lo, hi in ranges))

    def timestamp(self, expr: str, dtype: pa.DataType) -> str:
        if pa.types.is_timestamp(dtype):
            return expr
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
            return f"to_timestamp({expr})"
        return f"TRY_CAST({self.as_text(expr, dtype)} AS TIMESTAMP)"

    def time_part(self, part: str, timestamp: str) -> str:
        return f"date_part('{part}', {timestamp})"

    # ---- portable CIDR: the address key in plain SQL (see address_key_sql) --------------
    def ip_key(self, expr: str) -> str:
        """The 32-hex-digit key of an address text, NULL when it is not an address."""
        return f"rpcw_ip_key({expr})"

    def ip_key_definitions(self) -> list[str]:
        """Statements that define what :meth:`ip_key` calls, run once per session."""
        return [f"CREATE OR REPLACE MACRO rpcw_ip_key(s) AS {address_key_sql(self, 's')}"]

    def bind(self, value: str, variable: str, body: str) -> str:
        """``body`` with ``variable`` standing for ``value``, which is evaluated once."""
        return f"list_transform([{value}], lambda {variable}: {body})[1]"

    def list_size(self, items: str) -> str:
        return f"len({items})"

    def empty_text_list(self) -> str:
        return "[]::VARCHAR[]"

    def concat_lists(self, *lists: str) -> str:
        return f"list_concat({', '.join(lists)})"

    def repeat_list(self, item: str, count: str) -> str:
        return f"list_transform(range({count}), lambda rpcw_i: {item})"

    def all_elements(self, items: str, variable: str, condition: str) -> str:
        return f"list_bool_and(list_transform({items}, lambda {variable}: {condition}))"

    def join_mapped(self, items: str, variable: str, expr: str) -> str:
        """The texts ``expr`` gives for each element, joined without a separator."""
        return f"array_to_string(list_transform({items}, lambda {variable}: {expr}), '')"

    def trim(self, expr: str, characters: str) -> str:
        return f"trim({expr}, {self.string(characters)})"


class SparkDialect(Dialect):
    """Spark SQL (3.3 or later). CIDR is always ``portable``: the address key is plain
    SQL, so executors need neither Python nor rpcwatch. Regular expressions are Java's:
    the same for the patterns Sigma rules use, but ``$`` also matches before a final line
    break, so anchors are written ``\\z``."""

    name = "spark"
    cidr_mode = "portable"
    # Spark compiles a filter per top-level conjunct and interprets, for every row, a
    # predicate it cannot compile whole (lambdas make the address key such a one): under
    # one OR of all rules, 5 M rows took 40 s; as branches each rule's cheap conjuncts
    # (port, protocol) are compiled and run first, and the key only on what passes
    union_rule_groups = True

    def ident(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def string(self, text: str) -> str:
        # backslash is an escape character in Spark's string literals (the default
        # spark.sql.parser.escapedStringLiterals=false), so it is doubled too
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def as_text(self, expr: str, dtype: pa.DataType) -> str:
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_boolean(dtype):
            return super().as_text(expr, dtype)
        return f"CAST({expr} AS STRING)"

    def any_element(self, column: str, variable: str, condition: str) -> str:
        return f"exists({column}, {variable} -> {condition})"

    def regex(self, expr: str, regex: str) -> str:
        return f"regexp_like({expr}, {self.string(regex)})"

    def regex_full(self, expr: str, regex: str) -> str:
        return f"regexp_like({expr}, {self.string('^(?:' + regex + ')' + _END)})"

    def starts_with(self, text: str, prefix: str) -> str:
        return f"startswith({text}, {prefix})"

    def ends_with(self, text: str, suffix: str) -> str:
        return f"endswith({text}, {suffix})"

    def non_null_list(self, items: list[str]) -> str:
        return f"filter(array({', '.join(items)}), r -> r IS NOT NULL)"

    def not_empty(self, expr: str) -> str:
        return f"size({expr}) > 0"

    def timestamp(self, expr: str, dtype: pa.DataType) -> str:
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
            return f"timestamp_seconds({expr})"
        return super().timestamp(expr, dtype)

    def ip_key(self, expr: str) -> str:
        # inlined rather than a SQL function: Spark refuses SQL functions inside lambdas
        # (a CIDR test on a list column is one), and inlines them anyway
        return address_key_sql(self, expr)

    def ip_key_definitions(self) -> list[str]:
        return []

    def bind(self, value: str, variable: str, body: str) -> str:
        return f"element_at(transform(array({value}), {variable} -> {body}), 1)"

    def list_size(self, items: str) -> str:
        return f"size({items})"

    def empty_text_list(self) -> str:
        return "CAST(array() AS ARRAY<STRING>)"

    def concat_lists(self, *lists: str) -> str:
        return f"concat({', '.join(lists)})"

    def repeat_list(self, item: str, count: str) -> str:
        return f"array_repeat({item}, {count})"

    def all_elements(self, items: str, variable: str, condition: str) -> str:
        return f"forall({items}, {variable} -> {condition})"

    def join_mapped(self, items: str, variable: str, expr: str) -> str:
        return f"array_join(transform({items}, {variable} -> {expr}), '')"

    def trim(self, expr: str, characters: str) -> str:
        return f"trim(BOTH {self.string(characters)} FROM {expr})"


def address_key_sql(d: Dialect, text: str) -> str:
    """``networks.address_key`` of an address text as one SQL expression (NULL when the
    text is not an address), built from the dialect's primitives: surrounding blanks and
    brackets, a zone id and upper case are tolerated; IPv4 and IPv4-mapped IPv6 become
    ``::ffff:a.b.c.d``. ``text`` appears once and every value used twice is bound
    (:meth:`Dialect.bind`), so the expression stays linear in size wherever it is inlined."""
    def octets(v: str) -> list[str]:
        return [f"CAST(split_part({v}, '.', {i}) AS INTEGER)" for i in range(1, 5)]

    def groups_of(part: str) -> str:
        return f"CASE WHEN {part} = '' THEN {d.empty_text_list()} ELSE split({part}, {d.string(':')}) END"

    zero, colon, double_colon = d.string("0"), d.string(":"), d.string("::")
    v4_tail = _V4_ADDRESS + _END
    o = octets("rpcw_w")
    # a trailing dotted quad (::ffff:1.2.3.4) becomes two hex groups
    v4_groups = d.bind(f"regexp_extract(rpcw_u, {d.string('(' + v4_tail + ')')}, 1)", "rpcw_w",
                       f"printf('%x:%x', {o[0]} * 256 + {o[1]}, {o[2]} * 256 + {o[3]})")
    v6_text = (f"CASE WHEN {d.regex('rpcw_u', ':' + v4_tail)} "
               f"THEN concat(regexp_replace(rpcw_u, {d.string(v4_tail)}, ''), {v4_groups}) ELSE rpcw_u END")
    head, tail = "rpcw_h", "rpcw_r"
    padding = f"8 - {d.list_size(head)} - {d.list_size(tail)}"
    expand = d.bind(groups_of("split_part(rpcw_t, '::', 1)"), head, d.bind(
        groups_of("split_part(rpcw_t, '::', 2)"), tail,
        f"CASE WHEN {d.list_size(head)} + {d.list_size(tail)} <= 7 "
        f"THEN {d.concat_lists(head, d.repeat_list(zero, padding), tail)} END"))
    groups = d.bind(v6_text, "rpcw_t", f"CASE WHEN NOT {d.contains('rpcw_t', double_colon)} "
                                       f"THEN split(rpcw_t, {colon}) "
                                       f"WHEN {d.list_size(f'split(rpcw_t, {double_colon})')} = 2 THEN {expand} END")
    hex_group = d.regex("rpcw_x", "^[0-9a-f]{1,4}" + _END)
    v6_key = d.bind(groups, "rpcw_g", f"CASE WHEN {d.list_size('rpcw_g')} = 8 AND "
                                      f"{d.all_elements('rpcw_g', 'rpcw_x', hex_group)} "
                                      f"THEN {d.join_mapped('rpcw_g', 'rpcw_x', f'lpad(rpcw_x, 4, {zero})')} END")
    v6_address = d.bind(f"lower(split_part({d.trim('rpcw_v', '[]')}, '%', 1))", "rpcw_u", v6_key)
    v4_hex = "printf('%02x%02x%02x%02x', " + ", ".join(octets("rpcw_v")) + ")"
    return d.bind(d.trim(text, " "), "rpcw_v", (
        f"CASE WHEN {d.regex('rpcw_v', '^' + v4_tail)} THEN concat('{_V4_KEY_PREFIX}', {v4_hex}) "
        f"WHEN {d.contains('rpcw_v', colon)} THEN {v6_address} END"))


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
        self._folded: dict[str, str] = {}
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
        plain = [text for text in (plain_text(t.pattern) for t in tests) if text is not None]
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
        if isinstance(test, NullTest):  # no value: unset, or empty text (docs/sigma-support.md)
            return f"({expr} IS NULL OR {expr} = '')" if _is_string(dtype) else f"({expr} IS NULL)"
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
        value = test.value
        if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            return "FALSE"
        if _is_numeric(dtype):
            operand = expr
        elif pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            operand = self.dialect.as_number(expr)
        else:
            return "FALSE"
        return f"({operand} {_sql_op(test.op)} {_number(test.value)})"

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
            return f"({self.dialect.contains(left, right)})"
        if test.starts_with:
            return f"({self.dialect.starts_with(left, right)})"
        if test.ends_with:
            return f"({self.dialect.ends_with(left, right)})"
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
