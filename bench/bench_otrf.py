#!/usr/bin/env python3
"""Thousands of Sigma rules over real Windows events: every SigmaHQ Windows rule over the
OTRF lateral-movement host datasets, repeated to 301,056 events (610 MiB of NXLog JSON lines).

    python3 bench/bench_otrf.py [--repeat 24] [--runs 3] [--baseline REVISION] [--data DIR]

The input is built once in --data (default bench/out): the four zips of
otrf-security-datasets/datasets/atomic/windows/lateral_movement/host unzipped, concatenated in
name order and repeated --repeat times. rpcwatch runs with all of rules/windows and without
the bundled rules, in rounds with --baseline (an earlier revision, bench/common.py) side by
side; one unmeasured run of each first fills its rule cache, so the figures are of a
repeated run (docs/performance.md gives cold rule loads).
Printed: median wall and CPU seconds, events per second, peak RSS, detections and the rules
that made them (which must be equal between revisions).
"""
from __future__ import annotations

import argparse
import json
import os
import zipfile
from collections import Counter
from pathlib import Path

from common import OUT, REPO, baseline_source, compiled, measure_rounds, rpcwatch, run_once

CORPUS = Path(os.environ.get("RPCWATCH_CORPUS", REPO.parent / "shared" / "corpus"))
DATASETS = CORPUS / "otrf-security-datasets" / "datasets" / "atomic" / "windows" / "lateral_movement" / "host"
RULES = CORPUS / "sigmahq-sigma" / "rules" / "windows"


def build_input(folder: Path, repeat: int) -> tuple[Path, int]:
    target = folder / f"otrf_lateral_movement_x{repeat}.json"
    parts = []
    for archive in sorted(DATASETS.glob("*.zip")):
        with zipfile.ZipFile(archive) as opened:
            for member in sorted(opened.namelist()):
                data = opened.read(member)
                parts.append(data if data.endswith(b"\n") else data + b"\n")
    once = b"".join(parts)
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for _ in range(repeat):
                out.write(once)
    return target, once.count(b"\n") * repeat


def detections(output: str) -> Counter:
    return Counter(json.loads(line)["rule"]["name"] for line in output.splitlines() if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=24)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REVISION")
    parser.add_argument("--data", type=Path, default=OUT)
    args = parser.parse_args()
    path, events = build_input(args.data, args.repeat)
    hunt = ["hunt", str(path), "--rules", str(RULES), "--no-bundled-rules", "--format", "jsonl", "-q",
            "--no-progress"]
    commands = {"rpcwatch": rpcwatch(hunt, compiled(REPO / "src"))}
    if args.baseline:
        commands[f"before ({args.baseline})"] = rpcwatch(hunt, baseline_source(args.baseline))
    for command in commands.values():
        run_once(command)  # fills the rule cache
    print(f"{events:,} events, {path.stat().st_size / 2**20:,.0f} MiB: {path}")
    print(f"{'command':18} {'wall s':>7} {'CPU s':>7} {'events/s':>9} {'peak MiB':>9} | detections  rounds")
    for name, result in measure_rounds(commands, args.runs).items():
        found = detections(result.output)
        print(f"{name:18} {result.seconds:>7.1f} {result.cpu:>7.1f} {events / result.seconds:>9,.0f} "
              f"{result.peak_mib:>9,.0f} | {sum(found.values()):,} in {len(found)} rules  "
              f"[{' '.join(f'{t:.1f}' for t in result.rounds)}]", flush=True)


if __name__ == "__main__":
    main()
