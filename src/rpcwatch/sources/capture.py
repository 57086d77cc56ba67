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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from rpcwatch.sources.base import ReadStats

BLOCK_SIZE = 4 << 20
#: larger records are taken as a corrupt header: no link type carries frames this big
MAX_RECORD = 1 << 24
#: a pcap record may exceed the file's snap length up to this (writers differ in the limit)
SNAPLEN_FLOOR = 262144
#: at most this much is searched for the next readable record after a corrupt header
RESYNC_WINDOW = 64 << 20
#: ... before any good record, when every byte is a place to try
RESYNC_UNTIMED = 1 << 20
#: a pcapng block found after damage is taken only whole, and only up to this size
RESYNC_BLOCK = 1 << 18
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

    def __init__(self, stream: BinaryIO, stats: ReadStats, head: bytes = b""):
        self._stream = stream
        self._stats = stats
        stats.bytes_read += len(head)
        self.data = head
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

    def find(self, pattern: bytes, shift: int, fits: Callable[[bytes, int], bool], margin: int,
             window: int = RESYNC_WINDOW) -> bool:
        """Move ``pos`` to the next place after it where ``pattern`` stands ``shift`` bytes
        in and ``fits(data, place)`` holds, looking at most ``window`` bytes ahead; ``fits``
        sees ``margin`` bytes from the place where the input has them. False if there is no
        such place (``pos`` is then where the search stopped)."""
        start = self.offset + self.pos
        self.pos += 1
        while self.offset + self.pos - start <= window:
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


def iter_records(stream: BinaryIO, stats: ReadStats, head: bytes = b"") -> Iterator[Record]:
    """Yield every packet record of a pcap or pcapng stream; ``head``: its first bytes,
    already read from ``stream``."""
    buffer = BlockBuffer(stream, stats, head)
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
    fraction_limit = round(1 / unit)
    buffer.pos = 24
    unpack_header = struct.Struct(order + "IIII").unpack_from
    last_seconds = None
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
        end = pos + 16 + captured
        broken = captured > max_captured or captured > wire or fraction >= fraction_limit
        if broken or end > size:
            buffer.pos = pos
            # a header no record has, or a length running past the end: damage unless
            # nothing readable follows (a capture cut short)
            if broken or not buffer.ensure(16 + captured):
                resync = _PcapResync(order, unit, max_captured, last_seconds)
                if not resync.run(buffer, stats, captured):
                    return
                data, pos, size = buffer.data, buffer.pos, len(buffer.data)
                continue
            data, pos, size = buffer.data, buffer.pos, len(buffer.data)
            end = pos + 16 + captured
        last_seconds = seconds
        yield seconds + fraction * unit, link_type, data[pos + 16:end], wire
        pos = end


class _PcapResync:
    """After a record header that cannot be right: the next place holding a record header
    that fits (lengths within the snap length, the whole record present, a time near the
    last good record's) followed by another that fits or by the end of the capture. Before
    any good record there is no time to go by: every place of the first
    :data:`RESYNC_UNTIMED` bytes is tried."""

    def __init__(self, order: str, unit: float, max_captured: int, last_seconds: int | None):
        self.header = struct.Struct(order + "IIII")
        self.fraction_limit = round(1 / unit)
        self.max_captured = max_captured
        self.last_seconds = last_seconds
        if last_seconds is None:
            self.pattern, self.shift, self.window = b"", 0, RESYNC_UNTIMED
        else:  # the seconds' two high bytes hardly change within a capture: search for them
            high = struct.pack(order + "I", last_seconds)
            self.pattern, self.shift = (high[2:], 2) if order == "<" else (high[:2], 0)
            self.window = RESYNC_WINDOW

    def run(self, buffer: BlockBuffer, stats: ReadStats, captured: int) -> bool:
        """Move to the next readable record, counting what was passed over; False (with
        the loss or the cut counted) when there is none."""
        start, left = buffer.offset + buffer.pos, buffer.left
        found = buffer.find(self.pattern, self.shift, self.fits, margin=32 + self.max_captured, window=self.window)
        where = f"captured length {captured} at byte {start}"
        if found:
            stats.lose(f"corrupt packet header: {buffer.offset + buffer.pos - start} bytes passed over "
                       f"to the next readable packet", where=where)
        elif left < 16 + captured:
            stats.skip("truncated capture (partial last packet)", where=f"{left - 16} of {captured} bytes")
        else:
            stats.lose("corrupt packet header (rest of capture unreadable)", where=where)
        return found

    def fits_at(self, data: bytes, place: int, near: int | None) -> bool:
        seconds, fraction, length, wire = self.header.unpack_from(data, place)
        return (length <= self.max_captured and length <= wire and fraction < self.fraction_limit
                and (near is None or abs(seconds - near) < 1 << 16) and place + 16 + length <= len(data))

    def fits(self, data: bytes, place: int) -> bool:
        if len(data) - place < 16 or not self.fits_at(data, place, self.last_seconds):
            return False
        seconds, _, length, _ = self.header.unpack_from(data, place)
        following = place + 16 + length
        if following == len(data):  # the last record: only with a time to check it against
            return self.last_seconds is not None
        return len(data) - following >= 16 and self.fits_at(data, following, seconds)


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
        if not buffer.ensure(length):  # a damaged length unless nothing readable follows
            if not _pcapng_resync(buffer, stats, section, f"corrupt pcapng block (type {block_type}, length "
                                                          f"{length} past the end)",
                                  truncated=f"{buffer.left} of {length} bytes"):
                return
            continue
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


def _pcapng_resync(buffer: BlockBuffer, stats: ReadStats, section: _Section, what: str,
                   truncated: str | None = None) -> bool:
    """After a block whose length cannot be right: the next enhanced packet block (at a
    4-byte boundary, whole, its length repeated at its end). False if there is none: then
    the rest is counted as lost, or, with ``truncated`` (where a last block was cut), as a
    capture cut short."""
    order = section.order
    lengths = struct.Struct(order + "I")
    pattern = struct.pack(order + "I", BLOCK_ENHANCED_PACKET)

    def fits(data: bytes, place: int) -> bool:
        if (buffer.offset + place) % 4 or len(data) - place < 12:
            return False
        length = lengths.unpack_from(data, place + 4)[0]
        return (32 <= length <= len(data) - place and not length % 4
                and lengths.unpack_from(data, place + length - 4)[0] == length)

    start = buffer.offset + buffer.pos
    found = buffer.find(pattern, 0, fits, margin=RESYNC_BLOCK)
    if found:
        stats.lose(f"{what}: {buffer.offset + buffer.pos - start} bytes passed over to the next readable block",
                   where=f"byte {start}")
    elif truncated is not None:
        stats.skip("truncated capture (partial last block)", where=truncated)
    else:
        stats.lose(f"{what} (rest of capture unreadable)", where=f"byte {start}")
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
