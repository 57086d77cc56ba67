"""How often ``rpcwatch export-parquet`` exits with anything but 0, over many runs.

An abort at interpreter exit (SIGABRT, "terminate called without an active exception")
came from a Python callable handed to Arrow's writer threads; it happened in a few runs
per thousand, more on a busy machine, so only a long loop shows it. Each run is a fresh
process writing a corpus capture's rows to a new directory; its exit status and standard
error are recorded.

``--baseline-src DIR`` runs another version (its ``src`` directory, e.g. from
``git archive REV src``) in alternation with this one, so both see the same machine load.

    python bench/bench_exit.py [--runs 300] [--capture PATH] [--baseline-src DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CAPTURE = REPO.parent / "shared" / "corpus" / "zeek-zeek/testing/btest/Traces/dce-rpc/mapi.pcap"
ABORT_MESSAGE = "terminate called"


def run_once(capture: Path, out: Path, src: Path) -> str:
    """One export in a fresh process: ``0``, ``abort`` or ``exit N``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    result = subprocess.run([sys.executable, "-m", "rpcwatch", "export-parquet", str(capture), "-o", str(out)],
                            capture_output=True, text=True, env=env)
    shutil.rmtree(out, ignore_errors=True)
    if ABORT_MESSAGE in result.stderr or result.returncode in (134, -6):
        return "abort"
    return "0" if result.returncode == 0 else f"exit {result.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    parser.add_argument("--baseline-src", type=Path, help="the src directory of a version to compare with")
    args = parser.parse_args()

    versions = {"this version": REPO / "src"}
    if args.baseline_src:
        versions["baseline"] = args.baseline_src.resolve()
    outcomes: dict[str, Counter] = {name: Counter() for name in versions}
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(args.runs):
            for name, src in versions.items():
                outcomes[name][run_once(args.capture, Path(scratch) / f"out{attempt}", src)] += 1
    print(f"capture: {args.capture.name}; {args.runs} runs per version, alternating; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"{'':14} {'runs':>6} {'exit 0':>7} {'aborts':>7}  other")
    for name, counts in outcomes.items():
        other = {k: v for k, v in counts.items() if k not in ("0", "abort")}
        print(f"{name:14} {sum(counts.values()):6} {counts['0']:7} {counts['abort']:7}  {other or '-'}")


if __name__ == "__main__":
    main()
