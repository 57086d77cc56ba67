"""The same TCP/135 exchange from the internet, captured under every encapsulation Zeek
decodes, gives the same connection; tunnels name their parent; what is not decoded is
counted as skipped packets. Frames are built with dpkt (and, for the tunnel headers
dpkt lacks, by their RFC layout), independently of the reader."""
from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest

from .frames import MAC_A, MAC_B, address, ethernet, geneve, handshake_to, ip_packet, vxlan, write_pcap
from .test_pcap import read_capture

CLIENT, SERVER = "203.0.114.9", "10.1.1.5"
TUNNEL_A, TUNNEL_B = "198.18.0.1", "198.18.0.2"
LINK_PPP, LINK_PPP_SERIAL, LINK_RAW = 9, 50, 101
IP_IN_IP, IPV6_IN_IP, GRE = 4, 41, 47
PPP_IPV4 = b"\x00\x21"

EXCHANGE = handshake_to(CLIENT, SERVER)
#: what Zeek logs for the exchange (see frames.handshake_to)
EXPECTED = ("tcp", CLIENT, 49152, SERVER, 135, "SF", "ShADdFf", 5, 3,
            sum(len(p) for _, p in EXCHANGE if p[12:16] == bytes([203, 0, 114, 9])))


def from_client(packet: bytes) -> bool:
    return packet[12:16] == bytes([203, 0, 114, 9])


def outer(packet: bytes, protocol: int, payload: bytes) -> bytes:
    """``payload`` in an IPv4 packet between the tunnel ends, in the inner packet's
    direction; by hand (RFC 791), as dpkt would re-encode a GRE payload (compressing the
    PPP protocol field of PPTP, which Zeek does not read)."""
    src, dst = (TUNNEL_A, TUNNEL_B) if from_client(packet) else (TUNNEL_B, TUNNEL_A)
    return ipv4_header(src, dst, protocol, len(payload)) + payload


def ipv4_header(src: str, dst: str, protocol: int, payload_length: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_length, 0, 0, 64, protocol, 0,
                       address(src), address(dst))


def outer_udp(packet: bytes, port: int, payload: bytes) -> bytes:
    src, dst = (TUNNEL_A, TUNNEL_B) if from_client(packet) else (TUNNEL_B, TUNNEL_A)
    sport, dport = (54321, port) if from_client(packet) else (port, 54321)
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    datagram.ulen = 8 + len(payload)
    return ip_packet(src, dst, datagram, dpkt.ip.IP_PROTO_UDP)


def gre_header(flags: int, protocol: int, *fields: int) -> bytes:
    """RFC 2784/2890 (version 0) and RFC 2637 (version 1) GRE: flags and version, protocol
    type, then the 4-byte optional fields that the flags announce, in order."""
    return struct.pack(f"!HH{len(fields)}I", flags, protocol, *fields)


def ethernet_header(ethertype: int) -> bytes:
    """By hand where dpkt would decode and re-encode the payload (it compresses PPP's
    protocol field, which Zeek does not read)."""
    return MAC_B + MAC_A + struct.pack("!H", ethertype)


def pppoe(ppp: bytes) -> bytes:
    """RFC 2516 session stage: version and type 1, code 0, session id, length."""
    return struct.pack("!BBHH", 0x11, 0, 1, len(ppp)) + ppp


def pptp(packet: bytes) -> bytes:
    ppp = b"\xff\x03" + PPP_IPV4 + packet
    key = (len(ppp) << 16) | 7  # payload length, call id
    return gre_header(0x3001, 0x880B, key, 1) + ppp  # key and sequence present, version 1


def erspan_2(packet: bytes) -> bytes:
    return gre_header(0x1000, 0x88BE, 1) + struct.pack("!II", 0x10010064, 0) + ethernet(packet)


#: name -> (link type, frame of an inner IP packet, carried in an IP tunnel, in a UDP tunnel)
ENCAPSULATIONS = {
    "ethernet": (1, ethernet, False, None),
    "802.1q": (1, lambda p: ethernet(p, vlan_tags=[dpkt.ethernet.VLANtag8021Q(id=10)]), False, None),
    "qinq": (1, lambda p: ethernet(p, vlan_tags=[dpkt.ethernet.VLANtag8021Q(id=10),
                                                   dpkt.ethernet.VLANtag8021Q(id=20)]), False, None),
    "mpls": (1, lambda p: ethernet(p, mpls_labels=[dpkt.ethernet.MPLSlabel(val=100),
                                                    dpkt.ethernet.MPLSlabel(val=200)]), False, None),
    "pppoe": (1, lambda p: ethernet_header(0x8864) + pppoe(PPP_IPV4 + p), False, None),
    "ppp": (LINK_PPP, lambda p: PPP_IPV4 + p, False, None),
    "ppp-hdlc": (LINK_PPP, lambda p: b"\xff\x03" + PPP_IPV4 + p, False, None),
    "ppp-serial": (LINK_PPP_SERIAL, lambda p: b"\x0f\x00" + PPP_IPV4 + p, False, None),
    "snap": (1, lambda p: ethernet(b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + p, 8 + len(p)), False, None),
    "raw": (LINK_RAW, lambda p: p, False, None),
    "ip-in-ip": (1, lambda p: ethernet(outer(p, IP_IN_IP, p)), True, None),
    "gre": (1, lambda p: ethernet(outer(p, GRE, gre_header(0, 0x0800) + p)), True, None),
    "gre-key-seq": (1, lambda p: ethernet(outer(p, GRE, gre_header(0x3000, 0x0800, 42, 1) + p)), True, None),
    "gre-ethernet": (1, lambda p: ethernet(outer(p, GRE, gre_header(0, 0x6558) + ethernet(p))), True, None),
    "erspan-2": (1, lambda p: ethernet(outer(p, GRE, erspan_2(p))), True, None),
    "pptp": (1, lambda p: ethernet_header(0x0800) + outer(p, GRE, pptp(p)), True, None),
    "vxlan": (1, lambda p: ethernet(outer_udp(p, 4789, vxlan(ethernet(p)))), True, 4789),
    "geneve": (1, lambda p: ethernet(outer_udp(p, 6081, geneve(ethernet(p)))), True, 6081),
}


def captured(tmp_path: Path, link_type: int, frame) -> list[dict]:
    path = write_pcap(tmp_path / "capture.pcap", [(1_700_000_000 + ts, frame(p)) for ts, p in EXCHANGE], link_type)
    capture = read_capture(path)
    assert not capture.stats.skipped and not capture.stats.lost and not capture.stats.warnings
    return capture.rows("zeek.conn")


def conn(row: dict) -> tuple:
    return (row["proto"], row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"],
            row["conn_state"], row["history"], row["orig_pkts"], row["resp_pkts"], row["orig_ip_bytes"])


@pytest.mark.parametrize("name", ENCAPSULATIONS)
def test_the_connection_is_the_same_under_every_encapsulation(tmp_path: Path, name: str) -> None:
    link_type, frame, tunnelled, udp_port = ENCAPSULATIONS[name]
    rows = captured(tmp_path, link_type, frame)
    inner, = [r for r in rows if r["id.resp_p"] == 135]
    assert conn(inner) == EXPECTED
    parents = inner["tunnel_parents"]
    if not tunnelled:
        assert parents is None and len(rows) == 1
    elif udp_port is None:  # an IP tunnel has no connection row of its own
        assert len(parents) == 1 and parents[0].startswith("C") and len(rows) == 1
    else:  # the encapsulating UDP connection is logged and is the parent
        tunnel, = [r for r in rows if r["id.resp_p"] == udp_port]
        assert (tunnel["id.orig_h"], tunnel["conn_state"], tunnel["history"]) == (TUNNEL_A, "SF", "Dd")
        assert parents == [tunnel["uid"]]


def test_ipv6_in_ipv4(tmp_path: Path) -> None:
    exchange = handshake_to("2a00:1::9", "fd00::5")
    frames = [(1_700_000_000 + ts, ethernet(ipv4_header(TUNNEL_A, TUNNEL_B, IPV6_IN_IP, len(p)) + p))
              for ts, p in exchange]
    row, = read_capture(write_pcap(tmp_path / "6in4.pcap", frames)).rows("zeek.conn")
    assert (row["id.orig_h"], row["id.resp_h"], row["conn_state"], row["history"]) == (
        "2a00:1::9", "fd00::5", "SF", "ShADdFf")
    assert len(row["tunnel_parents"]) == 1


def skipped(tmp_path: Path, frames: list[bytes]) -> dict:
    path = write_pcap(tmp_path / "skipped.pcap", [(1_700_000_000 + n, f) for n, f in enumerate(frames)])
    capture = read_capture(path)
    assert capture.stats.records == len(frames)
    return dict(capture.stats.skipped) | {f"warning: {k}": v for k, v in capture.stats.warnings.items()}


def test_what_is_not_decoded_is_counted_as_skipped(tmp_path: Path) -> None:
    ip = EXCHANGE[0][1]
    assert skipped(tmp_path, [
        ethernet(b"\x00" * 4 + ip, 0x8848),  # MPLS multicast: Zeek does not decode it either
        ethernet(outer(ip, GRE, gre_header(0x4000, 0x0800, 0) + ip)),  # GRE routing (RFC 1701)
        ethernet(outer(ip, GRE, gre_header(0, 0x0801) + ip)),
    ]) == {
        "unknown ethertype 0x8848 (packet skipped)": 1,
        "GRE with routing, unknown flags or version 0 (not decoded) (packet skipped)": 1,
        "GRE carrying 0x0801 (not decoded) (packet skipped)": 1,
    }


def test_a_tunnel_deeper_than_zeeks_limit_is_skipped(tmp_path: Path) -> None:
    """Zeek's Tunnel::max_depth is 2: the third tunnel's content is not analysed."""
    ip = EXCHANGE[0][1]
    deep = outer(ip, IP_IN_IP, outer(ip, GRE, gre_header(0, 0x0800) + outer(ip, IP_IN_IP, ip)))
    assert skipped(tmp_path, [ethernet(deep)]) == {"IP tunnel deeper than 2 (not analysed) (packet skipped)": 1}


def test_frames_that_are_no_connection_are_counted_as_such(tmp_path: Path) -> None:
    arp = bytes(dpkt.arp.ARP())
    igmp = ip_packet(CLIENT, "224.0.0.1", dpkt.igmp.IGMP(), 2)
    assert skipped(tmp_path, [ethernet(arp, 0x0806), ethernet(igmp)]) == {
        "warning: no connection: ARP": 1, "warning: no connection: IP protocol IGMP": 1}


def test_zero_ip_total_length_counts_no_ip_bytes(tmp_path: Path) -> None:
    """Segmentation offload on the capturing host writes IP total length 0: Zeek reads the
    segment to the end of the frame but adds the header's 0 to the IP bytes."""
    frames = []
    for ts, packet in EXCHANGE:
        if packet[33] & 0x08 and from_client(packet):  # the client's data segment (PSH)
            frames.append((ts, ethernet(packet[:2] + b"\x00\x00" + packet[4:])))
            offloaded = len(packet)
        else:
            frames.append((ts, ethernet(packet)))
    row, = read_capture(write_pcap(tmp_path / "tso.pcap", [(1_700_000_000 + t, f) for t, f in frames])).rows(
        "zeek.conn")
    assert (row["conn_state"], row["history"], row["orig_bytes"]) == ("SF", "ShADdFf", 72)
    assert row["orig_ip_bytes"] == EXPECTED[-1] - offloaded
