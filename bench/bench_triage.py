#!/usr/bin/env python3
"""Benchmark triage on generated Zeek conn logs: plain `rpcwatch hunt` next to `hunt
--suppress`, `exposure` (alerts only) and `triage` (hunt + the evidence pass).

    python3 bench/bench_triage.py [--rows 5000000] [--formats tsv tsv.gz] [--runs 3]

Logs come from bench_hunt.py's generator (bench/out/, git-ignored). Every command runs in
its own process; wall time is the median of --runs, peak memory the largest resident set.
The generated log's TCP/135 sources are random, so nearly every alert has its own source:
the worst case for the evidence pass, whose searches grow with the number of addresses.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hunt import generate, measure  # noqa: E402


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rpcwatch", *args, "-q"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000])
    parser.add_argument("--formats", nargs="+", default=["tsv", "tsv.gz"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    header = f"{'rows':>9} {'format':7} | {'command':34} | {'wall s':>7} {'RSS MiB':>8} | result"
    print(header)
    print("-" * len(header))
    for rows in args.rows:
        for fmt in args.formats:
            path, _ = generate(rows, fmt)
            runs = {
                "hunt": command("hunt", str(path), "--format", "jsonl", "--no-progress"),
                "hunt --suppress source.ip --window 1h": command(
                    "hunt", str(path), "--format", "jsonl", "--no-progress", "--suppress", "source.ip",
                    "--window", "1h"),
                "exposure": command("exposure", str(path), "--format", "json"),
                "triage": command("triage", str(path), "--format", "json"),
            }
            for name, argv in runs.items():
                wall, rss, output = measure(argv, args.runs)
                print(f"{rows:>9} {fmt:7} | {name:34} | {wall:>7.2f} {rss:>8.0f} | {_describe(name, output)}",
                      flush=True)


def _describe(name: str, output: str) -> str:
    if name.startswith("hunt"):
        alerts = [json.loads(line) for line in output.splitlines()]
        return f"{len(alerts):,} alerts" + (f" for {sum(a['count'] for a in alerts):,}" if "suppress" in name else "")
    found = json.loads(output)
    if name == "exposure":
        return f"{len(found):,} exposed hosts"
    stages: dict[int, int] = {}
    for incident in found:
        stages[incident["stage"]] = stages.get(incident["stage"], 0) + 1
    return f"{len(found):,} incidents, by stage {dict(sorted(stages.items()))}"


if __name__ == "__main__":
    main()
