"""Packet records out of pcap and pcapng files, streamed in large blocks.

Both containers are decoded here with :mod:`struct` rather than with dpkt's readers:
``dpkt.pcap.Reader`` silently returns a short last packet and never reports the original
(wire) length, converts nanosecond timestamps through ``Decimal`` (slow), and
``dpkt.pcapng.Reader`` knows only the first interface of the first section and no
Simple Packet Blocks. Reading blocks of a few MiB and slicing records out of them also
costs far less per packet than two ``read()`` calls and a header object each.

Every record is yielded as ``(timestamp, link_type, frame_bytes, wire_length)``.
Damage is counted in :class:`~rpcwatch.sources.base.ReadStats`, never raised. A record or
block whose header cannot be right (a length no frame has) does not end the capture: the
reader looks for the next place where two records in a row make sense, counts the bytes
it passed over as lost, and goes on from there.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from rpcwatch.sources.base import ReadStats

BLOCK_SIZE = 4 << 20
#: larger records are taken as a corrupt header: no link type carries frames this big
MAX_RECORD = 1 << 24
#: a pcap record may exceed the file's snap length up to this (writers differ in the limit)
SNAPLEN_FLOOR = 262144
#: at most this much is searched for the next readable record after a corrupt header
RESYNC_WINDOW = 64 << 20
#: timestamps from here on (year 10000) are taken as damage: nothing downstream can hold them
MAX_TIMESTAMP = 253402300800.0

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
BLOCK_SECTION = 0x0A0D0D0A
OPTION_TSRESOL = 9
OPTION_TSOFFSET = 14

Record = tuple[float, int, bytes, int]


def is_capture(head: bytes) -> bool:
    """True for a pcap (either byte order, micro- or nanosecond) or pcapng header."""
    return head[:4] in PCAP_MAGICS or (head[:4] == PCAPNG_MAGIC and len(head) >= 12
                                       and head[8:12] in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"))


class BlockBuffer:
    """A read-ahead window over the stream that hands out byte ranges; ``offset`` is the
    position of ``data`` in the stream."""

    def __init__(self, stream: BinaryIO, stats: ReadStats):
        self._stream = stream
        self._stats = stats
        self.data = b""
        self.pos = 0
        self.offset = 0

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
        self.offset += self.pos
        self.data = b"".join(parts)
        self.pos = 0
        return have >= size

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def find(self, pattern: bytes, shift: int, fits: Callable[[bytes, int], bool], margin: int) -> bool:
        """Move ``pos`` to the next place after it where ``pattern`` stands ``shift`` bytes
        in and ``fits(data, place)`` holds, looking at most :data:`RESYNC_WINDOW` ahead;
        ``fits`` sees ``margin`` bytes from the place where the input has them. False if
        there is no such place (``pos`` is then where the search stopped)."""
        start = self.offset + self.pos
        self.pos += 1
        while self.offset + self.pos - start <= RESYNC_WINDOW:
            end_of_input = not self.ensure(margin)
            data = self.data
            last_place = len(data) if end_of_input else len(data) - margin
            found = data.find(pattern, self.pos + shift, last_place + shift + len(pattern))
            if found < 0:
                self.pos = len(data) if end_of_input else last_place + 1
                if end_of_input:
                    return False
                continue
            place = found - shift
            if fits(data, place):
                self.pos = place
                return True
            self.pos = place + 1
        return False


def iter_records(stream: BinaryIO, stats: ReadStats) -> Iterator[Record]:
    """Yield every packet record of a pcap or pcapng stream."""
    buffer = BlockBuffer(stream, stats)
    if not buffer.ensure(4):
        stats.skip("capture shorter than its file header")
        return
    if buffer.data[:4] == PCAPNG_MAGIC:
        yield from _pcapng_records(buffer, stats)
    elif buffer.data[:4] in PCAP_MAGICS:
        yield from _pcap_records(buffer, stats)
    else:
        stats.lose("not a pcap or pcapng file (no magic number)")


def _pcap_records(buffer: BlockBuffer, stats: ReadStats) -> Iterator[Record]:
    if not buffer.ensure(24):
        stats.skip("capture shorter than its file header")
        return
    order, unit = PCAP_MAGICS[buffer.data[:4]]
    snaplen, link_type = struct.unpack_from(order + "II", buffer.data, 16)
    link_type &= 0x0FFFFFFF
    max_captured = min(MAX_RECORD, max(snaplen, SNAPLEN_FLOOR))
    buffer.pos = 24
    unpack_header = struct.Struct(order + "IIII").unpack_from
    last_seconds = 0
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
        if captured > max_captured:
            buffer.pos = pos
            if not _pcap_resync(buffer, stats, order, unit, max_captured, last_seconds or seconds, captured):
                return
            data, pos, size = buffer.data, buffer.pos, len(buffer.data)
            continue
        end = pos + 16 + captured
        if end > size:
            buffer.pos = pos
            if not buffer.ensure(16 + captured):
                stats.skip("truncated capture (partial last packet)",
                           where=f"{buffer.left - 16} of {captured} bytes")
                return
            data, pos, size = buffer.data, buffer.pos, len(buffer.data)
            end = pos + 16 + captured
        last_seconds = seconds
        yield seconds + fraction * unit, link_type, data[pos + 16:end], wire
        pos = end


def _pcap_resync(buffer: BlockBuffer, stats: ReadStats, order: str, unit: float, max_captured: int,
                 last_seconds: int, captured: int) -> bool:
    """After a record header no frame can have: the next place holding a record header
    that fits (a time near ``last_seconds``, the last good record's or, before any, the
    corrupt one's; lengths within the snap length) followed by another that fits or the
    end of the capture. False when there is none."""
    header = struct.Struct(order + "IIII")
    fraction_limit = round(1 / unit)
    # the seconds' two high bytes hardly change within a capture: search for them
    high = struct.pack(order + "I", last_seconds)
    pattern, shift = (high[2:], 2) if order == "<" else (high[:2], 0)

    def fits_at(data: bytes, place: int) -> bool:
        seconds, fraction, length, wire = header.unpack_from(data, place)
        return (length <= max_captured and length <= wire and fraction < fraction_limit
                and abs(seconds - last_seconds) < 1 << 16)

    def fits(data: bytes, place: int) -> bool:
        if len(data) - place < 16 or not fits_at(data, place):
            return False
        following = place + 16 + header.unpack_from(data, place)[2]
        return len(data) - following < 16 or fits_at(data, following)

    start = buffer.offset + buffer.pos
    found = buffer.find(pattern, shift, fits, margin=32 + max_captured)
    skipped = buffer.offset + buffer.pos - start
    stats.lose(f"corrupt packet header: {skipped} bytes passed over to the next readable packet"
               if found else "corrupt packet header (rest of capture unreadable)",
               where=f"captured length {captured} at byte {start}")
    return found


@dataclass
class _Interface:
    link_type: int
    unit: float = 1e-6
    offset: int = 0


@dataclass
class _Section:
    order: str = "<"
    interfaces: list[_Interface] = field(default_factory=list)
    last_ts: float = 0.0


def _pcapng_records(buffer: BlockBuffer, stats: ReadStats) -> Iterator[Record]:
    section = _Section()
    while True:
        if not buffer.ensure(12):
            if buffer.left:
                stats.skip("truncated capture (partial last block)", where=f"last {buffer.left} bytes")
            return
        data, pos = buffer.data, buffer.pos
        if data[pos:pos + 4] == PCAPNG_MAGIC:
            new_section = _new_section(data, pos)
            if new_section is None:
                if not _pcapng_resync(buffer, stats, section, "corrupt pcapng section header"):
                    return
                continue
            section = new_section
        block_type, length = struct.unpack_from(section.order + "II", data, pos)
        if length < 12 or length % 4 or length > MAX_RECORD:
            if not _pcapng_resync(buffer, stats, section, f"corrupt pcapng block (type {block_type}, "
                                                          f"length {length})"):
                return
            continue
        if not buffer.ensure(length):
            stats.skip("truncated capture (partial last block)", where=f"{buffer.left} of {length} bytes")
            return
        data, pos = buffer.data, buffer.pos
        if struct.unpack_from(section.order + "I", data, pos + length - 4)[0] != length:
            if not _pcapng_resync(buffer, stats, section, f"corrupt pcapng block (type {block_type}, "
                                                          f"length {length} not repeated at its end)"):
                return
            continue
        buffer.pos = pos + length
        body = data[pos + 8:pos + length - 4]
        if block_type == BLOCK_ENHANCED_PACKET or block_type == BLOCK_PACKET_OBSOLETE:
            record = _packet_block(block_type, body, section, stats)
            if record is not None:
                yield record
        elif block_type == BLOCK_SIMPLE_PACKET:
            record = _simple_packet_block(body, section, stats)
            if record is not None:
                yield record
        elif block_type == BLOCK_INTERFACE:
            section.interfaces.append(_interface(body, section.order))


def _pcapng_resync(buffer: BlockBuffer, stats: ReadStats, section: _Section, what: str) -> bool:
    """After a block whose length cannot be right: the next enhanced packet block (at a
    4-byte boundary, its length repeated at its end). False if there is none."""
    order = section.order
    lengths = struct.Struct(order + "I")
    pattern = struct.pack(order + "I", BLOCK_ENHANCED_PACKET)

    def fits(data: bytes, place: int) -> bool:
        if (buffer.offset + place) % 4 or len(data) - place < 12:
            return False
        length = lengths.unpack_from(data, place + 4)[0]
        if length < 32 or length % 4 or length > MAX_RECORD:
            return False
        # a block running past the window is checked whole when it is read
        return len(data) - place < length or lengths.unpack_from(data, place + length - 4)[0] == length

    start = buffer.offset + buffer.pos
    found = buffer.find(pattern, 0, fits, margin=12)
    skipped = buffer.offset + buffer.pos - start
    stats.lose(f"{what}: {skipped} bytes passed over to the next readable block" if found
               else f"{what} (rest of capture unreadable)", where=f"byte {start}")
    return found


def _new_section(data: bytes, pos: int) -> _Section | None:
    if len(data) - pos < 12:
        return None
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
    ts = interface.offset + ((high << 32) | low) * interface.unit
    if 0.0 <= ts < MAX_TIMESTAMP:
        section.last_ts = ts
    else:
        stats.warn("pcapng timestamp out of range (the previous packet's time is used)",
                   where=f"{ts:.6g} s")
        ts = section.last_ts
    return ts, interface.link_type, frame, wire


def _simple_packet_block(body: bytes, section: _Section, stats: ReadStats) -> Record | None:
    """A Simple Packet Block has no timestamp: it takes the previous packet's."""
    if not section.interfaces or len(body) < 4:
        stats.skip("corrupt pcapng simple packet block")
        return None
    wire = struct.unpack_from(section.order + "I", body, 0)[0]
    return section.last_ts, section.interfaces[0].link_type, body[4:4 + wire], wire
