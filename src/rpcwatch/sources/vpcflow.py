"""AWS VPC Flow Logs as delivered to S3 or CloudWatch: space-separated records, gzip or not.

Every record becomes a row of table ``aws.vpcflow`` with AWS's field names (``srcaddr``,
``dstport``, ``log-status``). A line starting with ``version`` is a header naming the
fields of the lines after it (custom formats; S3 objects concatenated repeat it). Without
a header a record is in a default format: the Transit Gateway's (its fourth field is the
``tgw-`` id) or the VPC's, whose first 14 fields are version 2's and whose further fields
follow AWS's order of the v3 to v8 fields. ``-`` is an unset value. Blocks are parsed by
Arrow's CSV reader with a space as the delimiter.
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from rpcwatch.sources.base import ReadStats, TableBatch, register
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.lines import LineParser, LineReader, excerpt
from rpcwatch.sources.prefilter import PrefilterPlan
from rpcwatch.sources.scan import Run

VPC_TABLE = "aws.vpcflow"
HEADER_START = b"version "

#: the default format (version 2), then the fields versions 3, 4, 5, 7 and 8 added, in
#: the order AWS lists them (a headerless record with more than 14 fields has them so)
VPC_FIELDS = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets",
    "bytes", "start", "end", "action", "log-status",
    "vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr",
    "region", "az-id", "sublocation-type", "sublocation-id",
    "pkt-src-aws-service", "pkt-dst-aws-service", "flow-direction", "traffic-path",
    "ecs-cluster-arn", "ecs-cluster-name", "ecs-container-instance-arn", "ecs-container-instance-id",
    "ecs-container-id", "ecs-second-container-id", "ecs-service-name", "ecs-task-definition-arn", "ecs-task-arn",
    "ecs-task-id",
    "reject-reason",
)
DEFAULT_WIDTH = 14
#: the Transit Gateway's default format
TGW_FIELDS = (
    "version", "resource-type", "account-id", "tgw-id", "tgw-attachment-id", "tgw-src-vpc-account-id",
    "tgw-dst-vpc-account-id", "tgw-src-vpc-id", "tgw-dst-vpc-id", "tgw-src-subnet-id", "tgw-dst-subnet-id",
    "tgw-src-eni", "tgw-dst-eni", "tgw-src-az-id", "tgw-dst-az-id", "tgw-pair-attachment-id", "srcaddr",
    "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes", "start", "end", "log-status", "type",
    "packets-lost-no-route", "packets-lost-blackhole", "packets-lost-mtu-exceeded", "packets-lost-ttl-expired",
    "tcp-flags", "region", "flow-direction", "pkt-src-aws-service", "pkt-dst-aws-service",
)
INTEGER_FIELDS = frozenset({
    "version", "srcport", "dstport", "protocol", "packets", "bytes", "start", "end", "tcp-flags", "traffic-path",
    "packets-lost-no-route", "packets-lost-blackhole", "packets-lost-mtu-exceeded", "packets-lost-ttl-expired",
})
_FIELD_NAME = re.compile(r"[a-z][a-z0-9-]*")
_LOG_STATUS = (b"OK", b"NODATA", b"SKIPDATA")
_INTEGER = r"^[0-9]+$"


def default_fields(first: bytes) -> tuple[str, ...] | None:
    """The fields of a headerless record in a default format, from the record itself."""
    values = first.rstrip(b"\r").split(b" ")
    if len(values) == len(TGW_FIELDS) and values[3].startswith(b"tgw-"):
        return TGW_FIELDS
    if DEFAULT_WIDTH <= len(values) <= len(VPC_FIELDS):
        return VPC_FIELDS[:len(values)]
    return None


def header_fields(line: bytes) -> tuple[str, ...] | None:
    """The field names of a ``version ...`` header line, or None when it is not one."""
    names = line.rstrip(b"\r").decode("ascii", errors="replace").split(" ")
    if names[0] != "version" or len(names) < 2 or not all(_FIELD_NAME.fullmatch(n) for n in names):
        return None
    return tuple(names)


def _is_record(line: bytes) -> bool:
    """A record of a default format: version, account, addresses, ports ... and a log status."""
    fields = default_fields(line)
    if fields is None or not line[:1].isdigit():
        return False
    values = line.rstrip(b"\r").split(b" ")
    return values[fields.index("log-status")] in _LOG_STATUS


@register
class VpcFlowReader(LineReader):
    format_name = "aws-vpcflow"
    marker = b" "
    headers = HEADER_START

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        first = head.lstrip(b"\r\n").split(b"\n", 1)[0]
        if first.startswith(HEADER_START):
            fields = header_fields(first)
            return fields is not None and {"srcaddr", "dstaddr"} & set(fields) != set()
        return _is_record(first)

    @classmethod
    def resume_context(cls, head: bytes) -> bytes:
        """The header line in force at the end of ``head`` (a custom format names its fields
        there): lines appended later are read with it. Nothing for a default format."""
        complete = head[:head.rfind(b"\n") + 1]
        for line in reversed(complete.splitlines()):
            if line.startswith(HEADER_START) and header_fields(line) is not None:
                return line + b"\n"
        return b""

    def parser(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
               prefilter: PrefilterPlan | None) -> LineParser:
        # Records hold the values as AWS logs them: ports and protocol numbers as decimal
        # fields, which is what the routes' renamed values (tcp -> 6) are; the prefilter is sound.
        scan_filter = prefilter.for_table(VPC_TABLE, self.format_name) if prefilter else None
        first = stream.peek(1 << 16).lstrip(b"\r\n").split(b"\n", 1)[0]
        return _VpcParser(source, stream, stats, scan_filter, default_fields(first))


class _VpcParser(LineParser):
    table = VPC_TABLE

    def __init__(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats, scan_filter,
                 fields: Sequence[str] | None):
        super().__init__(source, stream, stats, scan_filter)
        #: the fields of the header in force; None: records are in a default format
        self.header_names: tuple[str, ...] | None = None
        self._first_fields = fields

    @property
    def _width(self) -> int:
        names = self.header_names or self._first_fields
        return len(names) if names else 0

    def header(self, lines: bytes) -> bool:
        last = lines.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        names = header_fields(last)
        if names is None:
            self.stats.skip("header line with invalid field names (the lines after it are read by the "
                            "header before it)", where=excerpt(last))
        else:
            self.header_names = names
        return False

    def well_formed(self, run: Run) -> bool:
        return self._width > 0 and run.marks == (self._width - 1) * run.lines

    def quick_check(self, data: bytes, lines: int) -> bool:
        return self._width > 0 and data.count(b" ") == (self._width - 1) * lines

    def malformed(self, line: bytes) -> str | None:
        width = line.count(b" ") + 1
        if self.header_names is not None:
            if width != len(self.header_names):
                return f"wrong number of fields (the header names {len(self.header_names)})"
            return None
        if default_fields(line.rstrip(b"\n")) is None:
            return f"wrong number of fields (a default-format record has {DEFAULT_WIDTH} to {len(VPC_FIELDS)})"
        return None

    def parse(self, lines: bytes) -> Iterator[TableBatch]:
        for names, part in self._by_layout(lines):
            table = self._read(names, part)
            if table is not None and table.num_rows:
                yield TableBatch(VPC_TABLE, table, self.source.path, VpcFlowReader.format_name)

    def _by_layout(self, lines: bytes) -> Iterator[tuple[Sequence[str], bytes]]:
        """The lines with the field names they are read with: all at once when they have
        the width of the header (or of the file's first record), else grouped by layout."""
        if self.header_names is not None:
            yield self.header_names, lines
            return
        records = lines.count(b"\n") + (not lines.endswith(b"\n"))
        if self._first_fields is not None and lines.count(b" ") == (len(self._first_fields) - 1) * records:
            yield self._first_fields, lines
            return
        groups: dict[tuple[str, ...], list[bytes]] = {}
        for line in lines.splitlines(keepends=True):  # a block mixing layouts: rare
            fields = default_fields(line.rstrip(b"\n"))
            if fields is not None:
                groups.setdefault(fields, []).append(line if line.endswith(b"\n") else line + b"\n")
        for fields, group in groups.items():
            yield fields, b"".join(group)

    def _read(self, names: Sequence[str], lines: bytes) -> pa.Table | None:
        try:
            raw = pcsv.read_csv(
                pa.py_buffer(lines),
                read_options=pcsv.ReadOptions(column_names=list(names), block_size=1 << 24),
                parse_options=pcsv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False,
                                                double_quote=False, ignore_empty_lines=True,
                                                invalid_row_handler=self._invalid_row),
                convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                    null_values=["-"], strings_can_be_null=True))
        except pa.ArrowInvalid as exc:
            self.stats.skip(f"unparseable block ({exc})", count=lines.count(b"\n") or 1)
            return None
        columns = [self._typed(name, raw.column(name).combine_chunks()) for name in raw.column_names]
        return pa.table(columns, names=raw.column_names)

    def _invalid_row(self, row) -> str:
        self.stats.skip(f"wrong number of fields (expected {row.expected_columns})", where=excerpt(row.text))
        return "skip"

    def _typed(self, name: str, column: pa.Array) -> pa.Array:
        if name not in INTEGER_FIELDS:
            return column
        try:
            return pc.cast(column, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            valid = pc.match_substring_regex(column, _INTEGER)
            bad = pc.sum(pc.invert(pc.fill_null(valid, True))).as_py() or 0
            self.stats.warn(f"invalid number in field {name} (kept as unset)", count=bad)
            return pc.cast(pc.if_else(valid, column, pa.scalar(None, pa.string())), pa.int64())
