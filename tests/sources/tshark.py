"""Reading ``tshark -z conv,tcp`` tables, the reference the pcap reader is checked against."""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

#: "A:port <-> B:port  framesBA bytesBA  framesAB bytesAB  frames bytes  start  duration";
#: byte counts of 10 000 and more are printed in (truncated) SI units: "19 kB"
SIZE = r"(\d+) (bytes|kB|MB|GB)"
ROW = re.compile(rf"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+{SIZE}\s+(\d+)\s+{SIZE}\s+(\d+)\s+{SIZE}")
UNITS = {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}
SECTION = re.compile(r"^=== (\S+)\s+\(frames with tcp\.port==135: (\d+)\)")

Endpoint = tuple[str, int]


@dataclass(frozen=True)
class Size:
    """A byte count as tshark prints it: exact below 10 kB, else truncated to its unit."""

    value: int
    unit: int = 1

    def matches(self, exact: int) -> bool:
        return exact // self.unit == self.value


@dataclass(frozen=True)
class Conversation:
    """One tshark TCP conversation: ``a`` is the side tshark saw first."""

    a: Endpoint
    b: Endpoint
    frames_from_a: int
    bytes_from_a: Size
    frames_from_b: int
    bytes_from_b: Size
    bytes_total: Size

    @property
    def pair(self) -> frozenset[Endpoint]:
        return frozenset((self.a, self.b))


def _endpoint(text: str) -> Endpoint:
    address, _, port = text.rpartition(":")
    return address, int(port)


def parse_rows(lines: list[str]) -> list[Conversation]:
    conversations = []
    for line in lines:
        match = ROW.match(line)
        if match:
            a, b, frames_ba, bytes_ba, unit_ba, frames_ab, bytes_ab, unit_ab = match.groups()[:8]
            total, total_unit = match.groups()[9:11]
            conversations.append(Conversation(
                _endpoint(a), _endpoint(b), int(frames_ab), Size(int(bytes_ab), UNITS[unit_ab]),
                int(frames_ba), Size(int(bytes_ba), UNITS[unit_ba]), Size(int(total), UNITS[total_unit])))
    return conversations


def corpus_tcp135_conversations(listing: Path) -> dict[str, list[Conversation]]:
    """``PCAP_TCP135_CONVERSATIONS.txt``: capture path (relative to the corpus) -> rows."""
    sections: dict[str, list[str]] = defaultdict(list)
    current = None
    for line in listing.read_text().splitlines():
        header = SECTION.match(line)
        if header:
            current = header.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {path: parse_rows(lines) for path, lines in sections.items()}


def tshark_available() -> bool:
    return shutil.which("tshark") is not None


def tshark_conversations(capture: Path) -> list[Conversation]:
    """All TCP conversations of a capture, as ``tshark -q -z conv,tcp`` lists them (tshark
    exits non-zero on a capture cut short but still prints the table)."""
    result = subprocess.run(["tshark", "-n", "-q", "-r", str(capture), "-z", "conv,tcp"],
                            capture_output=True, text=True, check=False)
    return parse_rows(result.stdout.splitlines())
