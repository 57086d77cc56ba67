"""Throughput of the pcap reader next to ``tshark -q -z conv,tcp`` on a capture of >= 1 GB.

The capture is built (once, streamed to ``bench/out/``) by replaying the corpus's Ethernet
captures over and over, each replay with its IPv4 addresses shifted (so its connections
are new ones) and its packets moved after the previous replay in time. Each tool runs in
its own process; wall time, CPU time and peak RSS come from ``resource.getrusage`` of that
child (the reader's worker processes included: ``RUSAGE_CHILDREN`` covers descendants that
were waited for). The reader is run the way ``rpcwatch hunt`` runs it: a capture this large
is tracked by one worker process per core, each for a share of the host pairs.

``--baseline-src DIR`` also runs the reader of another version (its ``src`` directory,
e.g. from ``git archive``) on the same capture, alternating with this one, so a change is
measured side by side on the same machine in the same run. Times depend on what else the
machine runs; ``--instructions-mb N`` also counts, with valgrind's callgrind, the
instructions both versions execute per packet on the capture's first N MB (the same
count however busy the machine is).

    python bench/bench_pcap.py [--size-mb 1100] [--runs 3] [--corpus ../shared/corpus]
                               [--baseline-src DIR [--instructions-mb 30]]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
LINK_ETHERNET = 1
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINK_ETHERNET)
RECORD = struct.Struct("<IIII")

READER_SCRIPT = """
import sys
import rpcwatch.sources.pcap
from rpcwatch.sources import LogReading, expand_inputs
from rpcwatch.context import RunContext
if sys.argv[2] == "single":
    rpcwatch.sources.pcap.PARALLEL_MIN_SIZE = float("inf")
inputs = list(expand_inputs(sys.argv[1:2]))
with RunContext() as run:
    run.workers.start(sys.argv[1:2])
    run.workers.ready()
    reading = LogReading(inputs)
    rows = {}
    for batch in reading.batches():
        rows[batch.table] = rows.get(batch.table, 0) + batch.data.num_rows
print(reading.stats[0].records, rows.get("zeek.conn", 0), rows.get("zeek.dce_rpc", 0))
"""

#: the reader alone on a capture, for counting instructions
TRACK_SCRIPT = """
import sys
from rpcwatch.sources.base import ReadStats
from rpcwatch.sources.pcap import track_capture
with open(sys.argv[1], "rb") as stream:
    for _ in track_capture(stream, ReadStats(sys.argv[1])):
        pass
"""


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    output: str


def corpus_ethernet_captures(corpus: Path) -> list[list[tuple[float, bytes, int]]]:
    """Every Ethernet capture of the corpus, as (relative time, frame, wire length) lists."""
    sys.path.insert(0, str(REPO / "src"))
    from rpcwatch.sources.base import ReadStats
    from rpcwatch.sources.capture import iter_records

    captures = []
    for path in sorted(corpus.rglob("*")):
        if path.suffix not in (".pcap", ".pcapng", ".cap"):
            continue
        with open(path, "rb") as stream:
            records = [r for r in iter_records(stream, ReadStats(str(path))) if r[1] == LINK_ETHERNET]
        if records:
            start = records[0][0]
            captures.append([(ts - start, frame, wire) for ts, _, frame, wire in records])
    return captures


def shifted(frame: bytes, replay: int) -> bytes:
    """IPv4 in an untagged Ethernet frame: second and third octet of both addresses
    shifted by the replay number, so each replay's connections are new ones."""
    if frame[12:14] != b"\x08\x00" or len(frame) < 34:
        return frame
    data = bytearray(frame)
    for offset in (27, 31):
        data[offset] ^= replay & 0xFF
        data[offset + 1] ^= (replay >> 8) & 0xFF
    return bytes(data)


def build_capture(corpus: Path, target: Path, size: int) -> None:
    captures = corpus_ethernet_captures(corpus)
    clock = 1_700_000_000.0
    written = len(PCAP_HEADER)
    replay = 0
    with open(target, "wb") as out:
        out.write(PCAP_HEADER)
        while written < size:
            replay += 1
            for records in captures:
                for offset, frame, wire in records:
                    ts = clock + offset
                    seconds = int(ts)
                    frame = shifted(frame, replay)
                    out.write(RECORD.pack(seconds, int((ts - seconds) * 1e6), len(frame), wire))
                    out.write(frame)
                    written += RECORD.size + len(frame)
                clock += min(records[-1][0], 600.0) + 1.0
    print(f"built {target} ({written / 1e6:.0f} MB, {replay} replays of {len(captures)} captures)")


def measure(command: list[str], pythonpath: str | None = None) -> Run:
    """Run ``command`` in a wrapper process so its peak RSS is that child's alone
    (``pythonpath``: the source tree its Python imports rpcwatch from)."""
    wrapper = ("import resource, subprocess, sys, time\n"
               "start = time.perf_counter()\n"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "elapsed = time.perf_counter() - start\n"
               "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)\n"
               "print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:])\n")
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True,
                            check=True, env=env)
    first, output = result.stdout.split("\n", 1)
    seconds, cpu_seconds, peak_kb = first.split()
    return Run(float(seconds), float(cpu_seconds), int(peak_kb) / 1024, output.strip())


def instructions(capture: Path, pythonpath: str | None) -> int:
    """Instructions executed (callgrind) by a process that reads ``capture`` with the
    reader of ``pythonpath`` (None: this version)."""
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                             "-c", TRACK_SCRIPT, str(capture)], capture_output=True, text=True, check=True, env=env)
    return int(re.search(r"Collected : (\d+)", result.stderr).group(1))


def compare_instructions(capture: Path, megabytes: int, baseline: str) -> None:
    """Instructions per packet of both versions on the first ``megabytes`` of ``capture``,
    less what a process reading an empty capture executes (start-up and imports)."""
    sys.path.insert(0, str(REPO / "src"))
    from rpcwatch.sources.base import ReadStats
    from rpcwatch.sources.capture import iter_records

    head, empty = OUT / f"head_{megabytes}mb.pcap", OUT / "empty.pcap"
    with open(capture, "rb") as source:
        head.write_bytes(source.read(megabytes * 1_000_000))
        source.seek(0)
        empty.write_bytes(source.read(len(PCAP_HEADER)))
    with open(head, "rb") as stream:
        packets = sum(1 for _ in iter_records(stream, ReadStats(str(head))))
    per_packet = {}
    for name, pythonpath in (("this version", None), ("baseline", baseline)):
        per_packet[name] = (instructions(head, pythonpath) - instructions(empty, pythonpath)) / packets
        print(f"{name}: {per_packet[name]:,.0f} instructions per packet (first {megabytes} MB, {packets} packets)")
    print(f"this version / baseline: instructions x{per_packet['this version'] / per_packet['baseline']:.3f}")


def median(runs: list[Run]) -> Run:
    """The run with the median wall time (the machine may be shared: runs alternate)."""
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--size-mb", type=int, default=1100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, help="the src directory of a version to compare with")
    parser.add_argument("--instructions-mb", type=int, help="with --baseline-src: count instructions (valgrind)")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    capture = OUT / f"replay_{args.size_mb}mb.pcap"
    if not capture.exists() or capture.stat().st_size < args.size_mb * 1_000_000:
        build_capture(args.corpus, capture, args.size_mb * 1_000_000)
    size_mb = capture.stat().st_size / 1e6

    commands = {
        "rpcwatch, 1 process": ([sys.executable, "-c", READER_SCRIPT, str(capture), "single"], None),
        "rpcwatch, workers": ([sys.executable, "-c", READER_SCRIPT, str(capture), "workers"], None),
    }
    if args.baseline_src:
        baseline = str(args.baseline_src.resolve())
        commands["baseline, 1 process"] = (commands["rpcwatch, 1 process"][0], baseline)
        commands["baseline, workers"] = (commands["rpcwatch, workers"][0], baseline)
    if shutil.which("tshark"):
        commands["tshark -q -z conv,tcp"] = (["tshark", "-n", "-q", "-r", str(capture), "-z", "conv,tcp"], None)
    else:
        print("tshark not installed: no comparison")
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, (command, pythonpath) in commands.items():
            runs[name].append(measure(command, pythonpath))
    reader = median(runs["rpcwatch, 1 process"])
    packets = int(reader.output.split()[0])
    print(f"capture: {size_mb:.0f} MB, {packets} packets; reader output (packets, conn rows, dce_rpc rows): "
          f"{reader.output}")
    print("(peak RSS of the worker variant is the largest single process)")
    for name, results in runs.items():
        if name.startswith(("rpcwatch", "baseline")):
            print(f"{name} output: {median(results).output}")
    print(f"{'':24} {'median s':>9} {'packets/s':>11} {'MB/s':>7} {'CPU s':>7} {'peak RSS MB':>12}  wall s per run")
    for name, results in runs.items():
        run = median(results)
        print(f"{name:24} {run.seconds:9.1f} {packets / run.seconds:11.0f} {size_mb / run.seconds:7.1f} "
              f"{run.cpu_seconds:7.1f} {run.peak_rss_mb:12.0f}  {', '.join(f'{r.seconds:.1f}' for r in results)}")
    if args.baseline_src and args.instructions_mb:
        compare_instructions(capture, args.instructions_mb, str(args.baseline_src.resolve()))
    if args.baseline_src:
        for variant in ("1 process", "workers"):
            now, before = median(runs[f"rpcwatch, {variant}"]), median(runs[f"baseline, {variant}"])
            print(f"{variant}: this version / baseline: wall time x{now.seconds / before.seconds:.3f}, "
                  f"CPU time x{now.cpu_seconds / before.cpu_seconds:.3f}")
    if "tshark -q -z conv,tcp" in runs:
        tshark = median(runs["tshark -q -z conv,tcp"])
        for name in ("rpcwatch, 1 process", "rpcwatch, workers"):
            run = median(runs[name])
            print(f"{name} / tshark: wall time x{run.seconds / tshark.seconds:.2f}, CPU time "
                  f"x{run.cpu_seconds / tshark.cpu_seconds:.2f}, peak RSS x{run.peak_rss_mb / tshark.peak_rss_mb:.3f}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"bench took {time.perf_counter() - start:.0f} s")
