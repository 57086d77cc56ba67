"""Byte-level prefilter: skip lines that cannot match any rule before parsing them.

Most rules demand a literal (port 135, ``dce_rpc``, an EventID). A record that does
not contain any of the literals its table's rules demand cannot match, so line-oriented
readers keep only the lines that contain one, found by a single RE2 scan over a large
block. The rules still decide on the parsed record; the prefilter only has to be sound
(never drop a line that could match), not exact.

Soundness limits, by construction of the patterns below:
* numbers are recognised in decimal notation (``135``, ``0135``, ``135.0``, ``"135"``),
  not in exponent notation (``1.35e2``);
* string literals are only taken from characters that no supported log format escapes
  (see :data:`SAFE_LITERAL`), and are matched case-insensitively with Unicode folding
  unless the rule is case-sensitive.
Readers that see a format they cannot reason about get no filter (``--no-prefilter``
turns it off entirely).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import re2

from rpcwatch.schema import Literal, LiteralSet


def _number_pattern(text: str, fmt: str) -> str:
    integer, _, fraction = text.partition(".")
    negative = integer.startswith("-")
    digits = integer.lstrip("-").lstrip("0") or "0"
    significant = fraction.rstrip("0")
    body = re.escape(digits) + (r"\." + re.escape(significant) + "0*" if significant else r"(?:\.0*)?")
    body = " *" + ("-" if negative else "") + "0*" + body + " *"
    if fmt == "zeek-tsv":
        return rf"(?:^|[\t,]){body}(?:[\t,\r]|$)"
    if fmt.endswith("json"):
        return rf"[:\[,]\s*\"?\s*{body}\s*\"?\s*[,\]}}]"
    return rf"(?:^|[^0-9]){body}(?:[^0-9]|$)"


def _pattern(lit: Literal, fmt: str) -> str:
    if lit.kind == "number":
        return _number_pattern(lit.text, fmt)
    escaped = re.escape(lit.text)
    return escaped if lit.case_sensitive else f"(?i:{escaped})"


#: RE2's memory budget for a line pattern. Hundreds of literals (triage's address searches)
#: exhaust the default 8 MB lazy DFA and RE2 falls back to a far slower engine; the memory
#: is only taken when a pattern needs it.
LINE_PATTERN_MEMORY = 64 << 20
#: a prefilter that has kept this share of the first bytes it saw stops filtering: thousands
#: of rules (SigmaHQ's Windows set) demand so many literals that nearly every line holds
#: one, and the scan would only cost time. Stopping is always sound (rules still decide).
USELESS_SHARE, USELESS_SAMPLE = 0.85, 8 << 20


class LineMatcher:
    """Finds the lines of a block that hold one of a filter's alternatives.

    Hyperscan (Intel's multi-pattern matcher, its library in the wheel) scans for all
    alternatives at once at several GB/s and reports where each match ends; the lines
    around those ends are kept. RE2 is the fallback for an alternative Hyperscan cannot
    compile. Caseless alternatives are matched with Unicode case folding (the Kelvin sign
    is a ``k``), as the rules compare. The matcher also learns, per process, whether it
    is worth running (see :data:`USELESS_SHARE`)."""

    def __init__(self, pattern: bytes):
        self.pattern = pattern
        self._scanned = self._kept = 0
        self._database = _hyperscan_database(pattern.split(b"\n"))
        #: the RE2 pattern used when Hyperscan cannot compile the alternatives (re2 has no type stubs)
        self._line: Any = None
        if self._database is None:
            options = re2.Options()
            options.never_capture = True
            options.max_mem = LINE_PATTERN_MEMORY
            alternatives = b"|".join(pattern.split(b"\n"))
            self._line = re2.compile(b"(?m)[^\\n]*(?:" + alternatives + b")[^\\n]*\\n?", options)

    @property
    def native(self) -> bool:
        """Scans with Hyperscan (else with the slower RE2 fallback)."""
        return self._database is not None

    @property
    def useless(self) -> bool:
        return self._scanned >= USELESS_SAMPLE and self._kept >= USELESS_SHARE * self._scanned

    def kept(self, data: bytes) -> bytes:
        """The lines of ``data`` holding an alternative, or all of ``data`` once the filter
        has shown it keeps nearly everything."""
        if self.useless:
            return data
        kept = self._lines(data)
        self._scanned += len(data)
        self._kept += len(kept)
        return kept

    def _lines(self, data: bytes) -> bytes:
        if self._database is None:
            return b"".join(self._line.findall(data))
        ends: list[int] = []
        self._database.scan(data, match_event_handler=lambda _id, _start, end, _flags, _context: ends.append(end))
        lines, last = [], -1
        for end in ends:  # in order of end offset; several in one line keep it once
            if end <= last:
                continue
            start = data.rfind(b"\n", 0, end) + 1
            newline = data.find(b"\n", end)
            last = len(data) if newline < 0 else newline + 1
            lines.append(data[start:last])
        return b"".join(lines)


def _hyperscan_database(alternatives: list[bytes]):
    try:
        import hyperscan
    except ImportError:  # pragma: no cover - the wheel ships the library on every platform we test on
        return None
    from rpcwatch.matchers import cached_databases

    flags = [hyperscan.HS_FLAG_MULTILINE | (hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP
                                            if b"(?i" in alternative else 0) for alternative in alternatives]

    def compile_all() -> dict[str, hyperscan.Database]:
        database = hyperscan.Database()
        try:
            database.compile(expressions=alternatives, ids=list(range(len(alternatives))),
                             elements=len(alternatives), flags=flags)
        except hyperscan.error:
            return {}
        return {"lines": database}

    # thousands of rules' alternatives take seconds to compile: kept in the rule cache
    return cached_databases("line filter", (alternatives, flags), compile_all).get("lines")


def compile_line_pattern(pattern: bytes) -> LineMatcher:
    """The matcher of a :class:`LineFilter` pattern, compiled once per run (and once per
    worker process) and kept in the run context's cache."""
    from rpcwatch.context import current

    matchers = current().line_matchers
    matcher = matchers.get(pattern)
    if matcher is None:
        matcher = matchers[pattern] = LineMatcher(pattern)
    return matcher


class LineFilter:
    """Keeps the lines of a block that contain at least one literal."""

    def __init__(self, literals: LiteralSet, fmt: str):
        self.literals = literals
        #: the filter's alternatives, one per line (empty: no line can match); the key its
        #: matcher is compiled and cached by, also in worker processes
        self.pattern = b""
        if literals:
            self.pattern = "\n".join(sorted(_pattern(lit, fmt) for lit in literals)).encode()

    def select(self, block: bytes) -> bytes:
        if not self.pattern:
            return b""
        return compile_line_pattern(self.pattern).kept(block)


class PrefilterPlan:
    """What the rules need from readers: which literals each table's rules demand
    (``None``: some rule demands none), and which tables' rules search raw record text
    (keyword rules). With ``enabled`` False nothing is filtered (``--no-prefilter``).

    ``columns`` names, per table, the only columns the reader's consumer looks at (a
    table not named: all of them); a reader may leave the others out of its tables
    (Zeek TSV does: converting columns is most of its parsing)."""

    def __init__(self, by_table: Mapping[str, LiteralSet | None], raw_tables: Iterable[str] = (),
                 enabled: bool = True, columns: Mapping[str, frozenset[str]] | None = None):
        self._by_table = dict(by_table) if enabled else {table: None for table in by_table}
        self.raw_tables = frozenset(raw_tables)
        self._columns = dict(columns or {})
        self._filters: dict[tuple[str, str], LineFilter | None] = {}
        #: names this plan in a worker process's cache of filters (it arrives with every input)
        self._token = os.urandom(16).hex()

    def __getstate__(self) -> dict:
        """Sent to worker processes without the compiled filters (each process builds its own
        once per plan: see :meth:`_filter`)."""
        return {**self.__dict__, "_filters": {}}

    def _filter(self, key: tuple[str, str], build) -> LineFilter | None:
        if key not in self._filters:
            from rpcwatch.context import current

            shared = current().line_filters
            cache_key = (self._token, *key)
            if cache_key not in shared:
                shared[cache_key] = build()
            self._filters[key] = shared[cache_key]
        return self._filters[key]

    def keeps_raw(self, table: str) -> bool:
        return table in self.raw_tables

    def columns_for(self, table: str) -> frozenset[str] | None:
        """The columns of ``table`` the consumer reads; ``None``: all of them."""
        return self._columns.get(table)

    def for_table(self, table: str, fmt: str) -> LineFilter | None:
        """The filter for lines of ``table`` written in format ``fmt``; ``None`` keeps all lines.

        A table that no rule reads yields no lines at all (an empty literal set)."""
        literals = self._by_table.get(table, frozenset())
        return self._filter((table, fmt), lambda: None if literals is None else LineFilter(literals, fmt))

    def for_tables(self, prefix: str, fmt: str) -> LineFilter | None:
        """One filter for a stream that may hold records of any table named ``prefix*``."""
        def build() -> LineFilter | None:
            union: set[Literal] = set()
            for table, literals in self._by_table.items():
                if table.startswith(prefix):
                    if literals is None:
                        return None
                    union |= literals
            return LineFilter(frozenset(union), fmt)

        return self._filter((prefix + "*", fmt), build)

