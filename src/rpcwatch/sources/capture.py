"""Packet records out of pcap and pcapng files, streamed in large blocks.

Both containers are decoded here with :mod:`struct` rather than with dpkt's readers:
``dpkt.pcap.Reader`` silently returns a short last packet and never reports the original
(wire) length, converts nanosecond timestamps through ``Decimal`` (slow), and
``dpkt.pcapng.Reader`` knows only the first interface of the first section and no
Simple Packet Blocks. Reading blocks of a few MiB and slicing records out of them also
costs far less per packet than two ``read()`` calls and a header object each.

Every record is yielded as ``(timestamp, link_type, frame_bytes, wire_length)``.
Damage is counted in :class:`~rpcwatch.sources.base.ReadStats`, never raised.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from rpcwatch.sources.base import ReadStats

BLOCK_SIZE = 4 << 20
#: larger records are taken as a corrupt header: no link type carries frames this big
MAX_RECORD = 1 << 24

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAPNG_BYTE_ORDER = 0x1A2B3C4D

BLOCK_INTERFACE = 1
BLOCK_PACKET_OBSOLETE = 2
BLOCK_SIMPLE_PACKET = 3
BLOCK_ENHANCED_PACKET = 6
OPTION_TSRESOL = 9
OPTION_TSOFFSET = 14

Record = tuple[float, int, bytes, int]


def is_capture(head: bytes) -> bool:
    """True for a pcap (either byte order, micro- or nanosecond) or pcapng header."""
    return head[:4] in PCAP_MAGICS or (head[:4] == PCAPNG_MAGIC and len(head) >= 12
                                       and head[8:12] in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"))


class BlockBuffer:
    """A read-ahead window over the stream that hands out byte ranges."""

    def __init__(self, stream: BinaryIO, stats: ReadStats):
        self._stream = stream
        self._stats = stats
        self.data = b""
        self.pos = 0

    def ensure(self, size: int) -> bool:
        """Make ``size`` bytes available from ``pos``; False at end of input."""
        if len(self.data) - self.pos >= size:
            return True
        parts = [self.data[self.pos:]]
        have = len(parts[0])
        while have < size:
            block = self._stream.read(max(BLOCK_SIZE, size - have))
            if not block:
                break
            self._stats.bytes_read += len(block)
            parts.append(block)
            have += len(block)
        self.data = b"".join(parts)
        self.pos = 0
        return have >= size

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def iter_records(stream: BinaryIO, stats: ReadStats) -> Iterator[Record]:
    """Yield every packet record of a pcap or pcapng stream."""
    buffer = BlockBuffer(stream, stats)
    if not buffer.ensure(4):
        stats.skip("capture shorter than its file header")
        return
    if buffer.data[:4] == PCAPNG_MAGIC:
        yield from _pcapng_records(buffer, stats)
    else:
        yield from _pcap_records(buffer, stats)


def _pcap_records(buffer: BlockBuffer, stats: ReadStats) -> Iterator[Record]:
    if not buffer.ensure(24):
        stats.skip("capture shorter than its file header")
        return
    order, unit = PCAP_MAGICS[buffer.data[:4]]
    link_type = struct.unpack_from(order + "I", buffer.data, 20)[0] & 0x0FFFFFFF
    buffer.pos = 24
    unpack_header = struct.Struct(order + "IIII").unpack_from
    # the window (data, pos, size) is held in locals: this loop runs once per packet
    data, pos, size = buffer.data, buffer.pos, len(buffer.data)
    while True:
        if size - pos < 16:
            buffer.pos = pos
            if not buffer.ensure(16):
                if buffer.left:
                    stats.skip("truncated capture (partial last packet header)",
                               where=f"last {buffer.left} bytes")
                return
            data, pos, size = buffer.data, buffer.pos, len(buffer.data)
        seconds, fraction, captured, wire = unpack_header(data, pos)
        if captured > MAX_RECORD:
            stats.lose("corrupt packet header (rest of capture unreadable)",
                       where=f"captured length {captured}")
            return
        end = pos + 16 + captured
        if end > size:
            buffer.pos = pos
            if not buffer.ensure(16 + captured):
                stats.skip("truncated capture (partial last packet)",
                           where=f"{buffer.left - 16} of {captured} bytes")
                return
            data, pos, size = buffer.data, buffer.pos, len(buffer.data)
            end = pos + 16 + captured
        yield seconds + fraction * unit, link_type, data[pos + 16:end], wire
        pos = end


@dataclass
class _Interface:
    link_type: int
    unit: float = 1e-6
    offset: int = 0


@dataclass
class _Section:
    order: str = "<"
    interfaces: list[_Interface] = field(default_factory=list)


def _pcapng_records(buffer: BlockBuffer, stats: ReadStats) -> Iterator[Record]:
    section = _Section()
    last_ts = 0.0
    while True:
        if not buffer.ensure(12):
            if buffer.left:
                stats.skip("truncated capture (partial last block)", where=f"last {buffer.left} bytes")
            return
        data, pos = buffer.data, buffer.pos
        if data[pos:pos + 4] == PCAPNG_MAGIC:
            section = _new_section(data, pos)
            if section is None:
                stats.lose("corrupt pcapng section header (rest of capture unreadable)")
                return
        block_type, length = struct.unpack_from(section.order + "II", data, pos)
        if length < 12 or length % 4 or length > MAX_RECORD:
            stats.lose("corrupt pcapng block (rest of capture unreadable)",
                       where=f"block type {block_type}, length {length}")
            return
        if not buffer.ensure(length):
            stats.skip("truncated capture (partial last block)", where=f"{buffer.left} of {length} bytes")
            return
        data, pos = buffer.data, buffer.pos
        buffer.pos = pos + length
        body = data[pos + 8:pos + length - 4]
        if block_type == BLOCK_ENHANCED_PACKET or block_type == BLOCK_PACKET_OBSOLETE:
            record = _packet_block(block_type, body, section, stats)
            if record is not None:
                last_ts = record[0]
                yield record
        elif block_type == BLOCK_SIMPLE_PACKET:
            record = _simple_packet_block(body, section, last_ts, stats)
            if record is not None:
                yield record
        elif block_type == BLOCK_INTERFACE:
            section.interfaces.append(_interface(body, section.order))


def _new_section(data: bytes, pos: int) -> _Section | None:
    for order in ("<", ">"):
        if struct.unpack_from(order + "I", data, pos + 8)[0] == PCAPNG_BYTE_ORDER:
            return _Section(order=order)
    return None


def _interface(body: bytes, order: str) -> _Interface:
    if len(body) < 8:
        return _Interface(link_type=-1)
    interface = _Interface(link_type=struct.unpack_from(order + "H", body, 0)[0])
    pos = 8
    while pos + 4 <= len(body):
        code, size = struct.unpack_from(order + "HH", body, pos)
        value = body[pos + 4:pos + 4 + size]
        if code == 0:
            break
        if code == OPTION_TSRESOL and size >= 1:
            exponent = value[0] & 0x7F
            interface.unit = 2.0 ** -exponent if value[0] & 0x80 else 10.0 ** -exponent
        elif code == OPTION_TSOFFSET and size >= 8:
            interface.offset = struct.unpack_from(order + "q", value)[0]
        pos += 4 + size + (-size % 4)
    return interface


def _packet_block(block_type: int, body: bytes, section: _Section,
                  stats: ReadStats) -> Record | None:
    order = section.order
    if len(body) < 20:
        stats.skip("corrupt pcapng packet block (too short)")
        return None
    if block_type == BLOCK_ENHANCED_PACKET:
        interface_id, high, low, captured, wire = struct.unpack_from(order + "IIIII", body, 0)
    else:
        interface_id, _drops, high, low, captured, wire = struct.unpack_from(order + "HHIIII", body, 0)
    if interface_id >= len(section.interfaces):
        stats.skip("pcapng packet for an undeclared interface", where=f"interface {interface_id}")
        return None
    interface = section.interfaces[interface_id]
    frame = body[20:20 + captured]
    if len(frame) < captured:
        stats.warn("pcapng packet block shorter than its captured length (frame cut)")
    return interface.offset + ((high << 32) | low) * interface.unit, interface.link_type, frame, wire


def _simple_packet_block(body: bytes, section: _Section, last_ts: float,
                         stats: ReadStats) -> Record | None:
    """A Simple Packet Block has no timestamp: it takes the previous packet's."""
    if not section.interfaces or len(body) < 4:
        stats.skip("corrupt pcapng simple packet block")
        return None
    wire = struct.unpack_from(section.order + "I", body, 0)[0]
    return last_ts, section.interfaces[0].link_type, body[4:4 + wire], wire
