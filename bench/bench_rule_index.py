#!/usr/bin/env python3
"""Where a hunt with thousands of rules spends its engine time: how many rules the literal
index leaves to evaluate, how many queries that takes, and the seconds of each part.

    python3 bench/bench_rule_index.py [--repeat 8] [--runs 3] [--baseline REVISION] [--data DIR]

The input is bench_otrf.py's (the OTRF lateral-movement host datasets repeated --repeat
times); every SigmaHQ Windows rule runs over it, as in bench_otrf.py. Each run is its own
process (rpcwatch's hunt, in-process, with the engine's steps timed around their calls), in
rounds with --baseline side by side; one unmeasured run of each first fills its rule cache.
Printed per command (medians of the rounds): rules evaluated (a rule once per batch it is
tried in), queries, rows the queries read, seconds in the index (scan and candidate rows),
seconds in DuckDB's queries, and the whole hunt.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench_otrf import RULES, build_input
from common import OUT, REPO, baseline_source, compiled


def measured_hunt(arguments: list[str]) -> dict:
    """Run ``rpcwatch hunt`` here with its engine's steps timed (imported from the tree on
    ``sys.path``: this revision or the baseline's)."""
    import rpcwatch.engines.duckdb as duckdb_engine
    import rpcwatch.engines.ruleindex as ruleindex

    found: Counter = Counter()

    def timed(owner, name: str, key: str, exhaust: bool = False) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                result = original(*args, **kwargs)
                return list(result) if exhaust else result
            finally:
                found[key] += time.perf_counter() - started

        setattr(owner, name, wrapper)

    timed(ruleindex.RuleIndex, "candidates", "index_s", exhaust=True)
    timed(duckdb_engine.DuckDBEngine, "execute", "queries_s")
    original_execute = duckdb_engine.DuckDBEngine.execute

    def counting_execute(self, view, sql):
        found["queries"] += 1
        found["query_rows"] += view.num_rows
        return original_execute(self, view, sql)

    duckdb_engine.DuckDBEngine.execute = counting_execute
    original_units = duckdb_engine._evaluation_units

    def counting_units(groups):
        for rules, rows in original_units(groups):
            found["rules_evaluated"] += len(rules)
            yield rules, rows

    duckdb_engine._evaluation_units = counting_units
    from rpcwatch.cli import main

    started = time.perf_counter()
    try:
        main(["hunt", *arguments])
    except SystemExit:
        pass
    found["hunt_s"] = time.perf_counter() - started
    return dict(found)


def run(source: Path, arguments: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(arguments)], check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(source)})
    return json.loads(done.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REVISION")
    parser.add_argument("--data", type=Path, default=OUT)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measured_hunt(json.loads(args.child))
        print(json.dumps(result), file=sys.stderr)
        return
    path, events = build_input(args.data, args.repeat)
    hunt = [str(path), "--rules", str(RULES), "--no-bundled-rules", "--format", "jsonl", "-q", "--no-progress"]
    trees = {"rpcwatch": compiled(REPO / "src")}
    if args.baseline:
        trees[f"before ({args.baseline})"] = baseline_source(args.baseline)
    for source in trees.values():
        run(source, hunt)  # fills the rule cache
    rounds: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, source in trees.items():
            rounds[name].append(run(source, hunt))
    print(f"{events:,} events: {path}")
    keys = ["rules_evaluated", "queries", "query_rows", "index_s", "queries_s", "hunt_s"]
    print(f"{'command':18} " + " ".join(f"{key:>15}" for key in keys))
    for name, found in rounds.items():
        medians = [statistics.median(result.get(key, 0) for result in found) for key in keys]
        print(f"{name:18} " + " ".join(f"{value:>15,.2f}" if key.endswith("_s") else f"{value:>15,.0f}"
                                        for key, value in zip(keys, medians)))


if __name__ == "__main__":
    main()
