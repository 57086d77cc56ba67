"""Zeek conn.log lines with known detections, for live-mode tests and benchmarks.

Every ``probe`` line is an internet source (one address per line, so no sweep
correlation fires) reaching TCP/135 of an internal host: exactly one *Detect RPC from
Internet* alert each. Other lines are internal web traffic that no bundled rule matches."""
from __future__ import annotations

from pathlib import Path

FIELDS = ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes resp_bytes "
          "conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes resp_pkts "
          "resp_ip_bytes tunnel_parents").split()
TYPES = ("time string addr port addr port enum string interval count count string bool bool count string "
         "count count count count set[string]").split()
RPC_RULE = "Detect RPC from Internet"


def header(opened: str = "2024-06-01-10-00-00") -> bytes:
    return ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
            f"#open\t{opened}\n#fields\t" + "\t".join(FIELDS) + "\n#types\t" + "\t".join(TYPES) + "\n").encode()


def uid(number: int) -> str:
    return f"C{number:09d}"


def line(number: int, probe: bool) -> bytes:
    ts = f"{1717236000 + number * 0.001:.6f}"
    if probe:
        source = f"45.{83 + number // 62500 % 100}.{number // 250 % 250}.{number % 250 + 1}"
        fields = [ts, uid(number), source, "40122", "10.20.0.10", "135", "tcp", "-", "0.000071", "0", "0", "REJ",
                  "F", "T", "0", "Sr", "1", "44", "1", "40", "-"]
    else:
        fields = [ts, uid(number), "10.20.0.5", "50412", "10.20.0.80", "443", "tcp", "ssl", "1.201117", "1830",
                  "5901", "SF", "T", "T", "0", "ShADadFf", "14", "2570", "12", "6533", "-"]
    return ("\t".join(fields) + "\n").encode()


class ConnLog:
    """Lines numbered from ``first``; every ``every``-th line is a probe."""

    def __init__(self, first: int = 0, every: int = 3):
        self.next = first
        self.every = every
        self.probes: list[str] = []

    def lines(self, count: int) -> bytes:
        out = []
        for number in range(self.next, self.next + count):
            probe = number % self.every == 0
            if probe:
                self.probes.append(uid(number))
            out.append(line(number, probe))
        self.next += count
        return b"".join(out)

    def append(self, path: Path, count: int) -> None:
        with open(path, "ab") as fh:
            fh.write(self.lines(count))
