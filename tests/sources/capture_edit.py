"""Test helpers that write modified copies of corpus captures into a temporary directory."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import dpkt

ETHERNET_IPV4 = b"\x08\x00"
IPV4_SOURCE = slice(26, 30)
IPV4_DESTINATION = slice(30, 34)


def rewrite_addresses(source: Path, target: Path, mapping: dict[str, str]) -> int:
    """Copy an Ethernet/IPv4 capture, replacing addresses per ``mapping`` in both
    directions of every packet. Checksums are left as they were (the reader, like
    ``zeek -C``, does not verify them). Returns the number of packets rewritten."""
    packed = {ipaddress.IPv4Address(old).packed: ipaddress.IPv4Address(new).packed
              for old, new in mapping.items()}
    changed = 0
    with open(source, "rb") as infile, open(target, "wb") as outfile:
        reader = dpkt.pcap.Reader(infile)
        writer = dpkt.pcap.Writer(outfile, snaplen=reader.snaplen, linktype=reader.datalink())
        for ts, frame in reader:
            frame = bytearray(frame)
            if frame[12:14] == ETHERNET_IPV4 and len(frame) >= 34:
                for field in (IPV4_SOURCE, IPV4_DESTINATION):
                    replacement = packed.get(bytes(frame[field]))
                    if replacement is not None:
                        frame[field] = replacement
                        changed += 1
            writer.writepkt(bytes(frame), ts)
    return changed


def cut_capture(source: Path, target: Path, keep: int) -> Path:
    """The first ``keep`` bytes of a capture (a capture cut short while copying)."""
    target.write_bytes(source.read_bytes()[:keep])
    return target
