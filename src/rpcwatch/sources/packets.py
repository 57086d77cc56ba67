"""Decode the headers of one captured frame down to TCP, UDP or ICMP.

This is the per-packet hot path, so it reads only the header fields the connection
tracker needs with :mod:`struct` on the raw bytes; building dpkt's object tree for
every layer costs several times more per packet than all the tracking that follows.

:func:`decode` returns either a :data:`Decoded` tuple or a string saying why the frame
carries no trackable packet (the caller counts those reasons).
"""
from __future__ import annotations

import struct

TCP = 6
UDP = 17
ICMP = 1
ICMP6 = 58

#: (protocol, source address, destination address, source port, destination port,
#:  IP bytes, transport payload bytes on the wire, captured payload, TCP flags, seq, ack,
#:  window). ICMP puts type and code in the port slots; UDP/ICMP leave the TCP fields 0.
Decoded = tuple[int, bytes, bytes, int, int, int, int, bytes, int, int, int, int]

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})
ETHERTYPE_PPPOE_SESSION = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

LINK_NULL = 0
LINK_ETHERNET = 1
LINK_RAW = 101
LINK_RAW_OPENBSD = 14
LINK_RAW_BSD = 12
LINK_LOOP = 108
LINK_LINUX_SLL = 113
LINK_IPV4 = 228
LINK_IPV6 = 229
LINK_LINUX_SLL2 = 276
RAW_LINKS = frozenset({LINK_RAW, LINK_RAW_BSD, LINK_RAW_OPENBSD, LINK_IPV4, LINK_IPV6})

#: BSD loopback address families for IPv6 (they differ between BSDs)
NULL_FAMILIES_IPV6 = frozenset({24, 28, 30})
IPV6_EXTENSION_HEADERS = frozenset({0, 43, 60})
IPV6_FRAGMENT = 44
IPV6_AUTH = 51

_u16 = struct.Struct("!H").unpack_from
_tcp = struct.Struct("!HHIIBBH").unpack_from
_udp = struct.Struct("!HHH").unpack_from


def decode(link_type: int, frame: bytes) -> Decoded | str:
    """Headers of one frame, or the reason it has no TCP/UDP/ICMP packet."""
    if link_type == LINK_ETHERNET:
        if frame[12:14] == b"\x08\x00":  # the common case first: untagged IPv4
            return _ipv4(frame, 14)
        return _ethernet(frame)
    if link_type in RAW_LINKS:
        return _ip(frame, 0)
    if link_type == LINK_LINUX_SLL:
        return _by_ethertype(frame, 16, _u16(frame, 14)[0]) if len(frame) >= 16 else "truncated link header"
    if link_type == LINK_LINUX_SLL2:
        return _by_ethertype(frame, 20, _u16(frame, 0)[0]) if len(frame) >= 20 else "truncated link header"
    if link_type == LINK_NULL or link_type == LINK_LOOP:
        return _loopback(link_type, frame)
    return f"unsupported link type {link_type}"


def _ethernet(frame: bytes) -> Decoded | str:
    if len(frame) < 14:
        return "truncated link header"
    ethertype = (frame[12] << 8) | frame[13]
    offset = 14
    while ethertype in VLAN_ETHERTYPES:
        if len(frame) < offset + 4:
            return "truncated link header"
        ethertype = (frame[offset + 2] << 8) | frame[offset + 3]
        offset += 4
    return _by_ethertype(frame, offset, ethertype)


def _by_ethertype(frame: bytes, offset: int, ethertype: int) -> Decoded | str:
    if ethertype == ETHERTYPE_IPV4 or ethertype == ETHERTYPE_IPV6:
        return _ip(frame, offset)
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        if len(frame) < offset + 8:
            return "truncated link header"
        protocol = _u16(frame, offset + 6)[0]
        if protocol in (PPP_IPV4, PPP_IPV6):
            return _ip(frame, offset + 8)
        return "not IP (PPP control)"
    if ethertype < 0x0600:
        return "not IP (IEEE 802.3 frame)"
    return f"not IP (ethertype 0x{ethertype:04x})"


def _loopback(link_type: int, frame: bytes) -> Decoded | str:
    if len(frame) < 4:
        return "truncated link header"
    family = int.from_bytes(frame[:4], "big" if link_type == LINK_LOOP else "little")
    if family > 0xFFFF:  # written on a host of the other byte order
        family = int.from_bytes(frame[:4], "little" if link_type == LINK_LOOP else "big")
    if family == 2 or family in NULL_FAMILIES_IPV6:
        return _ip(frame, 4)
    return f"not IP (loopback family {family})"


def _ip(frame: bytes, offset: int) -> Decoded | str:
    if len(frame) < offset + 1:
        return "truncated IP header"
    version = frame[offset] >> 4
    if version == 4:
        return _ipv4(frame, offset)
    if version == 6:
        return _ipv6(frame, offset)
    return f"not IP (version {version})"


def _ipv4(frame: bytes, offset: int) -> Decoded | str:
    if len(frame) < offset + 20:
        return "truncated IP header"
    header_len = (frame[offset] & 0x0F) * 4
    total = _u16(frame, offset + 2)[0]
    if total == 0:  # segmentation offload on the capturing host zeroes it; Zeek takes the frame
        total = len(frame) - offset
    if header_len < 20 or total < header_len:
        return "malformed IPv4 header"
    if _u16(frame, offset + 6)[0] & 0x3FFF:  # more-fragments flag or a fragment offset
        return "IP fragment (not reassembled)"
    protocol = frame[offset + 9]
    src = frame[offset + 12:offset + 16]
    dst = frame[offset + 16:offset + 20]
    start = offset + header_len
    return _transport(protocol, frame, src, dst, start, offset + total, total)


def _ipv6(frame: bytes, offset: int) -> Decoded | str:
    if len(frame) < offset + 40:
        return "truncated IP header"
    payload_len = _u16(frame, offset + 4)[0]
    protocol = frame[offset + 6]
    src = frame[offset + 8:offset + 24]
    dst = frame[offset + 24:offset + 40]
    end = offset + 40 + payload_len
    start = offset + 40
    while protocol in IPV6_EXTENSION_HEADERS or protocol == IPV6_AUTH or protocol == IPV6_FRAGMENT:
        if len(frame) < start + 8:
            return "truncated IPv6 extension header"
        if protocol == IPV6_FRAGMENT:
            return "IP fragment (not reassembled)"
        size = (frame[start + 1] + 2) * 4 if protocol == IPV6_AUTH else (frame[start + 1] + 1) * 8
        protocol = frame[start]
        start += size
    if payload_len == 0:
        return "IPv6 jumbogram or empty payload"
    return _transport(protocol, frame, src, dst, start, end, 40 + payload_len)


def _transport(protocol: int, frame: bytes, src: bytes, dst: bytes, start: int, end: int,
               ip_len: int) -> Decoded | str:
    if protocol == TCP:
        if len(frame) < start + 20:
            return "truncated TCP header"
        sport, dport, seq, ack, data_offset, flags, window = _tcp(frame, start)
        header_len = (data_offset >> 4) * 4
        payload_len = end - start - header_len
        if header_len < 20 or payload_len < 0:
            return "malformed TCP header"
        payload = frame[start + header_len:end]
        return TCP, src, dst, sport, dport, ip_len, payload_len, payload, flags, seq, ack, window
    if protocol == UDP:
        if len(frame) < start + 8:
            return "truncated UDP header"
        sport, dport, length = _udp(frame, start)
        payload_len = min(length, end - start) - 8
        if payload_len < 0:
            return "malformed UDP header"
        return UDP, src, dst, sport, dport, ip_len, payload_len, b"", 0, 0, 0, 0
    if protocol == ICMP or protocol == ICMP6:
        if len(frame) < start + 2:
            return "truncated ICMP header"
        payload_len = max(end - start - 8, 0)
        return protocol, src, dst, frame[start], frame[start + 1], ip_len, payload_len, b"", 0, 0, 0, 0
    return f"IP protocol {protocol} (not TCP, UDP or ICMP)"
