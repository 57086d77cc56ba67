"""Reader throughput of the network-connection formats next to the Zeek TSV reader.

Writes one file per format with --records records of the same connections (one in a
thousand an internet source to TCP/135, the rest internal traffic to other ports), then
reads each with its reader as ``rpcwatch hunt`` does: every record parsed (no
prefilter), and with the prefilter the bundled rules give the format's table. Times are
medians of --runs runs; rows/s counts every record of the file.

    python bench/bench_sources.py [--records 1000000] [--runs 3] [--dir /tmp/rpcwatch-bench]
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from rpcwatch.hunt import plan_hunt
from rpcwatch.sources import LogReading, expand_inputs

BASE = 1_700_000_000


def connection(n: int) -> tuple[str, int, str, int, int]:
    """(source, source port, destination, destination port, epoch) of record ``n``."""
    if n % 1000 == 0:
        return f"45.155.{n % 250}.{n % 200 + 1}", 40000 + n % 20000, f"10.0.{n % 250}.{n % 199 + 1}", 135, BASE + n
    return f"10.1.{n % 250}.{n % 200 + 1}", 40000 + n % 20000, f"10.2.{n % 250}.{n % 199 + 1}", 443, BASE + n


def zeek_tsv(n: int) -> str:
    src, sport, dst, dport, ts = connection(n)
    return (f"{ts}.000000\tC{n:017d}\t{src}\t{sport}\t{dst}\t{dport}\ttcp\t-\t0.5\t120\t3000\tSF\tT\tT\t0\tShADadFf"
            f"\t6\t440\t5\t3260\t-\n")


ZEEK_HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
               "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes"
               "\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes"
               "\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n"
               "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool"
               "\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n")


def eve(n: int) -> str:
    src, sport, dst, dport, ts = connection(n)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    return json.dumps({"timestamp": f"{stamp}.000000+0000", "flow_id": n, "in_iface": "eth0", "event_type": "flow",
                       "src_ip": src, "src_port": sport, "dest_ip": dst, "dest_port": dport, "proto": "TCP",
                       "app_proto": "tls", "flow": {"pkts_toserver": 6, "pkts_toclient": 5, "bytes_toserver": 440,
                                                    "bytes_toclient": 3260, "start": f"{stamp}.000000+0000",
                                                    "end": f"{stamp}.500000+0000", "age": 0, "state": "closed",
                                                    "reason": "timeout", "alerted": False}},
                      separators=(",", ":")) + "\n"


def vpc(n: int) -> str:
    src, sport, dst, dport, ts = connection(n)
    return f"2 123456789010 eni-0a1b2c3d4e5f67890 {src} {dst} {sport} {dport} 6 11 3700 {ts} {ts + 60} ACCEPT OK\n"


def netfilter(n: int) -> str:
    src, sport, dst, dport, ts = connection(n)
    stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(ts))
    return (f"{stamp} gw kernel: [DROP_INPUT] IN=eth0 OUT= MAC=90:10:35:5a:1e:3a:90:10:9e:ec:2c:71:08:00 SRC={src} "
            f"DST={dst} LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID={n % 65536} DF PROTO=TCP SPT={sport} DPT={dport} "
            f"WINDOW=64240 RES=0x00 SYN URGP=0 \n")


def ecs(n: int) -> str:
    src, sport, dst, dport, ts = connection(n)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    return json.dumps({"@timestamp": f"{stamp}.000Z", "ecs": {"version": "8.11.0"},
                       "event": {"category": ["network"], "type": ["connection"], "outcome": "success"},
                       "source": {"ip": src, "port": sport, "bytes": 440, "packets": 6},
                       "destination": {"ip": dst, "port": dport, "bytes": 3260, "packets": 5},
                       "network": {"transport": "tcp", "iana_number": "6", "community_id": f"1:{n:020d}="}},
                      separators=(",", ":")) + "\n"


#: name, file name, record writer, first lines
FORMATS: list[tuple[str, str, Callable[[int], str], str]] = [
    ("zeek-tsv (baseline)", "conn.log", zeek_tsv, ZEEK_HEADER),
    ("suricata-eve", "eve.json", eve, ""),
    ("aws-vpcflow", "vpcflow.log", vpc, ""),
    ("aws-vpcflow gzip", "vpcflow.log.gz", vpc, ""),
    ("netfilter", "kern.log", netfilter, ""),
    ("ecs-json", "ecs.ndjson", ecs, ""),
]


def write(path: Path, records: int, line: Callable[[int], str], header: str) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as out:
        out.write(header)
        for start in range(0, records, 100_000):
            out.write("".join(line(n) for n in range(start, min(records, start + 100_000))))


def read(path: Path, prefilter: bool) -> tuple[float, int]:
    plan = plan_hunt(prefilter=prefilter)
    reading = LogReading(list(expand_inputs([str(path)])), plan.prefilter if prefilter else None)
    began = time.perf_counter()
    for _ in reading.batches():
        pass
    elapsed = time.perf_counter() - began
    [stats] = reading.stats
    assert stats.error is None and stats.skipped_total == 0, stats
    return elapsed, stats.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rpcwatch-bench-sources"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.records:,} records per file, medians of {args.runs} runs")
    print(f"{'format':<22}{'file MB':>9}{'all rows/s':>14}{'prefilter rows/s':>18}")
    for name, file_name, line, header in FORMATS:
        path = args.dir / file_name
        if not path.exists():
            write(path, args.records, line, header)
        figures = []
        for prefilter in (False, True):
            times = []
            for _ in range(args.runs):
                elapsed, records = read(path, prefilter)
                assert records == args.records, (name, records)
                times.append(elapsed)
            figures.append(args.records / statistics.median(times))
        print(f"{name:<22}{path.stat().st_size / 1e6:>9.0f}{figures[0]:>14,.0f}{figures[1]:>18,.0f}", flush=True)


if __name__ == "__main__":
    main()
