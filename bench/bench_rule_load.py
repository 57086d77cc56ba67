#!/usr/bin/env python3
"""How long a run takes to start with 2,400 SigmaHQ Windows rules, from the compiled rule
set cache and without it, next to a run with the bundled rules only.

    python3 bench/bench_rule_load.py [--runs 5]

Each run is `rpcwatch hunt` in its own process over a small Zeek conn.log that no Windows
rule reads, so the time is starting: imports, loading and compiling (or reading from the
cache) and planning the rules, then a few milliseconds of hunting. Three commands, run in
turn within each round so machine load falls on all alike:
* bundled: the six bundled rules (their own compiled set is cached too);
* cold: bundled + the SigmaHQ Windows rules, with an empty cache directory every run;
* cached: the same rules again, the cache filled by an earlier run.
Printed: wall time medians and the cached run's distance from the bundled one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("RPCWATCH_CORPUS", HERE.parent.parent / "shared" / "corpus"))
RULES = CORPUS / "sigmahq-sigma" / "rules" / "windows"
LOG = HERE.parent / "examples" / "zeek" / "conn.log"


def timed(arguments: list[str], cache: Path) -> float:
    command = [sys.executable, "-m", "rpcwatch", "hunt", str(LOG), *arguments, "-q", "--format", "jsonl",
               "--no-progress"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "RPCWATCH_CACHE_DIR": str(cache)})
    return time.perf_counter() - start


def rule_count() -> int:
    from rpcwatch.hunt import plan_hunt

    return len(plan_hunt([str(RULES)], bundled=False).rule_set.rules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    many = ["--rules", str(RULES)]
    times: dict[str, list[float]] = {"bundled": [], "cold": [], "cached": []}
    with tempfile.TemporaryDirectory() as scratch:
        warm, cold = Path(scratch) / "warm", Path(scratch) / "cold"
        timed([], warm), timed(many, warm)  # fill the cache
        for _ in range(args.runs):
            times["bundled"].append(timed([], warm))
            shutil.rmtree(cold, ignore_errors=True)
            times["cold"].append(timed(many, cold))
            times["cached"].append(timed(many, warm))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"rules: bundled 6; bundled + {rule_count():,} runnable SigmaHQ Windows rules ({RULES})")
    print(f"{'run':8} {'median s':>9} {'min s':>7} {'max s':>7}   (wall time of `rpcwatch hunt` on {LOG.name}, "
          f"{args.runs} runs)")
    for name, values in times.items():
        print(f"{name:8} {medians[name]:>9.2f} {min(values):>7.2f} {max(values):>7.2f}")
    print(f"cached - bundled: {medians['cached'] - medians['bundled']:+.2f} s; "
          f"cold - cached: {medians['cold'] - medians['cached']:+.2f} s")


if __name__ == "__main__":
    main()
