"""Decode the headers of one captured frame down to TCP, UDP or ICMP.

This is the per-packet hot path, so it reads only the header fields the connection
tracker needs with :mod:`struct` on the raw bytes; building dpkt's object tree for
every layer costs several times more per packet than all the tracking that follows.

The encapsulations Zeek decodes are decoded here too: 802.1Q/802.1ad tags (any stack),
MPLS label stacks, PPPoE sessions, PPP (link types 9 and 50), and the tunnels Zeek
follows by default: IP in IP, GRE (IP, transparent Ethernet bridging, ERSPAN II/III,
PPTP's enhanced GRE), VXLAN (UDP 4789) and Geneve (UDP 6081), at most
:data:`MAX_TUNNEL_DEPTH` deep as Zeek's ``Tunnel::max_depth``.

:func:`decode` returns a :data:`Decoded` tuple, a :class:`Tunnelled` packet (one that
reached its transport inside a tunnel), or a string saying why the frame carries no
trackable packet. Reasons starting with :data:`NO_CONNECTION` name frames Zeek makes no
connection of either (ARP, LLDP, routing protocols); every other reason is damage or
something not decoded, and the caller counts it as a skipped packet.
"""
from __future__ import annotations

import struct

TCP = 6
UDP = 17
ICMP = 1
ICMP6 = 58
IP_IN_IP = 4
IPV6_IN_IP = 41
GRE = 47

#: (protocol, source address, destination address, source port, destination port,
#:  IP bytes, transport payload bytes on the wire, captured payload, TCP flags, seq, ack,
#:  window). ICMP puts type and code in the port slots; UDP/ICMP leave the TCP fields 0.
Decoded = tuple[int, bytes, bytes, int, int, int, int, bytes, int, int, int, int]

#: prefix of the reasons for frames that are no connection in Zeek's logs either
NO_CONNECTION = "no connection: "

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})
ETHERTYPE_MPLS = 0x8847
ETHERTYPE_PPPOE_SESSION = 0x8864
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging (GRE, Geneve)
ETHERTYPE_ERSPAN_2 = 0x88BE
ETHERTYPE_ERSPAN_3 = 0x22EB
ETHERTYPE_PPP = 0x880B  # PPTP's enhanced GRE
#: ethertypes of protocols that never carry an IP connection (Zeek logs none for them)
NON_IP_ETHERTYPES = {
    0x0806: "ARP", 0x8035: "RARP", 0x88CC: "LLDP", 0x888E: "EAPOL", 0x8809: "LACP",
    0x88F7: "PTP", 0x9000: "loopback test", 0x8863: "PPPoE discovery", 0x8137: "IPX",
    0x88E5: "MACsec (encrypted)", 0x8808: "Ethernet flow control", 0x893A: "IEEE 1905.1",
    0x88E1: "HomePlug AV", 0x8899: "Realtek RRCP", 0x88B8: "GOOSE", 0x88BA: "Sampled Values",
    0x8892: "PROFINET", 0x88A4: "EtherCAT", 0x22F0: "AVTP", 0x86DC: "NetBEUI",
}
LLC_SNAP = b"\xaa\xaa\x03"
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_MPLS = 0x0281
PPP_HDLC_FRAMING = b"\xff\x03"

LINK_NULL = 0
LINK_ETHERNET = 1
LINK_PPP = 9
LINK_PPP_SERIAL = 50
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
#: IP protocols that are no connection in Zeek's conn.log
IP_PROTOCOL_NAMES = {2: "IGMP", 50: "ESP", 89: "OSPF", 103: "PIM", 112: "VRRP", 132: "SCTP"}

VXLAN_PORT = 4789
GENEVE_PORT = 6081
VXLAN_HEADER = 8
GENEVE_HEADER = 8
#: Zeek's Tunnel::max_depth: a packet inside more tunnels than this is not analysed
MAX_TUNNEL_DEPTH = 2

_u16 = struct.Struct("!H").unpack_from
_tcp = struct.Struct("!HHIIBBH").unpack_from
_udp = struct.Struct("!HHH").unpack_from


class Tunnelled:
    """A packet carried in a tunnel: the encapsulating UDP packet (VXLAN, Geneve; ``None``
    for IP in IP and GRE, which are no connection of their own), the outer addresses (the
    tunnel's ends), the tunnel kind, and what the inner packet decoded to."""

    __slots__ = ("kind", "src", "dst", "outer", "inner")

    def __init__(self, kind: str, src: bytes, dst: bytes, outer: Decoded | None,
                 inner: Decoded | Tunnelled | str):
        self.kind, self.src, self.dst, self.outer, self.inner = kind, src, dst, outer, inner


def decode(link_type: int, frame: bytes) -> Decoded | Tunnelled | str:
    """Headers of one frame, or the reason it has no TCP/UDP/ICMP packet."""
    if link_type == LINK_ETHERNET:
        if frame[12:14] == b"\x08\x00":  # the common case first: untagged IPv4
            return _ipv4(frame, 14, 0)
        return _ethernet(frame, 0, 0)
    if link_type in RAW_LINKS:
        return _ip(frame, 0, 0)
    if link_type == LINK_LINUX_SLL:
        return _by_ethertype(frame, 16, _u16(frame, 14)[0], 0) if len(frame) >= 16 else "truncated link header"
    if link_type == LINK_LINUX_SLL2:
        return _by_ethertype(frame, 20, _u16(frame, 0)[0], 0) if len(frame) >= 20 else "truncated link header"
    if link_type == LINK_NULL or link_type == LINK_LOOP:
        return _loopback(link_type, frame)
    if link_type == LINK_PPP:
        return _ppp(frame, 2 if frame[:2] == PPP_HDLC_FRAMING else 0)
    if link_type == LINK_PPP_SERIAL:
        return _ppp(frame, 2)
    return f"unsupported link type {link_type}"


def _ethernet(frame: bytes, offset: int, depth: int) -> Decoded | Tunnelled | str:
    if len(frame) < offset + 14:
        return "truncated link header"
    ethertype = (frame[offset + 12] << 8) | frame[offset + 13]
    offset += 14
    while ethertype in VLAN_ETHERTYPES:
        if len(frame) < offset + 4:
            return "truncated link header"
        ethertype = (frame[offset + 2] << 8) | frame[offset + 3]
        offset += 4
    return _by_ethertype(frame, offset, ethertype, depth)


def _by_ethertype(frame: bytes, offset: int, ethertype: int, depth: int) -> Decoded | Tunnelled | str:
    if ethertype == ETHERTYPE_IPV4 or ethertype == ETHERTYPE_IPV6:
        return _ip(frame, offset, depth)
    if ethertype == ETHERTYPE_MPLS:
        return _mpls(frame, offset, depth)
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        return _ppp(frame, offset + 6, depth)
    if ethertype < 0x0600:  # an IEEE 802.3 length: LLC follows, with SNAP an ethertype
        if frame[offset:offset + 3] == LLC_SNAP and len(frame) >= offset + 8:
            return _by_ethertype(frame, offset + 8, _u16(frame, offset + 6)[0], depth)
        return NO_CONNECTION + "IEEE 802.3 frame"
    name = NON_IP_ETHERTYPES.get(ethertype)
    if name is not None:
        return NO_CONNECTION + name
    return f"unknown ethertype 0x{ethertype:04x}"


def _ppp(frame: bytes, offset: int, depth: int = 0) -> Decoded | Tunnelled | str:
    """PPP (link type 9 after its optional HDLC framing, link type 50, PPPoE sessions):
    the 2-byte protocol field, then IP or MPLS."""
    if len(frame) < offset + 2:
        return "truncated link header"
    protocol = _u16(frame, offset)[0]
    if protocol == PPP_IPV4 or protocol == PPP_IPV6:
        return _ip(frame, offset + 2, depth)
    if protocol == PPP_MPLS:
        return _mpls(frame, offset + 2, depth)
    if protocol >= 0x8000:  # LCP, IPCP, authentication: link control
        return NO_CONNECTION + "PPP control"
    return f"unknown PPP protocol 0x{protocol:04x}"


def _mpls(frame: bytes, offset: int, depth: int) -> Decoded | Tunnelled | str:
    """An MPLS label stack (4 bytes per label up to the bottom-of-stack bit), then IP: the
    payload's type is not encoded, so Zeek (and this) take it from the IP version nibble."""
    while True:
        if len(frame) < offset + 4:
            return "truncated MPLS label stack"
        bottom = frame[offset + 2] & 0x01
        offset += 4
        if bottom:
            return _ip(frame, offset, depth)


def _loopback(link_type: int, frame: bytes) -> Decoded | Tunnelled | str:
    if len(frame) < 4:
        return "truncated link header"
    family = int.from_bytes(frame[:4], "big" if link_type == LINK_LOOP else "little")
    if family > 0xFFFF:  # written on a host of the other byte order
        family = int.from_bytes(frame[:4], "little" if link_type == LINK_LOOP else "big")
    if family == 2 or family in NULL_FAMILIES_IPV6:
        return _ip(frame, 4, 0)
    return f"unknown loopback address family {family}"


def _ip(frame: bytes, offset: int, depth: int) -> Decoded | Tunnelled | str:
    if len(frame) < offset + 1:
        return "truncated IP header"
    version = frame[offset] >> 4
    if version == 4:
        return _ipv4(frame, offset, depth)
    if version == 6:
        return _ipv6(frame, offset, depth)
    return f"not IP (version {version})"


def _ipv4(frame: bytes, offset: int, depth: int) -> Decoded | Tunnelled | str:
    if len(frame) < offset + 20:
        return "truncated IP header"
    header_len = (frame[offset] & 0x0F) * 4
    total = _u16(frame, offset + 2)[0]
    end = offset + total
    if total == 0:
        # Segmentation offload on the capturing host zeroes the total length. Zeek (with
        # checksums ignored, as here) reads the packet to the end of the frame but counts
        # the header's 0 in the connection's IP bytes.
        end = len(frame)
        if header_len < 20 or end - offset < header_len:
            return "malformed IPv4 header"
    elif header_len < 20 or total < header_len:
        return "malformed IPv4 header"
    if _u16(frame, offset + 6)[0] & 0x3FFF:  # more-fragments flag or a fragment offset
        return "IP fragment (not reassembled)"
    protocol = frame[offset + 9]
    src = frame[offset + 12:offset + 16]
    dst = frame[offset + 16:offset + 20]
    return _transport(protocol, frame, src, dst, offset + header_len, end, total, depth)


def _ipv6(frame: bytes, offset: int, depth: int) -> Decoded | Tunnelled | str:
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
    return _transport(protocol, frame, src, dst, start, end, 40 + payload_len, depth)


def _transport(protocol: int, frame: bytes, src: bytes, dst: bytes, start: int, end: int,
               ip_len: int, depth: int) -> Decoded | Tunnelled | str:
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
        if length < 8:
            return "malformed UDP header"
        # Zeek counts the UDP header's length, not what the IP header leaves for it
        packet = UDP, src, dst, sport, dport, ip_len, length - 8, frame[start + 8:end], 0, 0, 0, 0
        if dport == VXLAN_PORT or sport == VXLAN_PORT or dport == GENEVE_PORT or sport == GENEVE_PORT:
            return _udp_tunnel(packet, frame, start + 8, end, depth)
        return packet
    if protocol == ICMP or protocol == ICMP6:
        if len(frame) < start + 2:
            return "truncated ICMP header"
        payload_len = max(end - start - 8, 0)
        return protocol, src, dst, frame[start], frame[start + 1], ip_len, payload_len, b"", 0, 0, 0, 0
    if protocol == IP_IN_IP or protocol == IPV6_IN_IP:
        return _tunnel("IP", src, dst, None, depth, lambda: _ip(frame, start, depth + 1))
    if protocol == GRE:
        return _gre(frame, src, dst, start, end, depth)
    return NO_CONNECTION + f"IP protocol {IP_PROTOCOL_NAMES.get(protocol, protocol)}"


def _tunnel(kind: str, src: bytes, dst: bytes, outer: Decoded | None, depth: int,
            inner) -> Tunnelled | Decoded | str:
    if depth >= MAX_TUNNEL_DEPTH:
        return outer if outer is not None else f"{kind} tunnel deeper than {MAX_TUNNEL_DEPTH} (not analysed)"
    return Tunnelled(kind, src, dst, outer, inner())


def _udp_tunnel(packet: Decoded, frame: bytes, start: int, end: int, depth: int) -> Decoded | Tunnelled | str:
    """VXLAN and Geneve: the UDP packet is a connection of its own; a payload that is not a
    valid tunnel header is just the UDP connection's payload, as in Zeek."""
    sport, dport = packet[3], packet[4]
    if dport == VXLAN_PORT or sport == VXLAN_PORT:
        if end - start <= VXLAN_HEADER or not frame[start] & 0x08:  # the VNI-valid flag
            return packet
        return _tunnel("VXLAN", packet[1], packet[2], packet, depth,
                       lambda: _ethernet(frame[:end], start + VXLAN_HEADER, depth + 1))
    if end - start <= GENEVE_HEADER or frame[start] >> 6:  # only version 0 exists
        return packet
    inner_start = start + GENEVE_HEADER + (frame[start] & 0x3F) * 4
    protocol = _u16(frame, start + 2)[0]
    if protocol == ETHERTYPE_TEB:
        return _tunnel("Geneve", packet[1], packet[2], packet, depth,
                       lambda: _ethernet(frame[:end], inner_start, depth + 1))
    if protocol == ETHERTYPE_IPV4 or protocol == ETHERTYPE_IPV6:
        return _tunnel("Geneve", packet[1], packet[2], packet, depth,
                       lambda: _ip(frame[:end], inner_start, depth + 1))
    return packet


def _gre(frame: bytes, src: bytes, dst: bytes, start: int, end: int, depth: int) -> Tunnelled | Decoded | str:
    """Zeek's GRE analyzer: version 0 carrying IP, Ethernet (transparent bridging) or
    ERSPAN II/III; version 1 (PPTP) carrying PPP with IP."""
    if end - start < 4 or len(frame) < start + 4:
        return "truncated GRE header"
    flags, protocol = _u16(frame, start)[0], _u16(frame, start + 2)[0]
    version = flags & 0x07
    if flags & 0x4000 or flags & 0x0078 or version > 1:
        return f"GRE with routing, unknown flags or version {version} (not decoded)"
    offset = start + 4 + sum(4 for bit in (0x8000, 0x2000, 0x1000, 0x0080) if flags & bit)
    frame = frame[:end]
    if version == 1:
        if protocol != ETHERTYPE_PPP:
            return f"enhanced GRE carrying 0x{protocol:04x} (not decoded)"
        if len(frame) < offset + 4:
            return NO_CONNECTION + "PPTP GRE acknowledgement"
        ppp = _u16(frame, offset + 2)[0]
        if ppp != PPP_IPV4 and ppp != PPP_IPV6:
            return NO_CONNECTION + "PPP control"
        return _tunnel("GRE", src, dst, None, depth, lambda: _ip(frame, offset + 4, depth + 1))
    if protocol == ETHERTYPE_IPV4 or protocol == ETHERTYPE_IPV6:
        return _tunnel("GRE", src, dst, None, depth, lambda: _ip(frame, offset, depth + 1))
    if protocol == ETHERTYPE_TEB:
        return _tunnel("GRE", src, dst, None, depth, lambda: _ethernet(frame, offset, depth + 1))
    if protocol == ETHERTYPE_ERSPAN_2:
        erspan = 8 if flags & 0x1000 else 0  # type II has a sequence number, type I none
        return _tunnel("GRE", src, dst, None, depth, lambda: _ethernet(frame, offset + erspan, depth + 1))
    if protocol == ETHERTYPE_ERSPAN_3:
        if len(frame) < offset + 12:
            return "truncated ERSPAN header"
        erspan = 20 if frame[offset + 11] & 0x01 else 12  # optional platform-specific subheader
        return _tunnel("GRE", src, dst, None, depth, lambda: _ethernet(frame, offset + erspan, depth + 1))
    return f"GRE carrying 0x{protocol:04x} (not decoded)"
