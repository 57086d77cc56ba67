"""Frames built with dpkt (an encoder independent of the reader) for the tests of
encapsulations and of Zeek's TCP and UDP rules, and pcap files holding them."""
from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import dpkt

LINK_ETHERNET = 1
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
FIN, SYN, RST, PUSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def address(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def ip_packet(src: str, dst: str, transport: dpkt.Packet, protocol: int) -> bytes:
    """An IPv4 or IPv6 packet (by the addresses' version) around ``transport``."""
    if ":" in src:
        return bytes(dpkt.ip6.IP6(src=address(src), dst=address(dst), nxt=protocol, hlim=64,
                                  data=transport, plen=len(bytes(transport))))
    return bytes(dpkt.ip.IP(src=address(src), dst=address(dst), p=protocol, ttl=64, data=transport))


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, seq: int, ack: int = 0,
        payload: bytes = b"") -> bytes:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=8192, data=payload)
    return ip_packet(src, dst, segment, dpkt.ip.IP_PROTO_TCP)


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    datagram.ulen = 8 + len(payload)
    return ip_packet(src, dst, datagram, dpkt.ip.IP_PROTO_UDP)


def ethernet(payload: bytes, ethertype: int | None = None, **tags) -> bytes:
    """An Ethernet frame; ``ethertype`` defaults to the IP version of ``payload``; dpkt's
    ``vlan_tags`` and ``mpls_labels`` keyword arguments add tags and labels."""
    if ethertype is None:
        ethertype = dpkt.ethernet.ETH_TYPE_IP6 if payload[0] >> 4 == 6 else dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=ethertype, data=payload, **tags))


def write_pcap(path: Path, frames: list[tuple[float, bytes]], link_type: int = LINK_ETHERNET) -> Path:
    with open(path, "wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=link_type, snaplen=65535)
        for ts, frame in frames:
            writer.writepkt(frame, ts)
    return path


def vxlan(inner_frame: bytes, vni: int = 42) -> bytes:
    """RFC 7348: flags (I bit), reserved, 24-bit VNI, reserved, then the inner Ethernet frame."""
    return struct.pack("!B3xI", 0x08, vni << 8) + inner_frame


def geneve(inner_frame: bytes, vni: int = 42) -> bytes:
    """RFC 8926, version 0 without options, protocol type 0x6558 (Ethernet)."""
    return struct.pack("!BBHI", 0, 0, 0x6558, vni << 8) + inner_frame


def dce_rpc_pdu(ptype: int, body: bytes, call_id: int = 1) -> bytes:
    """A connection-oriented DCE/RPC v5.0 PDU (little-endian, first and last fragment)."""
    return struct.pack("<BBBBIHHI", 5, 0, ptype, 0x03, 0x10, 16 + len(body), 0, call_id) + body


BIND = dce_rpc_pdu(11, bytes(56))
BIND_ACK = dce_rpc_pdu(12, bytes(44))


def handshake_to(client: str, server: str, sport: int = 49152, dport: int = 135,
                 request: bytes = BIND, reply: bytes = BIND_ACK) -> list[tuple[float, bytes]]:
    """A complete TCP exchange (handshake, one request and reply, both FINs) as IP packets
    with times: Zeek logs it ``SF``, ``ShADdFf``, 5 packets from the client, 3 from the server."""
    c, s = 1000, 5000
    return [
        (0.00, tcp(client, sport, server, dport, SYN, c)),
        (0.01, tcp(server, dport, client, sport, SYN | ACK, s, c + 1)),
        (0.02, tcp(client, sport, server, dport, ACK, c + 1, s + 1)),
        (0.03, tcp(client, sport, server, dport, PUSH | ACK, c + 1, s + 1, request)),
        (0.04, tcp(server, dport, client, sport, PUSH | ACK, s + 1, c + 1 + len(request), reply)),
        (0.05, tcp(client, sport, server, dport, FIN | ACK, c + 1 + len(request), s + 1 + len(reply))),
        (0.06, tcp(server, dport, client, sport, FIN | ACK, s + 1 + len(reply), c + 2 + len(request))),
        (0.07, tcp(client, sport, server, dport, ACK, c + 2 + len(request), s + 2 + len(reply))),
    ]


def pcapng_block(block_type: int, body: bytes) -> bytes:
    """A little-endian pcapng block: type, length, body padded to 4 bytes, length again."""
    body += bytes(-len(body) % 4)
    return struct.pack("<II", block_type, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def pcapng(frames: list[tuple[int, bytes]], interface_options: bytes = b"") -> bytes:
    """A pcapng capture of one Ethernet interface: ``frames`` are (raw 64-bit timestamp in
    the interface's units, frame); ``interface_options`` are the IDB's options (without
    the end-of-options)."""
    section = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = interface_options + bytes(4) if interface_options else b""
    interface = pcapng_block(1, struct.pack("<HHI", LINK_ETHERNET, 0, 65535) + options)
    packets = [pcapng_block(6, struct.pack("<IIIII", 0, raw >> 32, raw & 0xFFFFFFFF, len(frame), len(frame)) + frame)
               for raw, frame in frames]
    return section + interface + b"".join(packets)
