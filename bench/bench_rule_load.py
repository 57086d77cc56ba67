#!/usr/bin/env python3
"""How long a run takes to start with 2,400 SigmaHQ Windows rules, from the compiled rule
set cache and without it, next to a run with the bundled rules only.

    python3 bench/bench_rule_load.py [--runs 5]

Each run is `rpcwatch hunt` in its own process over a small Zeek conn.log that no Windows
rule reads, so the time is starting: imports, loading and compiling (or reading from the
cache) and planning the rules, then a few milliseconds of hunting. Three commands, run in
turn within each round so machine load falls on all alike (in-process reading, so the
CPU time is the run's own):
* bundled: the six bundled rules (their own compiled set is cached too);
* cold: bundled + the SigmaHQ Windows rules, with an empty cache directory every run;
* cached: the same rules again, the cache filled by an earlier run.
Printed: wall and CPU time medians and the cached run's distance from the bundled one; on a
busy machine the CPU times are the steadier figure.
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


def timed(arguments: list[str], cache: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the process and its workers) of one run."""
    command = [sys.executable, "-m", "rpcwatch", "hunt", str(LOG), *arguments, "-q", "--format", "jsonl",
               "--no-progress", "--workers", "0"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "RPCWATCH_CACHE_DIR": str(cache)})
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def rule_count() -> int:
    from rpcwatch.hunt import plan_hunt

    return len(plan_hunt([str(RULES)], bundled=False).rule_set.rules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    many = ["--rules", str(RULES)]
    walls: dict[str, list[float]] = {"bundled": [], "cold": [], "cached": []}
    cpus: dict[str, list[float]] = {name: [] for name in walls}
    with tempfile.TemporaryDirectory() as scratch:
        warm, cold = Path(scratch) / "warm", Path(scratch) / "cold"
        timed([], warm), timed(many, warm)  # fill the cache
        for _ in range(args.runs):
            for name, arguments, cache in (("bundled", [], warm), ("cold", many, cold), ("cached", many, warm)):
                shutil.rmtree(cold, ignore_errors=True)
                wall, cpu = timed(arguments, cache)
                walls[name].append(wall)
                cpus[name].append(cpu)
    wall = {name: statistics.median(values) for name, values in walls.items()}
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    print(f"rules: bundled 6; bundled + {rule_count():,} runnable SigmaHQ Windows rules ({RULES})")
    print(f"`rpcwatch hunt {LOG.name}`, medians of {args.runs} runs (CPU: user + system of the process)")
    print(f"{'run':8} {'wall s':>7} {'CPU s':>7}")
    for name in walls:
        print(f"{name:8} {wall[name]:>7.2f} {cpu[name]:>7.2f}")
    print(f"cached - bundled: wall {wall['cached'] - wall['bundled']:+.2f} s,"
          f" CPU {cpu['cached'] - cpu['bundled']:+.2f} s;"
          f" cold - cached: wall {wall['cold'] - wall['cached']:+.2f} s, CPU {cpu['cold'] - cpu['cached']:+.2f} s")


if __name__ == "__main__":
    main()
