"""The base of every line-oriented text format: Zeek TSV and JSON, Windows JSON exports,
Suricata EVE, cloud flow logs, firewall log lines, ECS documents.

The base does everything but parse: it reads whole lines block by block (scanned by the
worker processes for a large plain file), leaves out lines longer than the run's limit,
applies the prefilter, and for every block that does not pass the format's cheap
integrity check repairs invalid UTF-8, drops blank lines and counts, names and drops the
malformed lines before the prefilter could hide them. A format supplies a
:class:`LineParser` per input: its prefilter, its integrity check, what a malformed
line is, its header lines if it has any, and the parse of kept lines into Arrow tables.

Adding a format (docs/architecture.md has the worked example)::

    @register
    class MyReader(LineReader):
        format_name = "my-format"

        @classmethod
        def sniff(cls, head: bytes) -> bool:
            return head.startswith(b"...")

        def parser(self, source, stream, stats, prefilter) -> LineParser:
            return MyParser(source, stream, stats, prefilter.for_table("my.table", self.format_name)
                            if prefilter else None)
"""
from __future__ import annotations

import io
import re
from abc import abstractmethod
from collections.abc import Iterator
from typing import ClassVar

from rpcwatch.sources.base import Reader, ReadStats, TableBatch
from rpcwatch.sources.inputs import BlockStream, InputFile
from rpcwatch.sources.prefilter import LineFilter, PrefilterPlan
from rpcwatch.sources.scan import Run, line_runs, run_bytes

#: data lines seen before a format can read them (Zeek TSV's data before its ``#fields``
#: header, as btest baselines sort it) are held back up to this size
PENDING_LIMIT = 64 << 20
_BLANK_LINES = re.compile(rb"(?m)^[ \t\r]*\n")
_WHITESPACE_LINE = re.compile(rb"(?m)^[ \t\r]+\n")


class LineParser:
    """One input of a line-oriented format, as :class:`LineReader` reads it."""

    #: the stream and input to read lines from (a format may transform them, e.g. pretty-
    #: printed JSON into one object per line), and where the lines start in it
    source: InputFile
    stream: io.BufferedReader
    start: int = 0
    #: the prefilter that scans the whole input (None: every line is kept)
    scan_filter: LineFilter | None = None
    #: the table the lines now being read belong to, when known before parsing
    table: str | None = None
    #: why the lines now being read cannot be read at all (a header block the format
    #: cannot use): they are counted as skipped with this reason
    unreadable: str | None = None

    def __init__(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
                 scan_filter: LineFilter | None = None):
        self.source, self.stream, self.stats, self.scan_filter = source, stream, stats, scan_filter

    def line_filter(self) -> LineFilter | None:
        """The filter for the lines now being read (a format whose blocks belong to
        different tables, like Zeek TSV, may choose per block)."""
        return self.scan_filter

    @property
    def ready(self) -> bool:
        """False while data lines cannot be read yet (no header seen)."""
        return True

    def header(self, lines: bytes) -> bool:
        """Header lines (formats whose reader sets ``headers``); True when data held back
        until now can be read."""
        return False

    @abstractmethod
    def well_formed(self, run: Run) -> bool:
        """The cheap integrity check, from the counts the scan made (no line looked at)."""

    @abstractmethod
    def malformed(self, line: bytes) -> str | None:
        """Why a (non-blank) line cannot be a record of this format, or None."""

    def quick_check(self, data: bytes, lines: int) -> bool:
        """A whole-block check that every line is well formed, before lines are looked at
        one by one; by default there is none."""
        return False

    @abstractmethod
    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        """The records of whole, well-formed lines as Arrow tables."""


class RewrittenStream(BlockStream):
    """A stream of another stream's bytes rewritten block by block (pretty-printed JSON as
    one object per line), for a :class:`LineParser` to read lines from; subclasses give
    :meth:`next_block`."""


class LineReader(Reader):
    """A line-oriented format: subclasses give :meth:`parser`."""

    #: counted per run by the scan for :meth:`LineParser.well_formed` (TSV: separators;
    #: JSON lines: ``}\n{`` joints)
    marker: ClassVar[bytes] = b"\n"
    #: how header lines start (Zeek TSV: ``#``), empty when the format has none
    headers: ClassVar[bytes] = b""

    @abstractmethod
    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        """The parser for one input (it may consume a first line or transform the stream)."""

    def read(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
             prefilter: PrefilterPlan | None = None) -> Iterator[TableBatch]:
        stats.format = self.format_name
        parser = self.parser(source, stream, stats, prefilter)
        held: list[Run] = []
        for run in line_runs(parser.source, parser.stream, stats, parser.scan_filter, self.marker, self.headers,
                             start=parser.start):
            if run.oversize:
                stats.skip("line longer than the limit (limits.max_line_bytes; its neighbours are kept)",
                           count=len(run.oversize), where=f"at byte {run.oversize[0]}")
            if run.header is not None:
                if parser.header(run.header):
                    for waiting in held:
                        yield from self._data(waiting, parser, stats)
                    held = []
                continue
            if not run.lines:
                continue
            if parser.unreadable:
                stats.skip(parser.unreadable, count=run.lines)
                continue
            if not parser.ready:
                if sum(r.length for r in held) < PENDING_LIMIT:
                    held.append(run)
                else:
                    stats.skip("data line before any header", count=run.lines)
                continue
            yield from self._data(run, parser, stats)
        for waiting in held:
            stats.skip("data line without a header", count=waiting.lines,
                       where=excerpt(run_bytes(parser.source, waiting).split(b"\n", 1)[0]))

    def _data(self, run: Run, parser: LineParser, stats: ReadStats) -> Iterator[TableBatch]:
        if parser.table is not None:
            stats.tables.add(parser.table)
        line_filter = parser.line_filter()
        if run.clean and parser.well_formed(run) and line_filter is parser.scan_filter:
            stats.records += run.lines
            kept = run.kept
        else:  # a closer look: broken lines, blank lines, bad bytes, or other lines than scanned for
            data = repair_utf8(run_bytes(parser.source, run), stats)
            data, records = _checked_lines(data, parser, stats)
            stats.records += records
            kept = line_filter.select(data) if line_filter is not None else data
        if kept:
            yield from parser.parse(kept)


def excerpt(text: str | bytes, limit: int = 80) -> str:
    """A short printable form of a bad line, for skip examples."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    text = text.rstrip("\r\n")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def count_lines(data: bytes) -> int:
    """Lines in a block that ends on a line boundary (or at end of input), blank ones
    included: the shape checks below find blank lines where there are any."""
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def repair_utf8(data: bytes, stats: ReadStats) -> bytes:
    """Invalid UTF-8 cannot enter an Arrow string; escape the bytes as ``\\xNN`` (what
    Zeek itself writes for non-printable bytes) and keep the record."""
    if data.isascii():
        return data
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            fixed = line.decode("utf-8", errors="backslashreplace").encode("utf-8")
            stats.warn("invalid UTF-8 (bytes escaped as \\xNN, record kept)",
                       where=excerpt(fixed))
            lines[index] = fixed
    return b"\n".join(lines)


def _checked_lines(data: bytes, parser: LineParser, stats: ReadStats) -> tuple[bytes, int]:
    """The block without blank lines and without malformed lines (each counted and named);
    and how many records (non-blank lines) it held."""
    data = without_blank_lines(data)
    if not data.strip():
        return b"", 0
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if b"\x00" not in data and parser.quick_check(data, lines):
        return data, lines
    kept = []
    for line in _lines_of(data):
        reason = "binary data (NUL byte) in line" if b"\x00" in line else parser.malformed(line)
        if reason is None:
            kept.append(line)
        else:
            stats.skip(reason, where=excerpt(line))
    return b"".join(kept), lines


def without_blank_lines(data: bytes) -> bytes:
    """The block without empty and whitespace-only lines. Runs of newlines are folded by
    ``bytes.replace`` (each pass halves them), so a block of millions of empty lines
    costs a few passes, not an object per line."""
    while b"\n\n" in data:
        data = data.replace(b"\n\n", b"\n")
    if data.startswith(b"\n"):
        data = data[1:]
    if _WHITESPACE_LINE.search(data):
        data = _BLANK_LINES.sub(b"", data)
    return data


def _lines_of(data: bytes) -> Iterator[bytes]:
    """The lines of a block one at a time, each with its newline (no list of them all)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        yield data[start:end] if data[start:end].endswith(b"\n") else data[start:end] + b"\n"
        start = end
