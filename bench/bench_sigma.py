#!/usr/bin/env python3
"""Thousands of Sigma rules at once: every runnable SigmaHQ Windows rule over the corpus's
Windows events repeated to at least a million, end to end (`rpcwatch hunt`).

    python3 bench/bench_sigma.py [--events 1000000] [--runs 3] [--baseline REVISION]

Two inputs, each at least --events events:
* ``evtx``: the corpus EVTX files with 50 records or more, repeated as a list of paths;
* ``json``: the same records as evtx_dump JSON lines (the Sigma regression samples' format),
  written once to bench/out/ in files of 125,000 events.
Every run is its own process, in rounds with --baseline (rpcwatch as of an earlier revision)
side by side (bench/common.py: wall time median of --runs, peak RSS the largest seen); one
unmeasured run of each first fills its rule cache. The
printed references are published figures, not measured here: Hayabusa about 12.8k events/s
with about 3.6k rules; RSigma 19k-99k events/s per core.
"""
from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import evtx
from common import REPO, baseline_source, compiled, measure_rounds, rpcwatch, run_once

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CORPUS = Path(os.environ.get("RPCWATCH_CORPUS", HERE.parent.parent / "shared" / "corpus"))
RULES = CORPUS / "sigmahq-sigma" / "rules" / "windows"
GROUPS = ("evtx-attack-samples", "hayabusa-sample-evtx", "evtx-rs-samples", "sigmahq-sigma/regression_data")
LARGE, PER_FILE = 50, 125_000


def records(path: Path) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [r["data"] for r in evtx.PyEvtxParser(str(path), skip_errors=True).records_json()]


def corpus_records() -> dict[Path, list[str]]:
    return {path: records(path) for group in GROUPS for path in sorted((CORPUS / group).rglob("*.evtx"))}


def evtx_input(found: dict[Path, list[str]], events: int) -> tuple[list[str], int]:
    large = {path: len(texts) for path, texts in found.items() if len(texts) >= LARGE}
    rounds = -(-events // sum(large.values()))
    return [str(path) for _ in range(rounds) for path in large], rounds * sum(large.values())


def json_input(found: dict[Path, list[str]], events: int) -> tuple[list[str], int]:
    folder = OUT / f"windows_json_{events}"
    texts = [json.dumps(json.loads(t), separators=(",", ":")) for ts in found.values() for t in ts]
    total = -(-events // len(texts)) * len(texts)
    if not folder.exists():
        folder.mkdir(parents=True)
        written = 0
        while written < total:
            with open(folder / f"events_{written // PER_FILE:03d}.json", "w") as out:
                for _ in range(min(PER_FILE, total - written)):
                    out.write(texts[written % len(texts)])
                    out.write("\n")
                    written += 1
    return [str(folder)], total


def rule_count() -> int:
    from rpcwatch.hunt import plan_hunt

    plan = plan_hunt([str(RULES)], bundled=False)
    return len(plan.rule_set.rules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REVISION")
    args = parser.parse_args()
    found = corpus_records()
    trees = {"rpcwatch": compiled(REPO / "src")}
    if args.baseline:
        trees[f"before ({args.baseline})"] = baseline_source(args.baseline)
    print(f"rules: {rule_count()} runnable SigmaHQ Windows rules ({RULES})")
    print(f"{'input':6} {'command':18} {'events':>10} | {'wall s':>8} {'CPU s':>7} {'events/s':>10} {'per core':>9} "
          f"{'peak MiB':>9} | {'alerts':>8} | vs Hayabusa 12.8k/s, RSigma 19k-99k/s per core")
    for name, build in (("evtx", evtx_input), ("json", json_input)):
        paths, events = build(found, args.events)
        hunt = ["hunt", *paths, "--rules", str(RULES), "--no-bundled-rules", "--format", "jsonl", "-q", "--no-progress"]
        commands = {label: rpcwatch(hunt, source) for label, source in trees.items()}
        for command in commands.values():
            run_once(command)  # fills the rule cache
        for label, result in measure_rounds(commands, args.runs).items():
            rate = events / result.seconds
            alerts = sum(1 for line in result.output.splitlines() if line.strip())
            print(f"{name:6} {label:18} {events:>10,} | {result.seconds:>8.1f} {result.cpu:>7.1f} {rate:>10,.0f} "
                  f"{rate / 2:>9,.0f} {result.peak_mib:>9.0f} | {alerts:>8,} | {rate / 12_800:.1f}x Hayabusa, "
                  f"{rate / 2 / 99_000:.2f}-{rate / 2 / 19_000:.1f}x RSigma per core", flush=True)


if __name__ == "__main__":
    main()
