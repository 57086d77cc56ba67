#!/usr/bin/env python3
"""Benchmark triage at scale on generated Zeek conn logs: `rpcwatch triage` and `rpcwatch
report` next to plain `rpcwatch hunt` on the same input, run side by side.

    python3 bench/bench_triage.py [--rows 8000000] [--formats tsv] [--runs 3] [--seed 1]

Logs come from bench_hunt.py's generator (../shared/tools/gen_zeek_conn.py --seed 1 or
--seed, into bench/out/, git-ignored). Every command runs in its own process; the commands take turns
within each run (hunt, triage, report, hunt, ...) so that they share whatever else the
machine is doing; wall time is the median of --runs, peak memory the largest resident set
seen. The log is read once before the runs, so that no command pays for the disk alone;
the machine's load average is printed with each size. The generated log is a worst case
for triage: its TCP/135 sources are random internet hosts and about half of its internal
hosts get an established session from one, so the evidence pass reads nearly every line
and builds thousands of baselines.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hunt import generate  # noqa: E402

TARGET_RATIO = 3.0
TARGET_MEMORY_MIB = 1024


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rpcwatch", *args, "-q", "--no-progress"]


def run_once(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, standard output."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, stdout.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[8_000_000])
    parser.add_argument("--formats", nargs="+", default=["tsv"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    header = (f"{'rows':>9} {'format':6} | {'command':7} | {'wall s':>7} {'vs hunt':>8} {'RSS MiB':>8} | result")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="rpcwatch-bench-") as folder:
        report = Path(folder) / "report.html"
        for rows in args.rows:
            for fmt in args.formats:
                path, _ = generate(rows, fmt, args.seed)
                _read_once(path)
                load = os.getloadavg()
                commands = {"hunt": command("hunt", str(path), "--format", "jsonl"),
                            "triage": command("triage", str(path), "--format", "json"),
                            "report": command("report", str(path), "-o", str(report))}
                walls: dict[str, list[float]] = {name: [] for name in commands}
                peaks: dict[str, float] = dict.fromkeys(commands, 0.0)
                outputs: dict[str, str] = {}
                for _ in range(args.runs):
                    for name, argv in commands.items():
                        wall, peak, outputs[name] = run_once(argv)
                        walls[name].append(wall)
                        peaks[name] = max(peaks[name], peak)
                hunt = statistics.median(walls["hunt"])
                for name in commands:
                    wall = statistics.median(walls[name])
                    print(f"{rows:>9} {fmt:6} | {name:7} | {wall:>7.2f} {wall / hunt:>7.2f}x {peaks[name]:>8.0f} | "
                          f"{_describe(name, outputs[name], report)}", flush=True)
                print(f"{'':>9} {'':6} | {args.runs} run(s), wall times "
                      + "; ".join(f"{n} " + ", ".join(f"{w:.1f}" for w in walls[n]) for n in commands)
                      + f"; load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f} ("
                      f"{os.cpu_count()} cores)")
                for name in ("triage", "report"):
                    ratio = statistics.median(walls[name]) / hunt
                    met = ratio <= TARGET_RATIO and peaks[name] < TARGET_MEMORY_MIB
                    print(f"{'':>9} {'':6} | {name:7} | target (<= {TARGET_RATIO:g}x hunt, < "
                          f"{TARGET_MEMORY_MIB} MiB): {'met' if met else 'MISSED'}")


def _read_once(path: Path) -> None:
    """Bring the log into the page cache."""
    with open(path, "rb", buffering=0) as log:
        while log.read(16 << 20):
            pass


def _describe(name: str, output: str, report: Path) -> str:
    if name == "hunt":
        return f"{len(output.splitlines()):,} alerts"
    if name == "report":
        beside = sorted(p.name.split(".", 1)[1] for p in report.parent.glob(f"{report.stem}.*.jsonl"))
        return f"HTML {report.stat().st_size / 1e6:.1f} MB; beside: {', '.join(beside) or 'nothing'}"
    found = json.loads(output)
    stages = Counter((i["stage"], i["direct_stage"]) for i in found["incidents"])
    by_stage = ", ".join(f"{n:,} at {s} ({d} direct)" for (s, d), n in sorted(stages.items()))
    return (f"{len(found['incidents']):,} incidents ({by_stage}); {len(found['scanning']):,} scanning targets, "
            f"{sum(s['probes'] for s in found['scanning']):,} probes")


if __name__ == "__main__":
    main()
