#!/usr/bin/env python3
"""Benchmark the Spark engine against the DuckDB engine on one generated Zeek conn log.

    python3 bench/bench_spark.py [--rows 5000000] [--runs 1]

The log is generated with ../shared/tools/gen_zeek_conn.py into bench/out/ (as
bench_hunt.py does). Measured, each in its own process:

- ``hunt --engine duckdb`` on the TSV log (the default path);
- ``hunt --engine spark --master local[2]`` on the same log (rpcwatch's readers on the
  driver, Arrow batches to Spark);
- ``export-parquet`` of the log, then ``hunt --engine spark`` on that dataset with
  ``local[1]`` and ``local[2]`` (Spark reads and filters everything itself, as on a
  cluster): the scaling table for 1 and 2 executor cores;
- the same dataset scan inside a warm session (the second of two scans), which leaves out
  what every run pays once: starting the JVM, compiling the query code.

Wall time is the median of --runs runs; peak memory is the largest resident set of the
whole process tree (the JVM included), sampled every 50 ms. Every run's alert count is
checked against the generator's ground truth.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_hunt import OUT, RULE, generate


def tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in members]
        members.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in members) / (1 << 20)


def run_once(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak tree RSS in MiB, standard output."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = [0.0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.stdout.read().decode()
    process.wait()
    elapsed = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}")
    return elapsed, peak[0], output


def measure(command: list[str], runs: int) -> tuple[float, float, str]:
    results = [run_once(command) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results), results[-1][2]


def rpcwatch(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "rpcwatch", *arguments]


def hunt(path: Path, engine: str, master: str | None = None) -> list[str]:
    command = rpcwatch("hunt", str(path), "--format", "jsonl", "-q", "--no-progress", "--engine", engine)
    return command + (["--master", master] if master else [])


WARM_SCAN = """
import sys, time
from rpcwatch.engines.spark import SparkEngine
from rpcwatch.engines.spark_scan import SparkDatasetScan
from rpcwatch.hunt import plan_hunt
engine, plan = SparkEngine(master=sys.argv[2]), plan_hunt()
for _ in range(2):
    start = time.perf_counter()
    rows = sum(b.data.num_rows for b in SparkDatasetScan(engine, [sys.argv[1]], plan.by_table).batches([]))
    seconds = time.perf_counter() - start
print(seconds)
"""


def warm_scan_seconds(dataset: Path, master: str) -> float:
    _, _, output = run_once([sys.executable, "-c", WARM_SCAN, str(dataset), master])
    return float(output.strip().splitlines()[-1])


def alerts_of(output: str) -> int:
    return sum(1 for line in output.splitlines() if json.loads(line)["rule"]["name"] == RULE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    log, truth = generate(args.rows, "tsv")
    expected = truth["expected_matches"]
    dataset = OUT / f"conn_{args.rows}.parquet"
    shutil.rmtree(dataset, ignore_errors=True)
    export_seconds, export_rss, _ = run_once(rpcwatch("export-parquet", str(log), "-o", str(dataset)))

    runs = [
        ("duckdb, TSV log (default)", hunt(log, "duckdb")),
        ("spark local[2], TSV log via rpcwatch readers", hunt(log, "spark", "local[2]")),
        ("spark local[1], Parquet dataset", hunt(dataset, "spark", "local[1]")),
        ("spark local[2], Parquet dataset", hunt(dataset, "spark", "local[2]")),
    ]
    print(f"{args.rows:,} rows, {log.stat().st_size / 1e6:,.0f} MB TSV; export-parquet took "
          f"{export_seconds:.1f} s (peak {export_rss:,.0f} MiB)")
    header = f"{'run':46} | {'wall s':>8} | {'rows/s':>11} | {'peak MiB':>9} | {'vs duckdb':>9} | alerts"
    print(header)
    print("-" * len(header))
    baseline = None
    for name, command in runs:
        seconds, rss, output = measure(command, args.runs)
        baseline = baseline or seconds
        found = alerts_of(output)
        check = "ok" if found == expected else f"MISMATCH (truth {expected})"
        print(f"{name:46} | {seconds:>8.1f} | {args.rows / seconds:>11,.0f} | {rss:>9,.0f} | "
              f"{seconds / baseline:>8.1f}x | {found} {check}", flush=True)
    print("\nSpark on the Parquet dataset, warm session (second scan; no JVM start, code compiled):")
    for master in ("local[1]", "local[2]"):
        seconds = statistics.median(warm_scan_seconds(dataset, master) for _ in range(args.runs))
        print(f"  {master}: {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)", flush=True)


if __name__ == "__main__":
    main()
