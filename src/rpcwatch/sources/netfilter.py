"""Linux netfilter packet logs (iptables/nftables ``LOG``, ``NFLOG`` via ulogd's syslog
output): the kernel's ``IN= OUT= SRC= DST= PROTO=TCP SPT= DPT=135 ... SYN`` lines as
syslog, ``kern.log``, ``dmesg`` or ``journalctl -o short*`` text, or ``journalctl -o json``.

Every packet line becomes a row of table ``netfilter``: the kernel's keys as columns
(``SRC``, ``DPT``, ``PROTO`` ...), the TCP flags in ``flags``, the log prefix in ``action``,
the syslog host in ``host`` and the time in ``timestamp`` (epoch seconds). Only the outer
packet header counts: an ICMP error quotes the packet it answers inside ``[...]``, and that
quote is never read as the line's own header. Fields are extracted from whole blocks with
Arrow's vectorised regular expressions (RE2); no Python object is made per line.
"""
from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.sources.base import ReadStats, TableBatch, register
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.jsonlines import JsonLinesParser
from rpcwatch.sources.lines import LineParser, LineReader
from rpcwatch.sources.prefilter import LineFilter, PrefilterPlan
from rpcwatch.sources.scan import Run

NETFILTER_TABLE = "netfilter"
#: a packet line: IN= (not PHYSIN=) then the addresses and the protocol of the packet
_PACKET_LINE = re.compile(rb"(?:^|[^A-Za-z0-9_])IN=[^ ]* .*?\bSRC=[^ ]+ DST=[^ ]+ .*?\bPROTO=")
_JOURNAL_ENTRY = re.compile(rb'\A\{.*"(?:__REALTIME_TIMESTAMP|_TRANSPORT)"\s*:.*"MESSAGE"\s*:|'
                            rb'\A\{.*"MESSAGE"\s*:.*"(?:__REALTIME_TIMESTAMP|_TRANSPORT)"\s*:')
NOT_A_PACKET = "not a netfilter packet line (no IN=, SRC=, DST=, PROTO=)"
#: a syslog header: priority, RFC 3164 or ISO time, then the rest
_SYSLOG = (r"^(?:<[0-9]{1,3}>)?(?:1 )?(?P<time>[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}"
           r"|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
           r" *(?P<rest>.*)$")
#: the host before ``kernel:``, or a first word that is not itself the prefix (``DENY:``)
_HOST = r"^(?:(?P<host>[^ \[\]]*[^ \[\]:]) (?:kernel: )?|kernel: )?(?P<prefix>.*)$"
#: the kernel's own time stamp (seconds since boot) before the prefix
_UPTIME = r"^\[ *[0-9]+\.[0-9]+\] *"
#: the keys kept, as the kernel writes them (IPv4 and IPv6; TCP, UDP, ICMP): each is one
#: vectorised pass over the block, so only what rules and triage use
KEYS = ("IN", "OUT", "MAC", "SRC", "DST", "LEN", "TTL", "HOPLIMIT", "ID", "PROTO", "SPT", "DPT", "WINDOW", "TYPE",
        "CODE", "MARK")
INTEGER_KEYS = frozenset({"LEN", "TTL", "HOPLIMIT", "SPT", "DPT", "WINDOW", "TYPE", "CODE"})
#: the TCP flag words, which the kernel writes between RES= and URGP=
_FLAGS = r" RES=[^ ]* (?P<flags>(?:[A-Z]{3} )*)URGP="


def is_journal_entry(line: bytes) -> bool:
    return bool(_JOURNAL_ENTRY.match(line))


@register
class NetfilterReader(LineReader):
    format_name = "netfilter"
    marker = b"SRC="

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        lines = head.lstrip(b"\r\n").split(b"\n")[:-1] or [head]
        if lines[0].startswith(b"{") and not is_journal_entry(lines[0]):
            return False
        return any(_PACKET_LINE.search(line) for line in lines)

    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        # Both shapes hold the kernel's text as it wrote it (PROTO=TCP, DPT=135, addresses);
        # rules compare case-insensitively and numbers as whole fields: the prefilter is sound.
        # The journal's JSON strings hold the text too, so they are scanned as text, not JSON.
        scan_filter = prefilter.for_table(NETFILTER_TABLE, self.format_name) if prefilter else None
        first = stream.peek(1 << 16).lstrip(b"\r\n").split(b"\n", 1)[0]
        if is_journal_entry(first):
            stats.format = "netfilter-journal-json"
            return _JournalParser(source, stream, stats, scan_filter)
        return _SyslogParser(source, stream, stats, scan_filter, _reference_time(source))


def _reference_time(source: InputFile) -> float:
    """When the log was last written: RFC 3164 time stamps have no year, and a line is
    taken to be from the last year in which its date is not after this."""
    path = source.disk_path or source.reopen_path
    try:
        return os.stat(path).st_mtime if path else time.time()
    except OSError:
        return time.time()


class _SyslogParser(LineParser):
    table = NETFILTER_TABLE

    def __init__(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats, scan_filter: LineFilter | None,
                 reference: float):
        super().__init__(source, stream, stats, scan_filter)
        self.reference = reference

    def well_formed(self, run: Run) -> bool:
        return run.marks == run.lines  # one outer header per line (an ICMP quote has a second)

    def quick_check(self, data: bytes, lines: int) -> bool:
        return data.count(b"SRC=") == lines == data.count(b" DST=") and data.count(b"PROTO=") == lines

    def malformed(self, line: bytes) -> str | None:
        return None if _PACKET_LINE.search(line) else NOT_A_PACKET

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        text = pc.list_flatten(pc.split_pattern(pa.array([lines.decode("utf-8").rstrip("\n")]), "\n"))
        if b"\r" in lines:
            text = pc.utf8_rtrim(text, characters="\r")
        head, body = _packet_lines(text, self.stats)
        header = pc.extract_regex(head, _SYSLOG)
        host_prefix = pc.extract_regex(header.field("rest"), _HOST)
        times = _syslog_times(header.field("time"), self.reference)
        table = _packet_table(body, host_prefix.field("prefix"), times, host_prefix.field("host"))
        yield TableBatch(NETFILTER_TABLE, table, self.source.path, NetfilterReader.format_name)


class _JournalParser(JsonLinesParser):
    """``journalctl -o json``: the kernel's message in ``MESSAGE``, the host and time beside it."""

    table = NETFILTER_TABLE

    def well_formed(self, run: Run) -> bool:
        return run.marks == run.lines and run.edges == b"{}"

    def malformed(self, line: bytes) -> str | None:
        return super().malformed(line) or (None if _PACKET_LINE.search(line) else NOT_A_PACKET)

    def quick_check(self, data: bytes, lines: int) -> bool:
        return super().quick_check(data, lines) and data.count(b"PROTO=") == lines

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        entries = self.json.parse(lines)
        if entries is None or "MESSAGE" not in entries.column_names:
            return
        message = pc.cast(entries.column("MESSAGE").combine_chunks(), pa.string())
        entries = entries.filter(pc.fill_null(pc.match_substring(message, "IN="), False))
        head, body = _packet_lines(message, self.stats)
        micros = _column(entries, "__REALTIME_TIMESTAMP")
        times = pc.divide(pc.cast(pc.cast(micros, pa.string()), pa.float64()), 1e6) if micros is not None \
            else pa.nulls(len(body), pa.float64())
        host = _column(entries, "_HOSTNAME")
        yield TableBatch(NETFILTER_TABLE, _packet_table(body, head, times, host), self.source.path,
                         "netfilter-journal-json")


def _packet_lines(text: pa.Array, stats: ReadStats) -> tuple[pa.Array, pa.Array]:
    """What comes before the outer header (syslog header, prefix) and the header itself,
    from its ``IN=`` up to the first ``[`` (an ICMP error's quote of the packet it answers).
    Lines without ``IN=`` (a block can pass the cheap checks with one line quoting two
    headers and another with none) are counted and left out."""
    found = pc.fill_null(pc.match_substring(text, "IN="), False)
    others = len(text) - (pc.sum(found).as_py() or 0)
    if others:
        stats.skip(NOT_A_PACKET, count=others)
        text = text.filter(found)
    parts = pc.split_pattern(text, "IN=", max_splits=1)
    header = pc.list_element(pc.split_pattern(pc.list_element(parts, 1), "[", max_splits=1), 0)
    return pc.list_element(parts, 0), pc.binary_join_element_wise("IN=", header, "")


def _column(table: pa.Table, name: str) -> pa.Array | None:
    return table.column(name).combine_chunks() if name in table.column_names else None


def _packet_table(body: pa.Array, prefix: pa.Array, times: pa.Array, host: pa.Array | None) -> pa.Table:
    """The columns of packet lines from their outer headers (``body``) and what came before."""
    prefix = pc.replace_substring_regex(prefix, _UPTIME, "")
    prefix = pc.replace_substring_regex(prefix, r"^ +| *:? *$", "")
    columns = {"timestamp": times, "host": _unset_if_empty(host) if host is not None else pa.nulls(len(body),
                                                                                                       pa.string()),
               "action": _unset_if_empty(prefix)}
    for key in KEYS:
        # the leftmost KEY= is the key itself: the kernel writes IN, OUT, ID, LEN before
        # PHYSIN, PHYSOUT, UID and a UDP header's own LEN (a plain pattern is the fastest)
        value = _unset_if_empty(pc.extract_regex(body, rf"{key}=(?P<v>[^ ]*)").field("v"))
        columns[key] = _integer(value) if key in INTEGER_KEYS else value
    flags = pc.extract_regex(body, _FLAGS).field("flags")
    columns["flags"] = _unset_if_empty(pc.utf8_rtrim(flags, characters=" "))
    return pa.table(columns)


def _unset_if_empty(column: pa.Array) -> pa.Array:
    column = pc.cast(column, pa.string())
    return pc.if_else(pc.fill_null(pc.equal(column, ""), False), pa.scalar(None, pa.string()), column)


def _integer(column: pa.Array) -> pa.Array:
    numeric = pc.match_substring_regex(column, r"^[0-9]+$")
    return pc.cast(pc.if_else(numeric, column, pa.scalar(None, pa.string())), pa.int64())


def _syslog_times(text: pa.Array, reference: float) -> pa.Array:
    """Epoch seconds of RFC 3164 (``Jan  8 03:37:09``, in the latest year not after the
    log's reference time) and ISO-8601 time stamps; UTC where the line gives no zone."""
    iso = pc.match_substring_regex(text, "^[0-9]{4}")
    zoned = pc.if_else(pc.match_substring_regex(text, "(?:Z|[+-][0-9]{2}:?[0-9]{2})$"), text,
                       pc.binary_join_element_wise(text, "Z", ""))
    iso_times = _iso_times(pc.if_else(iso, zoned, pa.scalar(None, pa.string())))
    year = datetime.fromtimestamp(reference, UTC).year
    latest = pa.scalar(int((reference + 86_400) * 1_000_000), pa.timestamp("us", "UTC"))
    bsd = pc.if_else(iso, pa.scalar(None, pa.string()), text)
    bsd_times = _in_year(bsd, year)
    late = pc.fill_null(pc.greater(bsd_times, latest), False)
    if pc.any(late).as_py():
        bsd_times = pc.if_else(late, _in_year(bsd, year - 1), bsd_times)
    moments = pc.coalesce(iso_times, bsd_times)
    return pc.divide(pc.cast(pc.cast(moments, pa.int64()), pa.float64()), 1e6)


def _in_year(text: pa.Array, year: int) -> pa.Array:
    dated = pc.binary_join_element_wise(str(year), text, " ")
    return pc.cast(pc.strptime(dated, format="%Y %b %d %H:%M:%S", unit="us", error_is_null=True),
                   pa.timestamp("us", "UTC"))


def _iso_times(text: pa.Array) -> pa.Array:
    try:
        return pc.cast(text, pa.timestamp("us", "UTC"))
    except pa.ArrowInvalid:  # a malformed time stamp among them: that one is unset
        return pa.array([_iso_time(value) for value in text.to_pylist()], pa.timestamp("us", "UTC"))


def _iso_time(value: str | None) -> datetime | None:
    try:
        return None if value is None else datetime.fromisoformat(value)
    except ValueError:
        return None
